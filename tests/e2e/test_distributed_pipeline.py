"""Distributed mode end to end: gateway, workers, judge, store and retrier as separate OS
processes over the real Kafka broker and PostgreSQL (QALOOP_KAFKA_BOOTSTRAP, QALOOP_PG_DSN).

Questions go in over HTTP with injected 503s, 429s and 400s; mid-stream the worker, the judge
and the store are SIGKILLed (one at a time) and restarted; poison is written straight into
every topic. Every accepted question must end validated or failed, stored once, with its whole
history; the poison is dead-lettered with a reason and the pipeline carries on."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.e2e.distributed_stack import (
    Stack,
    Traffic,
    check_invariants,
    pg_schema,
    questions,
    require_servers,
    sql,
    wait_final,
)

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]

FAULTY_LLM = {
    "sim_latency_ms": 5,
    "sim_overload_rate": 0.10,
    "sim_quota_rate": 0.08,
    "sim_quota_retry_after_s": 0.3,
    "sim_permanent_rate": 0.01,
    "backoff_base_s": 0.01,
    "backoff_cap_s": 0.1,
    "overload_tries": 2,
    "max_parks": 8,
    "stale_after_s": 3,
}


def seed_stuck_questions(db: str, n: int) -> set[str]:
    """Questions stored as accepted but never published (a gateway that died in between)."""
    from qaloop.core.ids import question_id
    from qaloop.core.model import Envelope, EventKind
    from qaloop.storage.factory import open_repository

    repo = open_repository(db)
    ids = set()
    try:
        for i in range(n):
            text = f"stuck question {i} {uuid.uuid4().hex}"
            now = time.time() - 10
            envelope = Envelope(
                question_id=question_id(text),
                question=text,
                reference_answer="an answer that was never asked for",
                trace_id="seed",
                first_seen=now,
            ).with_event(EventKind.ACCEPTED, now)
            inserted, _ = repo.accept(envelope)
            assert inserted
            ids.add(envelope.question_id)
    finally:
        repo.close()
    return ids


def write_poison(bootstrap: str, prefix: str) -> list[str]:
    from confluent_kafka import Producer

    from qaloop.bus.base import Topics

    topics = Topics.with_prefix(prefix)
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    targets = [topics.questions, topics.generated, topics.validated, topics.delayed]
    for topic in [*targets, topics.dead_letter]:
        producer.produce(topic, key=b"poison", value=b"\xff not json at all")
        producer.produce(topic, key=b"poison", value=b'{"schema_version": 99, "question_id": "x"}')
    assert producer.flush(30) == 0
    return targets


def wait_dead_letters(dsn: str, sources: list[str], timeout_s: float) -> dict[str, list[str]]:
    """Dead-letter reasons by source topic, once each source has its two poison letters (or at
    timeout: the assertions that follow then say what is missing)."""
    deadline = time.monotonic() + timeout_s
    while True:
        by_source: dict[str, list[str]] = {}
        for source, reason in sql(dsn, "SELECT source_topic, reason FROM dead_letters"):
            by_source.setdefault(source, []).append(reason)
        poison_letters = [
            [r for r in by_source.get(s, []) if "permanent" not in r] for s in sources
        ]
        if all(len(letters) >= 2 for letters in poison_letters) or time.monotonic() > deadline:
            return by_source
        time.sleep(0.2)


async def faults(stack: Stack, traffic: Traffic, dsn: str) -> list[str]:
    """SIGKILL the worker, the judge and the store, one at a time, while traffic flows."""
    done = []
    for name, after in (("worker-1", 60), ("judge", 160), ("store", 260)):
        while traffic.sent < after:
            await asyncio.sleep(0.05)
        await asyncio.to_thread(stack.kill, name, signal.SIGKILL)
        await asyncio.sleep(1.0)
        stack.restart(name)
        done.append(name)
    return done


def test_http_to_postgres_through_kills_and_poison(tmp_path: Path) -> None:
    bootstrap, pg = require_servers()
    with pg_schema(pg) as (_, db):
        stuck = seed_stuck_questions(db, 5)
        stack = Stack.create(tmp_path, bootstrap, db, **FAULTY_LLM)
        try:
            stack.start_all(workers=2)
            traffic = Traffic(stack.url)

            async def run() -> list[str]:
                sending = asyncio.create_task(traffic.send(questions(400, "run1"), 50))
                killed = await faults(stack, traffic, db)
                await sending
                return killed

            killed = asyncio.run(run())
            assert killed == ["worker-1", "judge", "store"]
            poisoned = write_poison(bootstrap, stack.prefix)
            after = Traffic(stack.url)  # the pipeline carries on after the poison
            asyncio.run(after.send(questions(40, "run2"), 100))
            accepted = traffic.accepted | after.accepted
            assert len(accepted) == 440, (traffic.other, after.other)

            wait_final(db, len(accepted) + len(stuck), 150, stack)
            stack.assert_alive()
            counts = check_invariants(db, accepted | stuck)
            assert counts.get("validated", 0) + counts.get("failed", 0) == 445
            assert counts["validated"] > 300

            # The injected LLM errors went through every retry path.
            kinds = dict(sql(db, "SELECT kind, count(*) FROM events GROUP BY kind"))
            assert kinds.get("parked", 0) > 0 and kinds.get("resumed", 0) > 0, kinds
            classes = dict(
                sql(
                    db,
                    "SELECT error_class, count(*) FROM events WHERE kind = 'llm_error' "
                    "GROUP BY error_class",
                )
            )
            assert {"overload", "quota_minute", "permanent"} <= set(classes), classes

            # Poison in every topic: dead-lettered with the reason, by source topic. The letters
            # reach PostgreSQL a hop later than the questions (stage -> dead-letter topic ->
            # store), and a consumer-group rebalance can delay that hop: wait for them.
            by_source = wait_dead_letters(db, [*poisoned, f"{stack.prefix}.dead-letter"], 60)
            for topic in poisoned:
                reasons = by_source.get(topic, [])
                assert any("JSON" in r or "UTF-8" in r for r in reasons), (topic, by_source)
                assert any("schema_version" in r for r in reasons), (topic, by_source)
            dlq_reasons = by_source.get(f"{stack.prefix}.dead-letter", [])
            assert sum("undecodable dead letter" in r for r in dlq_reasons) == 2, by_source
            assert any("permanent" in r for r in dlq_reasons)  # the LLM's 400s

            # The stuck questions were found by the retrier's sweep.
            assert "re-published" in stack.log("retrier")

            check_dlq_cli(stack, db)

            assert_graceful_stop(stack)
        finally:
            stack.stop_all()


def assert_graceful_stop(stack: Stack) -> None:
    codes = stack.stop_all()
    # uvicorn re-raises the SIGTERM it handled once the app has shut down: -15 is clean.
    gateway = codes.pop("gateway")
    assert gateway in (0, -signal.SIGTERM) and "gateway: stopped" in stack.log("gateway")
    assert all(code == 0 for code in codes.values()), (str(codes), stack.tails())
    for name in codes:
        assert f"{name.split('-')[0]}: stopped" in stack.log(name), stack.log(name)[-2000:]


def check_dlq_cli(stack: Stack, db: str) -> None:
    env = stack.env
    listed = subprocess.run(
        [sys.executable, "-m", "qaloop", "dlq", "list", "--json", "--limit", "1000"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    questions_topic = f"{stack.prefix}.questions"
    poison = [r for r in rows if r["source_topic"] == questions_topic]
    assert len(poison) == 2 and all(r["reason"] for r in poison)
    before = sql(db, "SELECT count(*) FROM dead_letters")[0][0]
    replayed = subprocess.run(
        [sys.executable, "-m", "qaloop", "dlq", "replay", *(r["key"] for r in poison)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "replayed 2 dead letters" in replayed.stdout, replayed.stdout + replayed.stderr
    # Still poison: dead-lettered again (new records), the originals marked replayed.
    deadline = time.monotonic() + 30
    while sql(db, "SELECT count(*) FROM dead_letters")[0][0] < before + 2:
        assert time.monotonic() < deadline, stack.tails()
        time.sleep(0.2)
    marked = sql(db, "SELECT count(*) FROM dead_letters WHERE replayed")
    assert marked[0][0] == 2
