"""`qaloop serve`: the gateway with every stage in one process (embedded mode)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import click
from fastapi import FastAPI

from qaloop.cli.common import build_settings, setup_logging
from qaloop.cli.errors import check_port, check_storage
from qaloop.gateway.http import create_app
from qaloop.gateway.server import serve
from qaloop.pipeline import EmbeddedPipeline
from qaloop.settings import Settings


def build_embedded_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await pipeline.start()
        try:
            yield
        finally:
            await pipeline.stop()

    pipeline = EmbeddedPipeline(settings)
    return create_app(pipeline.service, settings, stats=pipeline.stats, lifespan=lifespan)


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
    click.echo(
        f"qaloop gateway on http://{settings.host}:{settings.port} (embedded, db {settings.db})"
    )
    serve(build_embedded_app(settings), settings.host, settings.port)
