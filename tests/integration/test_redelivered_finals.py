"""At-least-once on the wire, exactly once in storage (docs/distributed.md, "Delivery").

A judge that published its decisions but whose offsets were never committed (it crashed, or
its group session expired during a broker failover) hands its partitions over uncommitted:
the next member of the group judges the same answers again and publishes a second final
message per question. The lost commit is the input here (a consumer that drops its commits);
what is measured is that the repeats reach the wire and that the store, over real Kafka and
PostgreSQL, still holds one row, one deciding event and a whole history per question."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence

import pytest

from qaloop.bus.base import Consumer, Message
from qaloop.core import codec
from qaloop.core.wire import OutMessage
from qaloop.observability.metrics import Metrics
from qaloop.settings import Settings
from tests.e2e.distributed_stack import check_invariants, pg_schema, require_servers, sql
from tests.integration.flink.harness import Collector, envelope

pytestmark = pytest.mark.integration

N = 24


class CommitsLost:
    """A consumer whose commits never reach the broker (the member died before they did)."""

    def __init__(self, inner: Consumer) -> None:
        self.inner = inner
        self.seen = 0

    async def poll(self, max_records: int, timeout_s: float) -> list[Message]:
        got = await self.inner.poll(max_records, timeout_s)
        self.seen += len(got)
        return got

    async def commit(self, messages: Sequence[Message]) -> None:
        return None

    def pause(self) -> None:
        self.inner.pause()

    def resume(self) -> None:
        self.inner.resume()

    async def close(self) -> None:
        await self.inner.close()


async def _run_until(runner: object, done: object, timeout_s: float) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))  # type: ignore[attr-defined]
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline:  # type: ignore[operator]
        assert not task.done(), task.exception()
        await asyncio.sleep(0.1)
    stop.set()
    await task
    assert done(), "timed out"  # type: ignore[operator]


async def test_a_redelivered_batch_repeats_finals_on_the_wire_and_the_store_keeps_one() -> None:
    from qaloop import wiring
    from qaloop.bus.kafka import KafkaBus
    from qaloop.storage.factory import open_repository

    bootstrap, pg = require_servers()
    with pg_schema(pg) as (_, db):
        settings = Settings(
            bus="kafka",
            kafka_bootstrap=bootstrap,
            topic_prefix=f"redeliver{uuid.uuid4().hex[:10]}",
            kafka_session_timeout_ms=6000,
            db=db,
        )
        w = wiring.Wiring(settings, shared_bus=True)
        bus = KafkaBus(wiring.kafka_settings(settings), w.topics)
        await bus.start()
        collector = Collector(bootstrap, [w.topics.validated, w.topics.dead_letter])
        repo = open_repository(db)
        try:
            collector.start()
            # good answers are validated; bad ones on their last attempt give up: both final
            answers = [
                envelope(uuid.uuid4().hex, 1, True)
                if i % 3
                else envelope(uuid.uuid4().hex, settings.max_attempts, False)
                for i in range(N)
            ]
            await bus.publish_many(
                [OutMessage(w.topics.generated, e.question_id, codec.encode(e)) for e in answers]
            )
            ids = {e.question_id for e in answers}

            # judge 1 decides every answer, publishes, and its commits are lost
            first = w.judge(bus, Metrics())
            lost = CommitsLost(first.runner.consumer)
            first.runner.consumer = lost
            await _run_until(first.runner, lambda: lost.seen >= N, 90)
            # judge 2, the next member of the same group, gets the same answers again
            second = w.judge(bus, Metrics())
            await _run_until(second.runner, lambda: second.runner.stats.consumed >= N, 90)
            # the store reads both judges' outputs
            store = w.store(bus, repo, Metrics())

            def stored() -> bool:
                final = "SELECT count(*) FROM questions WHERE state IN ('validated', 'failed')"
                return bool(sql(db, final)[0][0] >= N)

            await _run_until(store.runner, stored, 90)
        finally:
            await bus.close()
            await asyncio.to_thread(repo.close)

        records = collector.wait_for(lambda rs: len(rs) >= 2 * N, 30, "both judges' finals")
        collector.stop()
        finals = [r for r in records if r.key in ids]
        by_key: dict[str, set[tuple[str, str]]] = {}
        for r in finals:
            assert r.key is not None
            by_key.setdefault(r.key, set()).add((r.topic, r.envelope().state.value))
        # on the wire: every question finalised twice, both times with the same decision
        assert len(finals) == 2 * N and set(by_key) == ids
        assert all(len(decisions) == 1 for decisions in by_key.values()), by_key
        # in storage: once
        counts = check_invariants(db, ids)
        assert sum(counts.values()) == N
        deciding = sql(
            db,
            "SELECT question_id, count(*) FROM events WHERE kind = 'gave_up' "
            "OR (kind = 'scored' AND decision = 'validate') GROUP BY 1",
        )
        assert {q for q, _ in deciding} <= ids and {n for _, n in deciding} == {1}
        states = dict(sql(db, "SELECT question_id, state FROM questions"))
        for qid, decisions in by_key.items():
            ((topic, state),) = decisions
            assert states[qid] == state, (qid, topic, states[qid])
