"""Topic creation and the offsets a lag probe reads, through librdkafka's AdminClient.

`ensure_topics` takes one TopicSpec per topic: a new per-topic setting (replication factor,
`min.insync.replicas`, retention) is a field there and a line in `new_topic`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewPartitions, NewTopic

from qaloop.bus.base import Topics
from qaloop.bus.kafka.config import KafkaSettings, base_config

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TopicSpec:
    partitions: int
    replication_factor: int = 1
    min_insync_replicas: int = 1


def topic_specs(s: KafkaSettings, t: Topics) -> dict[str, TopicSpec]:
    """The pipeline's topics: hot ones with `partitions`, cold ones (delayed, dead letter)
    with `cold_partitions`."""
    hot = TopicSpec(s.partitions, s.replication_factor, s.min_insync_replicas)
    cold = TopicSpec(s.cold_partitions, s.replication_factor, s.min_insync_replicas)
    return {
        t.questions: hot,
        t.generated: hot,
        t.validated: hot,
        t.delayed: cold,
        t.dead_letter: cold,
    }


def new_topic(name: str, spec: TopicSpec) -> NewTopic:
    return NewTopic(
        name,
        num_partitions=spec.partitions,
        replication_factor=spec.replication_factor,
        config={"min.insync.replicas": str(spec.min_insync_replicas)},
    )


def ensure_topics(admin: AdminClient, specs: Mapping[str, TopicSpec]) -> None:
    """Create the topics (idempotent; never relies on broker auto-creation) and grow the
    partition count of existing ones that have fewer than configured."""
    wanted = {name: spec.partitions for name, spec in specs.items()}
    existing = admin.list_topics(timeout=30).topics
    new = [new_topic(name, spec) for name, spec in specs.items() if name not in existing]
    if new:
        for name, future in admin.create_topics(new, operation_timeout=30).items():
            try:
                future.result()
                log.info("created topic %s (%d partitions)", name, wanted[name])
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
    grow = [
        NewPartitions(name, n)
        for name, n in wanted.items()
        if name in existing and len(existing[name].partitions) < n
    ]
    if grow:
        for name, future in admin.create_partitions(grow, operation_timeout=30).items():
            future.result()
            log.info("grew topic %s to %d partitions", name, wanted[name])
    # Wait until the metadata shows every partition (a new topic takes a moment).
    deadline = time.monotonic() + 30
    while True:
        meta = admin.list_topics(timeout=10).topics
        if all(
            name in meta and len(meta[name].partitions) >= n and meta[name].error is None
            for name, n in wanted.items()
        ):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"topics not ready after 30 s: {sorted(wanted)}")
        time.sleep(0.1)


def topic_partitions(client: Any, topics: Iterable[str]) -> list[TopicPartition]:
    """The partitions of `topics` (none for a topic that doesn't exist), from the metadata of
    those topics alone: the whole cluster's, every probe, grew with every topic on it (the
    benchmarks' runs left dozens). A consumer's metadata request never creates a topic."""
    parts: list[TopicPartition] = []
    for topic in topics:
        meta = client.list_topics(topic=topic, timeout=10).topics.get(topic)
        if meta is not None:
            parts += [TopicPartition(topic, p) for p in meta.partitions]
    return parts


def list_offsets(client: Any, parts: list[TopicPartition], at: int) -> dict[tuple[str, int], int]:
    """(topic, partition) -> offset at OFFSET_END (what get_watermark_offsets calls the high
    watermark) or OFFSET_BEGINNING (the earliest retained), in one ListOffsets per partition
    leader: get_watermark_offsets(cached=False) sent two requests per partition, one after the
    other. Raises KafkaException if any partition's offset could not be read."""
    if not parts:
        return {}
    query = [TopicPartition(tp.topic, tp.partition, at) for tp in parts]
    found: dict[tuple[str, int], int] = {}
    for tp in client.offsets_for_times(query, timeout=10):
        if tp.error is not None:
            raise KafkaException(tp.error)
        found[tp.topic, tp.partition] = tp.offset
    return found


def group_lag(client: Any, parts: list[TopicPartition]) -> list[tuple[str, int, int]]:
    """(topic, partition, lag) of the client's group: end offset minus its committed offset,
    or minus the earliest retained offset where the group never committed."""
    committed = client.committed(parts, timeout=10)
    high = list_offsets(client, committed, OFFSET_END)
    low = list_offsets(client, [tp for tp in committed if tp.offset < 0], OFFSET_BEGINNING)
    found = []
    for tp in committed:
        key = (tp.topic, tp.partition)
        position = tp.offset if tp.offset >= 0 else low[key]
        found.append((tp.topic, tp.partition, max(0, high[key] - position)))
    return found


class Offsets:
    """Committed and end offsets (blocking: call from a thread), through consumers that never
    join a group: `committed()` (the group coordinator's OffsetFetch) and
    `offsets_for_times()` (the partition leaders' ListOffsets, `list_offsets`).

    Not through the AdminClient: its ListConsumerGroupOffsets request, timing out while the
    group coordinator's broker was SIGKILLed, made librdkafka 2.16 abort the process
    (`rd_kafka_enq_once_del_source_return: Assertion 'eonce->refcnt > 0' failed`; the retrier,
    whose stale sweep asks for the worker group's lag, in the 3-broker failover test). The
    consumer's own offset fetch has ridden out every broker kill in that test, as it does in
    the lag probes (qaloop.observability.lag). One lock: the calls come from executor threads
    and `close` must never run under one of them. A call that finds another one still waiting
    for the broker fails after LOCK_WAIT_S rather than queueing behind it (a readiness probe
    per request would otherwise pile up executor threads while a broker is down)."""

    LOCK_WAIT_S = 1.0

    def __init__(self, s: KafkaSettings) -> None:
        self.settings = s
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        if not self._lock.acquire(timeout=self.LOCK_WAIT_S):
            raise TimeoutError("an offsets request is still waiting for the broker")
        try:
            yield
        finally:
            self._lock.release()

    def _client(self, group: str) -> Any:
        from confluent_kafka import Consumer

        client = self._clients.get(group)
        if client is None:
            config = {
                **base_config(self.settings),
                "group.id": group,
                "enable.auto.commit": False,
                "client.id": "qaloop-offsets",
            }
            client = self._clients[group] = Consumer(config)
        return client

    def lag(self, group: str, topics: Iterable[str]) -> dict[str, int]:
        """Messages not yet committed by `group`, per topic (blocking: call from a thread).
        A partition the group never committed counts from its earliest retained offset."""
        names = list(topics)
        result = dict.fromkeys(names, 0)
        with self._exclusive():
            client = self._client(group)
            parts = topic_partitions(client, names)
            if not parts:
                return result
            for topic, _, lag in group_lag(client, parts):
                result[topic] += lag
        return result

    def end_offsets(self, topics: Iterable[str]) -> dict[str, int]:
        """Messages ever written per topic (sum of end offsets; blocking)."""
        names = list(topics)
        result = dict.fromkeys(names, 0)
        with self._exclusive():
            client = self._client("qaloop-offsets")
            for (topic, _), high in list_offsets(
                client, topic_partitions(client, names), OFFSET_END
            ).items():
                result[topic] += high
        return result

    def close(self) -> None:
        """Blocking; closes the clients (a later call opens new ones)."""
        with self._lock:
            clients, self._clients = self._clients, {}
        for client in clients.values():
            with contextlib.suppress(Exception):
                client.close()
