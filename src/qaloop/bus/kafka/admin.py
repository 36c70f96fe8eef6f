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

from confluent_kafka import KafkaError, KafkaException, TopicPartition
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


class Offsets:
    """Committed and end offsets (blocking: call from a thread), through consumers that never
    join a group: `committed()` (the group coordinator's OffsetFetch) and
    `get_watermark_offsets()` (the partition leaders' ListOffsets).

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

    def _partitions(self, client: Any, topics: list[str]) -> list[TopicPartition]:
        meta = client.list_topics(timeout=10).topics
        return [TopicPartition(t, p) for t in topics if t in meta for p in meta[t].partitions]

    def lag(self, group: str, topics: Iterable[str]) -> dict[str, int]:
        """Messages not yet committed by `group`, per topic (blocking: call from a thread).
        A partition the group never committed counts from its earliest retained offset."""
        names = list(topics)
        result = dict.fromkeys(names, 0)
        with self._exclusive():
            client = self._client(group)
            parts = self._partitions(client, names)
            if not parts:
                return result
            for tp in client.committed(parts, timeout=10):
                low, high = client.get_watermark_offsets(tp, timeout=10, cached=False)
                position = tp.offset if tp.offset >= 0 else low
                result[tp.topic] += max(0, high - position)
        return result

    def end_offsets(self, topics: Iterable[str]) -> dict[str, int]:
        """Messages ever written per topic (sum of end offsets; blocking)."""
        names = list(topics)
        result = dict.fromkeys(names, 0)
        with self._exclusive():
            client = self._client("qaloop-offsets")
            for tp in self._partitions(client, names):
                _, high = client.get_watermark_offsets(tp, timeout=10, cached=False)
                result[tp.topic] += high
        return result

    def close(self) -> None:
        """Blocking; closes the clients (a later call opens new ones)."""
        with self._lock:
            clients, self._clients = self._clients, {}
        for client in clients.values():
            with contextlib.suppress(Exception):
                client.close()
