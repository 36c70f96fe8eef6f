"""An embedded pipeline with injected LLM errors behind the real HTTP app (no server)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from qaloop.gateway.http import create_app
from qaloop.pipeline import EmbeddedPipeline
from qaloop.settings import Settings

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def error_settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "db": f"sqlite:///{tmp_path / 'obs.db'}",
        "sim_overload_rate": 0.15,
        "sim_quota_rate": 0.10,
        "sim_quota_retry_after_s": 0.05,
        "sim_permanent_rate": 0.02,
        "sim_latency_ms": 2,
        "backoff_base_s": 0.001,
        "backoff_cap_s": 0.05,
        "overload_tries": 2,
        "max_parks": 8,
        "metrics_cache_s": 0,  # these tests scrape right after each step
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
async def pipeline(tmp_path: Path) -> AsyncIterator[EmbeddedPipeline]:
    p = EmbeddedPipeline(error_settings(tmp_path))
    await p.start()
    yield p
    await p.stop()


@pytest.fixture
async def client(pipeline: EmbeddedPipeline) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(pipeline.service, pipeline.settings, stats=pipeline.stats)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
        yield c


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (0 when none)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


async def scrape(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)
