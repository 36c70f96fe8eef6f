"""The offsets the lag probes and the readiness check read (qaloop.bus.kafka.admin.Offsets),
against the real broker: end offsets, and a group's lag before and after it commits."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from qaloop.bus.base import OutMessage, Topics

pytestmark = pytest.mark.integration


async def test_lag_counts_what_the_group_has_not_committed_and_end_offsets_everything(
    kafka_bootstrap: str,
) -> None:
    from qaloop.bus.kafka import KafkaBus, KafkaSettings

    topics = Topics.with_prefix(f"offsets{uuid.uuid4().hex[:10]}")
    bus = KafkaBus(KafkaSettings(kafka_bootstrap, partitions=3, session_timeout_ms=6000), topics)
    await bus.start()
    group = f"{topics.questions}.g"
    try:
        await bus.publish_many([OutMessage(topics.questions, f"k{i}", b"v") for i in range(10)])
        assert await asyncio.to_thread(bus.end_offsets, [topics.questions]) == {
            topics.questions: 10
        }
        # a group that never committed lags by everything retained
        assert await asyncio.to_thread(bus.lag, group, [topics.questions]) == {topics.questions: 10}
        consumer = bus.consumer(group, [topics.questions])
        got: list[object] = []
        deadline = time.monotonic() + 30
        while len(got) < 10 and time.monotonic() < deadline:
            batch = await consumer.poll(100, 0.5)
            got += batch
            await consumer.commit(batch)
        assert len(got) == 10
        await consumer.close()  # its final commit
        assert await asyncio.to_thread(bus.lag, group, [topics.questions]) == {topics.questions: 0}
        # topics that do not exist count nothing
        assert await asyncio.to_thread(bus.lag, group, ["no-such-topic"]) == {"no-such-topic": 0}
    finally:
        await bus.close()


async def test_an_uncommitted_partition_counts_from_its_earliest_retained_offset(
    kafka_bootstrap: str,
) -> None:
    """Records deleted from a partition's start (retention) are not lag; a partition the group
    committed counts from its commit. KafkaLag's per-partition samples agree with Offsets."""
    from confluent_kafka import Consumer, TopicPartition
    from confluent_kafka.admin import AdminClient

    from qaloop.bus.kafka import KafkaBus, KafkaSettings
    from qaloop.observability.lag import KafkaLag

    topics = Topics.with_prefix(f"offsets{uuid.uuid4().hex[:10]}")
    bus = KafkaBus(KafkaSettings(kafka_bootstrap, partitions=2, session_timeout_ms=6000), topics)
    await bus.start()
    group = f"{topics.questions}.g"
    try:
        # key -> partition is librdkafka's hash; count what landed where
        await bus.publish_many([OutMessage(topics.questions, f"k{i}", b"v") for i in range(40)])
        probe = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group})
        ends = [probe.get_watermark_offsets(TopicPartition(topics.questions, p))[1] for p in (0, 1)]
        assert min(ends) > 5
        admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
        deleted = admin.delete_records([TopicPartition(topics.questions, 0, 4)])
        for future in deleted.values():
            future.result()
        probe.commit(offsets=[TopicPartition(topics.questions, 1, 2)], asynchronous=False)
        probe.close()
        lag = await asyncio.to_thread(bus.lag, group, [topics.questions])
        assert lag == {topics.questions: (ends[0] - 4) + (ends[1] - 2)}
        probes = KafkaLag(bus, {group: [topics.questions]})
        samples = await asyncio.to_thread(probes.probe)
        probes.close()
        assert sorted((s.partition, s.lag) for s in samples) == [
            (0, ends[0] - 4),
            (1, ends[1] - 2),
        ]
    finally:
        await bus.close()


def test_a_second_offsets_call_fails_fast_while_one_waits_for_the_broker() -> None:
    pytest.importorskip("confluent_kafka", reason="the kafka extra is not installed")
    from qaloop.bus.kafka import KafkaSettings
    from qaloop.bus.kafka.admin import Offsets

    offsets = Offsets(KafkaSettings("127.0.0.1:1"))  # never reached: the lock is taken
    offsets.LOCK_WAIT_S = 0.05
    with offsets._exclusive():  # a call still waiting for a broker
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="still waiting for the broker"):
            offsets.end_offsets(["t"])
        with pytest.raises(TimeoutError):
            offsets.lag("g", ["t"])
        assert time.monotonic() - started < 2
    offsets.close()
