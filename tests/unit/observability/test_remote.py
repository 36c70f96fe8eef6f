"""Distributed mode: the gateway's dashboard adds the services' metrics ports to its own."""

from __future__ import annotations

import asyncio
import socket

import pytest

from qaloop.observability.dashboard import DashboardSampler
from qaloop.observability.lag import MemoryLag
from qaloop.observability.metrics import LagSample, Metrics
from qaloop.observability.remote import RemoteMetrics, parse_targets
from qaloop.observability.server import serve_metrics


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_parse_targets() -> None:
    assert parse_targets("") == []
    assert parse_targets("worker:9100, judge:9100,") == [("worker", 9100), ("judge", 9100)]
    assert parse_targets("[::1]:9100") == [("::1", 9100)]
    with pytest.raises(ValueError, match="host:port"):
        parse_targets("worker")


class _Lag:
    def lag_samples(self) -> list[LagSample]:
        return [LagSample("p.worker", "p.questions", 0, 7)]


async def test_dashboard_reads_the_services_metrics_ports() -> None:
    worker, judge = Metrics(), Metrics()
    worker.llm_calls.labels("simulated", "ok").inc(10)
    worker.llm_calls.labels("simulated", "overload").inc(2)
    judge.decisions.labels("validate", "1").inc(6)
    judge.decisions.labels("regenerate", "1").inc(4)
    judge.scores.labels("1").observe(0.5)
    judge.scores.labels("1").observe(0.7)
    judge.watch_lag(_Lag())  # a stage reports its own group: the gateway's probe counts
    gateway = Metrics()
    gateway.watch_lag(_Lag())
    ports = [_free_port(), _free_port()]
    stop = asyncio.Event()
    servers = [
        asyncio.create_task(serve_metrics(m, "127.0.0.1", port, stop))
        for m, port in zip((worker, judge), ports, strict=True)
    ]
    missing = _free_port()  # a target that is down doesn't hide the others
    remote = RemoteMetrics(
        parse_targets(
            f"127.0.0.1:{ports[0]},127.0.0.1:{ports[1]},"
            f"127.0.0.1:{missing},no-such-host.invalid:9100"
        )
    )
    sampler = DashboardSampler(gateway, mode="distributed", remote=remote)
    try:
        for _ in range(50):
            data = await sampler.data()
            if data["metrics_sources"] == 3:
                break
            await asyncio.sleep(0.05)
            sampler.history.clear()
    finally:
        stop.set()
        await asyncio.gather(*servers)
    assert data["metrics_sources"] == 3  # itself and the two ports that answered
    assert data["totals"]["llm_calls"] == 12
    assert data["errors"] == {"overload": 2}
    assert data["per_attempt"] == [
        {
            "attempt": 1,
            "decided": 10,
            "validated": 6,
            "regenerated": 4,
            "gave_up": 0,
            "pass_rate": 0.6,
            "mean_score": 0.6,
        }
    ]
    assert data["lag"] == {"p.worker": 7}  # the gateway's own probe only, not summed twice


def test_memory_lag_has_one_partition_per_topic() -> None:
    from qaloop.bus.memory import MemoryBus

    bus = MemoryBus()
    lag = MemoryLag(bus, {"worker": [bus.topics.questions]})
    assert lag.lag_samples() == [LagSample("worker", bus.topics.questions, 0, 0)]
