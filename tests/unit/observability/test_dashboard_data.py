"""The dashboard's page, static files and data: real numbers, the same as /metrics says."""

from __future__ import annotations

import asyncio

import httpx

from qaloop.dataset import load_sample
from qaloop.observability.dashboard import DashboardSampler
from qaloop.observability.metrics import Metrics
from qaloop.pipeline import EmbeddedPipeline
from tests.unit.observability.conftest import scrape, value


async def test_dashboard_data_reports_the_run(
    client: httpx.AsyncClient, pipeline: EmbeddedPipeline
) -> None:
    empty = (await client.get("/v1/dashboard-data")).json()
    assert empty["mode"] == "embedded"
    assert empty["totals"]["asked"] == 0
    for qa in load_sample(limit=100):
        await client.post(
            "/v1/questions", json={"question": qa.question, "reference_answer": qa.reference_answer}
        )
    assert await pipeline.drain(60)
    for qa in load_sample(limit=30):
        await client.post("/v1/questions", json={"question": qa.question})
        await client.post("/v1/questions", json={"question": qa.question})
    await asyncio.sleep(2.05)  # the next request takes a fresh sample (storage: every 2 s)
    data = (await client.get("/v1/dashboard-data")).json()
    metrics = await scrape(client)

    totals = data["totals"]
    assert totals["asked"] == 160
    assert totals["outcomes"]["accepted"] == 100
    assert totals["llm_calls"] == value(metrics, "qaloop_llm_calls_total")
    assert totals["validated"] == value(
        metrics, "qaloop_judge_decisions_total", decision="validate"
    )
    assert totals["validated"] + totals["gave_up"] == 100
    assert data["flow"]["validated"] == totals["validated"]
    assert data["flow"]["in_flight"] == 0
    assert data["lag"] == {"judge": 0, "retrier": 0, "store": 0, "worker": 0}

    first = data["per_attempt"][0]
    assert first["attempt"] == 1
    assert first["decided"] >= 90
    assert 0 < first["pass_rate"] <= 1
    assert 0 < first["mean_score"] < 1
    assert first["validated"] + first["regenerated"] + first["gave_up"] == first["decided"]

    assert data["errors"]["overload"] > 0 and data["errors"]["quota_minute"] > 0
    cache = data["cache"]
    assert cache["hits"] >= 30
    assert cache["hit_rate"] == round(cache["hits"] / (cache["hits"] + cache["misses"]), 4)
    assert sum(data["storage"].values()) == 100

    series = data["series"]
    assert len(series["t"]) >= 1
    assert all(len(series[k]) == len(series["t"]) for k in ("asked", "llm_calls", "validated"))
    assert set(series["lag"]) == {"judge", "retrier", "store", "worker"}
    assert sum(series["asked"]) > 0


async def test_page_and_static_files(client: httpx.AsyncClient) -> None:
    page = await client.get("/dashboard")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "/v1/dashboard-data" in (await client.get("/dashboard/static/dashboard.js")).text
    for name in ("uPlot.iife.min.js", "uPlot.min.css", "dashboard.js"):
        assert f"/dashboard/static/{name}" in page.text
        r = await client.get(f"/dashboard/static/{name}")
        assert r.status_code == 200 and len(r.content) > 500, name
    missing = await client.get("/dashboard/static/nope.js")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"


async def test_sampler_keeps_a_bounded_history_and_rates() -> None:
    now = [1000.0]
    metrics = Metrics()
    counters = {"accepted": 0}

    class Cache:
        capacity = 10
        stats = type("S", (), {"hits": 0, "misses": 0, "evictions": 0, "expirations": 0})()

        def __len__(self) -> int:
            return 0

    metrics.watch_gateway(counters, Cache())
    sampler = DashboardSampler(metrics, clock=lambda: now[0])
    for i in range(700):
        counters["accepted"] = 5 * i
        await sampler.sample()
        now[0] += 1.0
    assert len(sampler.history) == 600
    now[0] -= 1.0  # no new sample: the last one is fresh
    data = await sampler.data()
    assert len(data["series"]["t"]) == 300  # the last five minutes
    assert set(data["series"]["accepted"]) == {5.0}
    assert data["totals"]["outcomes"]["accepted"] == 5 * 699
