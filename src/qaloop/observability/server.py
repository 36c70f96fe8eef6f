"""The metrics port of a distributed consumer service (`--metrics-port`): prometheus_client's
own HTTP server, in a thread, serving the process's registry at any path (`/metrics`)."""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import start_http_server

from qaloop.observability.metrics import Metrics

log = logging.getLogger(__name__)


async def serve_metrics(metrics: Metrics, host: str, port: int, stop: asyncio.Event) -> None:
    """Serve until `stop`; a port already taken raises OSError (the stage exits, loudly)."""
    server, thread = start_http_server(port, addr=host, registry=metrics.registry)
    log.info("metrics on http://%s:%d/metrics", host, server.server_port)
    try:
        await stop.wait()
    finally:
        server.shutdown()
        server.server_close()
        await asyncio.to_thread(thread.join, 5.0)
