"""The bus contract (qaloop.bus.base): the same tests run against the in-process bus and Kafka.

Kafka runs when QALOOP_KAFKA_BOOTSTRAP is set (`eval "$(scripts/infra env)"`; CI sets it);
every test uses its own topic prefix and consumer groups, so runs never see each other.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest

from qaloop.bus.base import Bus, Consumer, Message, OutMessage, Topics
from qaloop.bus.memory import MemoryBus

BOOTSTRAP = os.environ.get("QALOOP_KAFKA_BOOTSTRAP")


@dataclass
class Harness:
    bus: Bus
    kind: str
    # Kafka needs a moment to join a group and fetch; the in-process bus answers at once.
    settle_s: float

    def group(self, name: str) -> str:
        return f"{self.bus.topics.questions}.{name}"


def _kafka_bus(topics: Topics) -> Bus:
    if not BOOTSTRAP:
        pytest.skip('QALOOP_KAFKA_BOOTSTRAP is not set: run `eval "$(scripts/infra env)"`')
    pytest.importorskip("confluent_kafka", reason="the kafka extra is not installed")
    from qaloop.bus.kafka import KafkaBus, KafkaSettings

    return KafkaBus(KafkaSettings(BOOTSTRAP, partitions=6, session_timeout_ms=6000), topics)


@pytest.fixture(params=["memory", pytest.param("kafka", marks=pytest.mark.integration)])
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    topics = Topics.with_prefix(f"t{uuid.uuid4().hex[:12]}")
    if request.param == "memory":
        bus: Bus = MemoryBus(topics)
        settle = 0.05
    else:
        bus = _kafka_bus(topics)
        settle = 1.5
    await bus.start()
    try:
        yield Harness(bus, request.param, settle)
    finally:
        await bus.close()


async def collect(
    consumer: Consumer,
    count: int,
    timeout_s: float = 20.0,
    *,
    commit: Callable[[Message], bool] | None = None,
) -> list[Message]:
    """Poll until `count` messages arrived (or timeout); commit those `commit` selects."""
    got: list[Message] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < count and time.monotonic() < deadline:
        batch = await consumer.poll(count - len(got), 0.2)
        got.extend(batch)
        if commit is not None:
            chosen = [m for m in batch if commit(m)]
            if chosen:
                await consumer.commit(chosen)
    return got


async def quiet(consumer: Consumer, seconds: float) -> list[Message]:
    """Whatever arrives within `seconds` (expected: nothing)."""
    got: list[Message] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got.extend(await consumer.poll(100, 0.1))
    return got


def msgs(topic: str, key: str, n: int, start: int = 0) -> list[OutMessage]:
    return [OutMessage(topic, key, f"{key}:{i}".encode()) for i in range(start, start + n)]


async def test_publish_consume_roundtrip(harness: Harness) -> None:
    t = harness.bus.topics
    sent = [
        OutMessage(t.questions, "q1", b'{"a": 1}', {"qaloop-id": "q1", "qaloop-attempt": "1"}),
        OutMessage(t.questions, "q2", b"\x00\xffbinary", {}),
        OutMessage(t.generated, "q1", "é ünïcode ✓".encode(), {"qaloop-trace-id": "abc"}),
    ]
    await harness.bus.publish_many(sent)
    consumer = harness.bus.consumer(harness.group("rt"), [t.questions, t.generated])
    try:
        got = await collect(consumer, 3)
    finally:
        await consumer.close()
    assert len(got) == 3
    by_value = {m.value: m for m in got}
    for out in sent:
        m = by_value[out.value]
        assert (m.topic, m.key, m.headers) == (out.topic, out.key, out.headers)
        assert m.offset >= 0 and m.partition >= 0
        assert m.timestamp > time.time() - 120


async def test_publish_many_of_nothing_is_a_no_op(harness: Harness) -> None:
    await harness.bus.publish_many([])


async def test_same_key_keeps_its_order(harness: Harness) -> None:
    t = harness.bus.topics
    keys = [f"key-{k}" for k in range(12)]
    for round_no in range(5):  # several calls, interleaved keys
        await harness.bus.publish_many(
            [m for k in keys for m in msgs(t.questions, k, 20, start=round_no * 20)]
        )
    consumer = harness.bus.consumer(harness.group("order"), [t.questions])
    try:
        got = await collect(consumer, len(keys) * 100)
    finally:
        await consumer.close()
    assert len(got) == len(keys) * 100
    for k in keys:
        seq = [int(m.value.split(b":")[1]) for m in got if m.key == k and m.value is not None]
        assert seq == list(range(100)), k
    if harness.kind == "kafka":  # the keys really spread over partitions
        assert len({m.partition for m in got}) > 1


async def test_uncommitted_messages_come_back_to_a_new_consumer(harness: Harness) -> None:
    t = harness.bus.topics
    await harness.bus.publish_many(msgs(t.questions, "one-key", 10))
    group = harness.group("alo")
    first = harness.bus.consumer(group, [t.questions])
    got = await collect(first, 10)
    assert len(got) == 10
    await first.commit(got[:4])
    await first.close()  # "dies" with 6 messages handled but not committed

    second = harness.bus.consumer(group, [t.questions])
    try:
        again = await collect(second, 6)
        assert [m.value for m in again] == [m.value for m in got[4:]]
        assert await quiet(second, harness.settle_s) == []  # the committed 4 never come back
    finally:
        await second.close()


async def test_commit_advances_over_the_contiguous_done_prefix_only(harness: Harness) -> None:
    t = harness.bus.topics
    await harness.bus.publish_many(msgs(t.questions, "one-key", 10))
    group = harness.group("prefix")
    first = harness.bus.consumer(group, [t.questions])
    got = await collect(first, 10)
    assert len(got) == 10
    # Done out of order: 0, 1, 2 and 5, 6, 7 -- but 3 and 4 are still in flight.
    await first.commit([got[i] for i in (5, 6, 2, 0, 7, 1)])
    await first.close()

    second = harness.bus.consumer(group, [t.questions])
    try:
        again = await collect(second, 7)
        assert [m.value for m in again] == [m.value for m in got[3:]]
        await second.commit(again)
    finally:
        await second.close()

    third = harness.bus.consumer(group, [t.questions])
    try:
        assert await quiet(third, harness.settle_s + 1.0) == []  # everything is committed
    finally:
        await third.close()


async def test_pause_stops_delivery_and_resume_restarts_it(harness: Harness) -> None:
    t = harness.bus.topics
    consumer = harness.bus.consumer(harness.group("pause"), [t.delayed])
    try:
        await harness.bus.publish_many(msgs(t.delayed, "k", 1))
        first = await collect(consumer, 1)  # joined, assigned, fetching
        assert len(first) == 1
        await consumer.commit(first)
        consumer.pause()
        await harness.bus.publish_many(msgs(t.delayed, "k", 5, start=1))
        assert await quiet(consumer, harness.settle_s + 0.5) == []  # polled, nothing delivered
        consumer.resume()
        rest = await collect(consumer, 5)
        assert [m.value for m in rest] == [f"k:{i}".encode() for i in range(1, 6)]
    finally:
        await consumer.close()


async def test_every_group_sees_every_message(harness: Harness) -> None:
    t = harness.bus.topics
    sent = [m for k in range(20) for m in msgs(t.validated, f"q{k}", 3)]
    await harness.bus.publish_many(sent)
    a = harness.bus.consumer(harness.group("a"), [t.validated])
    b = harness.bus.consumer(harness.group("b"), [t.validated])
    try:
        got_a, got_b = await asyncio.gather(collect(a, len(sent)), collect(b, len(sent)))
    finally:
        await asyncio.gather(a.close(), b.close())
    expected = sorted(m.value for m in sent)
    assert sorted(m.value for m in got_a) == expected
    assert sorted(m.value for m in got_b) == expected


async def test_members_of_one_group_together_see_every_message(harness: Harness) -> None:
    t = harness.bus.topics
    sent = [m for k in range(60) for m in msgs(t.generated, f"q{k}", 2)]
    group = harness.group("shared")
    a = harness.bus.consumer(group, [t.generated])
    b = harness.bus.consumer(group, [t.generated])
    try:
        await harness.bus.publish_many(sent)
        seen: set[bytes] = set()
        deadline = time.monotonic() + 30
        while len(seen) < len(sent) and time.monotonic() < deadline:
            for consumer in (a, b):
                batch = await consumer.poll(100, 0.1)
                seen.update(m.value for m in batch if m.value is not None)
                await consumer.commit(batch)
    finally:
        await asyncio.gather(a.close(), b.close())
    assert seen == {m.value for m in sent}  # at least once each (duplicates allowed)


async def test_messages_published_while_consuming_arrive(harness: Harness) -> None:
    t = harness.bus.topics
    consumer = harness.bus.consumer(harness.group("live"), [t.questions])
    try:
        waiting = asyncio.create_task(collect(consumer, 30))
        for i in range(3):
            await asyncio.sleep(0.05)
            await harness.bus.publish_many(msgs(t.questions, f"k{i}", 10))
        got = await waiting
    finally:
        await consumer.close()
    assert len(got) == 30


async def test_pause_before_assignment_holds_for_partitions_assigned_later(
    harness: Harness,
) -> None:
    t = harness.bus.topics
    await harness.bus.publish_many([m for k in range(12) for m in msgs(t.delayed, f"k{k}", 1)])
    consumer = harness.bus.consumer(harness.group("early-pause"), [t.delayed])
    try:
        consumer.pause()  # before the group assigned anything
        assert await quiet(consumer, harness.settle_s + 1.0) == []
        consumer.resume()
        got = await collect(consumer, 12)
        assert len(got) == 12
    finally:
        await consumer.close()


async def test_poll_returns_what_is_there_without_waiting_for_a_full_batch(
    harness: Harness,
) -> None:
    """A poll for many records returns as soon as there is one: a stage under a light load
    must not wait out its poll timeout at every hop (bench/bench_latency.py)."""
    bus = harness.bus
    consumer = bus.consumer(harness.group("eager"), [bus.topics.questions])
    try:
        await quiet(consumer, harness.settle_s)  # joined, assigned, nothing there yet
        await bus.publish_many([OutMessage(bus.topics.questions, "k", b"one")])
        started = time.monotonic()
        got: list[Message] = []
        while not got and time.monotonic() - started < 20:
            got = await consumer.poll(1000, 10.0)
        waited = time.monotonic() - started
        assert [m.value for m in got] == [b"one"]
        assert waited < 5.0, f"poll waited {waited:.1f} s for a batch of 1000"
    finally:
        await consumer.close()
