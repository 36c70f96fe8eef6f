"""`qaloop serve`: the gateway with every stage in one process (embedded mode).

Before any stage starts: the port is bound and the embedded database locked, so a second
`qaloop serve` (same port or same database) exits at once with a one-line error, having
resumed nothing and made no LLM call. On SIGTERM the pipeline stops in order
(qaloop.lifecycle)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import click
from fastapi import FastAPI

from qaloop.cli.common import build_settings, setup_logging
from qaloop.cli.errors import check_port, check_storage
from qaloop.gateway.guard import AuthSetupError, guard_gateway
from qaloop.gateway.http import create_app, storage_ready
from qaloop.gateway.server import PortInUse, bind_socket, http_limits, serve
from qaloop.pipeline import EmbeddedPipeline
from qaloop.settings import Settings
from qaloop.storage.sqlite import DatabaseLock, DatabaseLocked


def sqlite_path(url: str) -> str | None:
    """The file of an embedded database URL, None for PostgreSQL or :memory:."""
    if url.startswith(("postgresql://", "postgres://")):
        return None
    path = url.removeprefix("sqlite:///").removeprefix("sqlite://")
    return None if path in ("", ":memory:") else path


def build_embedded_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await pipeline.start()
        try:
            yield
        finally:
            await pipeline.stop()

    pipeline = EmbeddedPipeline(settings)
    service = pipeline.service
    auth = guard_gateway(
        service,
        settings,
        backlog=lambda: len(service.in_flight),
        backlog_is_slow=False,
        llm_calls=lambda: pipeline.worker.stats.llm_calls,
        budget=pipeline.worker.budget,  # the worker's own ledger: what it has spent
    )
    storage = storage_ready(service)

    async def ready() -> dict[str, str]:
        parts = await storage()
        dead = [t.get_name() for t in pipeline._tasks if t.done()]
        parts["bus"] = "ok" if pipeline._tasks and not dead else f"stages stopped: {dead}"
        return parts

    return create_app(
        service, settings, stats=pipeline.stats, auth=auth, ready=ready, lifespan=lifespan
    )


@click.command("serve")
@click.option("--host", default=None, help="Bind address [QALOOP_HOST, 127.0.0.1]")
@click.option("--port", type=int, default=None, help="Port [QALOOP_PORT, 8000]")
@click.option("--db", default=None, help="Storage URL [QALOOP_DB, sqlite:///qaloop.db]")
@click.option("--llm", default=None, help="LLM provider [QALOOP_LLM, simulated]")
@click.option("--cache-policy", default=None, help="lru|lfu|fifo [QALOOP_CACHE_POLICY]")
@click.option("--cache-size", type=int, default=None, help="Cache entries [QALOOP_CACHE_SIZE]")
@click.option("--cache-ttl-s", type=float, default=None, help="Cache TTL, 0 = none")
@click.option("--threshold", type=float, default=None, help="Validation threshold")
@click.option("--scorer", default=None, help="Scorer name")
def command(**flags: object) -> None:
    """Run the HTTP gateway with all stages in one process (no servers needed)."""
    settings = build_settings(**flags)
    check_storage(settings.db)
    check_port(settings.host, settings.port)
    setup_logging(settings.log_level, settings.log_json)
    try:
        # Held from here on: between the check and uvicorn's own bind, nobody can take it.
        sock = bind_socket(settings.host, settings.port)
    except PortInUse as exc:
        raise click.ClickException(str(exc)) from None
    lock: DatabaseLock | None = None
    path = sqlite_path(settings.db)
    try:
        if path is not None:
            lock = DatabaseLock(path).acquire()
        app = build_embedded_app(settings)
    except (DatabaseLocked, AuthSetupError) as exc:
        sock.close()
        raise click.ClickException(str(exc)) from None
    port = sock.getsockname()[1]
    click.echo(f"qaloop gateway on http://{settings.host}:{port} (embedded, db {settings.db})")
    try:
        serve(
            app,
            settings.host,
            port,
            limits=http_limits(settings),
            shutdown_timeout_s=settings.shutdown_timeout_s,
            sock=sock,
        )
    finally:
        if lock is not None:
            lock.release()
