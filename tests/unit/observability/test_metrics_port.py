"""A distributed consumer's metrics port serves its registry and stops with the stage."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest

from qaloop.observability.metrics import Metrics
from qaloop.observability.server import serve_metrics


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_metrics_port_serves_then_stops() -> None:
    metrics = Metrics()
    metrics.llm_calls.labels("simulated", "ok").inc(3)
    port = _free_port()
    stop = asyncio.Event()
    task = asyncio.create_task(serve_metrics(metrics, "127.0.0.1", port, stop))
    try:
        async with httpx.AsyncClient() as client:
            for _ in range(50):
                try:
                    r = await client.get(f"http://127.0.0.1:{port}/metrics")
                    break
                except httpx.ConnectError:
                    await asyncio.sleep(0.05)
            assert r.status_code == 200
            assert 'qaloop_llm_calls_total{outcome="ok",provider="simulated"} 3.0' in r.text
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1)


async def test_a_taken_port_fails_loudly() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError):
            await serve_metrics(Metrics(), "127.0.0.1", port, asyncio.Event())
