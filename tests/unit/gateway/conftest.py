"""Fixtures shared by the gateway's in-process tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from qaloop.pipeline import EmbeddedPipeline
from qaloop.settings import Settings


@pytest.fixture
async def failing(tmp_path: Path) -> AsyncIterator[EmbeddedPipeline]:
    """Every question fails: one attempt, and no answer reaches a threshold of 1 (each gives
    up with a dead letter)."""
    p = EmbeddedPipeline(
        Settings(
            db=f"sqlite:///{tmp_path / 'f.db'}",
            sim_latency_ms=1,
            max_wait_s=5,
            threshold=1.0,
            max_attempts=1,
        )
    )
    await p.start()
    yield p
    await p.stop()


@contextlib.asynccontextmanager
async def asgi_client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client that calls `app` in process (a 5xx is an answer, not an exception)."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        yield client
