"""SIGTERM with a slow LLM: the stop is bounded, every answer that came back is kept (no call
paid twice), and what was cut short is handed back and finished after the restart; in
embedded mode (`qaloop serve`) and for a distributed worker stage over Kafka."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from pathlib import Path

import httpx
import pytest

from qaloop.storage.sqlite import SQLiteRepository
from tests.e2e.embedded_server import serve

pytestmark = [pytest.mark.e2e]


def _ask(port: int, n: int, tag: str) -> list[str]:
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        ids = []
        for i in range(n):
            # With a reference and no unsure band the cheap gate decides (no LLM judge call).
            r = client.post(
                "/v1/questions",
                json={"question": f"{tag} question {i}?", "reference_answer": "a reference"},
            )
            assert r.status_code == 202
            ids.append(r.json()["id"])
    return ids


def _generated(db: Path, attempt: int = 1) -> dict[str, int]:
    """Answers stored per question for one attempt (each is one paid LLM call). Later
    attempts are the gate's regenerations: new calls whatever the stop did."""
    repo = SQLiteRepository(str(db))
    try:
        calls: dict[str, int] = {}
        for e in repo.export_events():
            if e["kind"] == "generated" and e["attempt"] == attempt:
                calls[e["question_id"]] = calls.get(e["question_id"], 0) + 1
        return calls
    finally:
        repo.close()


def _wait_final(port: int, ids: list[str]) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        for q in ids:
            status = client.get(f"/v1/questions/{q}", params={"wait": 20}).json()["status"]
            assert status in ("validated", "failed"), status


@pytest.mark.slow
def test_sigterm_keeps_every_answer_that_came_back(tmp_path: Path) -> None:
    """LLM 3 s, bound 10 s: the stop waits for the calls, the judge and store keep them."""
    db = tmp_path / "stop.db"
    env = {
        "QALOOP_SIM_LATENCY_MS": "3000",
        "QALOOP_SHUTDOWN_TIMEOUT_S": "10",
        "QALOOP_THRESHOLD": "0",
        "QALOOP_JUDGE_UNSURE_BAND": "0",
    }
    gateway = serve(db, **env)
    port = gateway.port
    ids = _ask(port, 20, "kept")
    time.sleep(0.5)  # every call in flight
    started = time.monotonic()
    # uvicorn re-raises the signal once it has shut down gracefully: -SIGTERM
    assert gateway.stop(timeout_s=40) in (0, -signal.SIGTERM)
    took = time.monotonic() - started
    assert took < 10 + 5, took
    repo = SQLiteRepository(str(db))
    records = [repo.get(q) for q in ids]
    repo.close()
    # Each call came back during the stop and was judged and stored: none is left at its
    # first attempt unpaid (before: queued with llm_calls 0, and paid again after restart).
    assert all(
        r is not None and r.llm_calls >= 1 and (r.state.value != "queued" or r.attempt > 1)
        for r in records
    ), [(r.state.value, r.attempt, r.llm_calls) for r in records if r is not None]
    assert _generated(db) == {q: 1 for q in ids}
    # The restart finishes what the gate sent back, and pays no first attempt twice.
    gateway = serve(
        db,
        port,
        QALOOP_SIM_LATENCY_MS="1",
        **{k: v for k, v in env.items() if k != "QALOOP_SIM_LATENCY_MS"},
    )
    try:
        _wait_final(port, ids)
    finally:
        gateway.stop()
    assert _generated(db) == {q: 1 for q in ids}


@pytest.mark.slow
def test_sigterm_hands_back_calls_slower_than_the_bound(tmp_path: Path) -> None:
    """LLM 30 s, bound 2 s: the stop takes ~2 s, not 30; the questions stay queued and the
    restart finishes them."""
    db = tmp_path / "cut.db"
    gateway = serve(db, QALOOP_SIM_LATENCY_MS="30000", QALOOP_SHUTDOWN_TIMEOUT_S="2")
    port = gateway.port
    ids = _ask(port, 10, "cut")
    time.sleep(0.5)
    started = time.monotonic()
    assert gateway.stop() in (0, -signal.SIGTERM)
    assert time.monotonic() - started < 2 * 2 + 5
    repo = SQLiteRepository(str(db))
    assert all(repo.get(q).state.value == "queued" for q in ids)  # type: ignore[union-attr]
    repo.close()
    assert _generated(db) == {}
    gateway = serve(
        db, port, QALOOP_SIM_LATENCY_MS="1", QALOOP_THRESHOLD="0", QALOOP_JUDGE_UNSURE_BAND="0"
    )
    try:
        _wait_final(port, ids)
    finally:
        gateway.stop()
    assert _generated(db) == {q: 1 for q in ids}


@pytest.mark.integration
async def test_a_distributed_worker_stop_is_bounded_and_keeps_finished_answers(
    tmp_path: Path,
) -> None:
    """A worker stage over Kafka with a 2 s LLM: SIGTERM-like stop after the calls started.
    With a bound of 10 s every answer is published and committed (none redelivered); with a
    bound of 1 s and a 30 s LLM the stop is quick and every question is redelivered."""
    bootstrap = os.environ.get("QALOOP_KAFKA_BOOTSTRAP")
    if not bootstrap:
        pytest.skip('no Kafka: run `scripts/infra up` and eval "$(scripts/infra env)"')
    from qaloop.bus.kafka import KafkaBus, KafkaSettings
    from qaloop.core.model import Envelope, EventKind
    from qaloop.core.wire import out
    from qaloop.distributed import run_worker
    from qaloop.settings import Settings
    from qaloop.wiring import topics_for

    async def one_run(latency_ms: int, bound_s: float, n: int) -> tuple[float, int, int]:
        prefix = f"t{uuid.uuid4().hex[:10]}"
        settings = Settings(
            bus="kafka",
            kafka_bootstrap=bootstrap,
            topic_prefix=prefix,
            kafka_partitions=1,
            sim_latency_ms=latency_ms,
            shutdown_timeout_s=bound_s,
        )
        topics = topics_for(settings)
        bus = KafkaBus(KafkaSettings(bootstrap, partitions=1), topics)
        await bus.start()
        now = time.time()
        envelopes = [
            Envelope(
                question_id=uuid.uuid4().hex,
                question=f"q{i}?",
                reference_answer=None,
                trace_id=uuid.uuid4().hex,
                first_seen=now,
            ).with_event(EventKind.ACCEPTED, now)
            for i in range(n)
        ]
        await bus.publish_many([out(topics.questions, e) for e in envelopes])
        stop = asyncio.Event()
        task = asyncio.create_task(run_worker(settings, stop))
        generated = bus.consumer(f"{prefix}.probe", [topics.generated])
        await asyncio.sleep(6.0)  # joined the group, calls in flight
        started = time.monotonic()
        stop.set()
        await asyncio.wait_for(task, 60)
        took = time.monotonic() - started
        got = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(got) < n:
            got += await generated.poll(100, 0.5)
        await generated.close()
        lag = await asyncio.to_thread(bus.lag, f"{prefix}.worker", [topics.questions])
        await bus.close()
        return took, len(got), sum(lag.values())

    took, answers, uncommitted = await one_run(2000, 10.0, 8)
    assert answers == 8 and uncommitted == 0, (took, answers, uncommitted)
    took, answers, uncommitted = await one_run(30000, 1.0, 8)
    assert took < 1.0 + 5 and answers == 0 and uncommitted == 8, (took, answers, uncommitted)
