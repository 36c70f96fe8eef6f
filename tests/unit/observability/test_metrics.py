"""Metrics appear on /metrics and move as a run progresses: requests and outcomes, cache,
LLM calls by provider and error class, retries, parks and recoveries, decisions by attempt,
per-stage latency histograms and consumer lag."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from qaloop.dataset import load_sample
from qaloop.observability.metrics import FastHistogram, Metrics
from qaloop.pipeline import EmbeddedPipeline
from qaloop.settings import Settings
from tests.unit.observability.conftest import Samples, scrape, value

N = 120


async def _ask_all(client: httpx.AsyncClient, n: int) -> list[str]:
    ids = []
    for qa in load_sample(limit=n):
        r = await client.post(
            "/v1/questions", json={"question": qa.question, "reference_answer": qa.reference_answer}
        )
        assert r.status_code == 202
        ids.append(r.json()["id"])
    return ids


def _histogram_count(samples: Samples, name: str, **labels: str) -> float:
    return value(samples, f"{name}_count", **labels)


async def test_metrics_move_as_questions_flow(
    client: httpx.AsyncClient, pipeline: EmbeddedPipeline
) -> None:
    before = await scrape(client)
    assert value(before, "qaloop_gateway_questions_total") == 0
    assert value(before, "qaloop_llm_calls_total") == 0
    assert value(before, "qaloop_cache_capacity") == pipeline.settings.cache_size

    await _ask_all(client, N)
    assert await pipeline.drain(60)
    # The same questions again: answered from storage (then cached), then from the cache.
    for qa in load_sample(limit=N)[:40]:
        await client.post("/v1/questions", json={"question": qa.question})
        await client.post("/v1/questions", json={"question": qa.question})
    bad = await client.post("/v1/questions", json={"question": 3})
    assert bad.status_code == 422
    after = await scrape(client)

    # requests and outcomes
    assert value(after, "qaloop_gateway_questions_total", outcome="accepted") == N
    answered = sum(
        value(after, "qaloop_gateway_questions_total", outcome=o)
        for o in ("cache", "storage", "failed")
    )
    assert answered == 80
    assert value(after, "qaloop_gateway_rejected_total", code="invalid_field") == 1
    # every request is timed, the refused one too (issue 14: errors were invisible)
    assert _histogram_count(after, "qaloop_gateway_request_seconds") == N + 80 + 1
    # cache: the second ask of each question hit it
    assert value(after, "qaloop_cache_hits_total") >= 40
    assert value(after, "qaloop_cache_misses_total") >= N
    assert value(after, "qaloop_cache_entries") >= 1

    # LLM calls by provider and outcome; errors by class; retries, parks, recoveries
    ok = value(after, "qaloop_llm_calls_total", provider="simulated", outcome="ok")
    assert ok >= N * 0.9
    assert value(after, "qaloop_llm_calls_total", outcome="overload") > 0
    assert value(after, "qaloop_llm_calls_total", outcome="quota_minute") > 0
    w = pipeline.worker.stats
    assert value(after, "qaloop_llm_calls_total") == w.llm_calls
    assert (
        value(after, "qaloop_llm_retries_total", error_class="overload")
        == (w.retried_now["overload"])
    )
    parked = value(after, "qaloop_llm_parked_total")
    assert parked == sum(w.parked.values()) > 0
    assert value(after, "qaloop_retrier_resumed_total") == parked
    assert value(after, "qaloop_llm_recovered_total") == sum(w.recovered.values()) > 0
    assert value(after, "qaloop_parked_questions") == 0  # every park was resumed

    # the quality gate by attempt; the score histogram gives the mean per attempt
    validated_1 = value(after, "qaloop_judge_decisions_total", decision="validate", attempt="1")
    assert validated_1 > 0
    assert value(after, "qaloop_judge_decisions_total", decision="regenerate") > 0
    assert _histogram_count(after, "qaloop_judge_score", attempt="1") > 0
    assert (
        0
        < value(after, "qaloop_judge_score_sum", attempt="1")
        <= value(after, "qaloop_judge_score_count", attempt="1")
    )
    decided = value(after, "qaloop_judge_decisions_total")
    assert decided == sum(pipeline.judge.decisions.values())

    # per-stage latency histograms
    assert _histogram_count(after, "qaloop_queue_wait_seconds", stage="worker") >= N
    assert _histogram_count(after, "qaloop_queue_wait_seconds", stage="judge") >= ok
    assert _histogram_count(after, "qaloop_llm_call_seconds", outcome="ok") == ok
    assert _histogram_count(after, "qaloop_llm_call_seconds", outcome="error") > 0
    assert _histogram_count(after, "qaloop_judge_scoring_seconds") > 0
    assert _histogram_count(after, "qaloop_store_write_seconds") > 0
    finals = _histogram_count(after, "qaloop_time_to_answer_seconds")
    assert finals == N  # one final state per question
    assert value(after, "qaloop_store_dead_letters_total") > 0  # permanent errors

    # consumer lag per group and partition: present, and drained
    for group in ("worker", "judge", "store", "retrier"):
        assert any(
            n == "qaloop_consumer_lag" and ("group", group) in ls and ("partition", "0") in ls
            for n, ls in after
        ), group
    assert value(after, "qaloop_consumer_lag") == 0
    assert value(after, "qaloop_stage_consumed_total", stage="worker") >= N


async def test_consumer_lag_grows_while_the_worker_is_paused(
    client: httpx.AsyncClient, pipeline: EmbeddedPipeline
) -> None:
    pipeline.pause_workers()
    await _ask_all(client, 10)
    await asyncio.sleep(0.1)
    paused = await scrape(client)
    assert value(paused, "qaloop_consumer_lag", group="worker") == 10
    assert value(paused, "qaloop_questions_in_flight") == 10
    pipeline.resume_workers()
    assert await pipeline.drain(30)
    drained = await scrape(client)
    assert value(drained, "qaloop_consumer_lag", group="worker") == 0
    assert value(drained, "qaloop_questions_in_flight") == 0


async def test_two_pipelines_in_one_process_keep_separate_registries(tmp_path: Path) -> None:
    a = EmbeddedPipeline(Settings(db=f"sqlite:///{tmp_path / 'a.db'}"))
    b = EmbeddedPipeline(Settings(db=f"sqlite:///{tmp_path / 'b.db'}"))
    await a.start()
    await b.start()
    try:
        await a.service.ask("How do plants grow?", "sunlight water soil")
        assert await a.drain(10)
    finally:
        await a.stop()
        await b.stop()
    assert a.metrics.registry is not b.metrics.registry
    assert b'qaloop_gateway_questions_total{outcome="accepted"} 1.0' in a.metrics.exposition()
    assert b'qaloop_gateway_questions_total{outcome="accepted"} 0.0' in b.metrics.exposition()


def test_fast_histogram_buckets_are_cumulative() -> None:
    h = FastHistogram([0.1, 1.0])
    for v in (0.05, 0.1, 0.5, 2.0):
        h.observe(v)
    assert h.cumulative() == [("0.1", 2.0), ("1.0", 3.0), ("+Inf", 4.0)]
    assert h.count == 4
    assert h.sum == pytest.approx(2.65)


def test_no_created_series_and_help_on_every_family() -> None:
    text = Metrics().exposition().decode()
    assert "_created" not in text
    names = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    helps = {line.split()[2] for line in text.splitlines() if line.startswith("# HELP")}
    assert names == helps
    assert {"qaloop_llm_calls_total", "qaloop_judge_decisions_total"} <= names
