"""Topic creation and the offsets a lag probe reads, through librdkafka's AdminClient.

`ensure_topics` takes one TopicSpec per topic: a new per-topic setting (replication factor,
`min.insync.replicas`, retention) is a field there and a line in `new_topic`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import (
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]
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
    """Committed and end offsets (blocking: call from a thread), over one cached client."""

    def __init__(self, s: KafkaSettings) -> None:
        self.settings = s
        self._client: AdminClient | None = None

    def client(self) -> AdminClient:
        if self._client is None:
            self._client = AdminClient(base_config(self.settings))
        return self._client

    def lag(self, group: str, topics: Iterable[str]) -> dict[str, int]:
        """Messages not yet committed by `group`, per topic (blocking: call from a thread).
        Two admin requests: the group's committed offsets and the partitions' end offsets."""
        admin = self.client()
        names = list(topics)
        result = dict.fromkeys(names, 0)
        meta = admin.list_topics(timeout=10).topics
        parts = [TopicPartition(t, p) for t in names if t in meta for p in meta[t].partitions]
        if not parts:
            return result
        request = [ConsumerGroupTopicPartitions(group, parts)]
        answer = admin.list_consumer_group_offsets(request, request_timeout=10)[group].result()
        committed = {(tp.topic, tp.partition): tp.offset for tp in answer.topic_partitions or ()}
        ends = self._offsets_at(admin, parts, _spec("latest"))
        # A partition the group never committed is read from its earliest retained offset.
        missing = [tp for tp in parts if committed.get((tp.topic, tp.partition), -1) < 0]
        starts = self._offsets_at(admin, missing, _spec("earliest")) if missing else {}
        for tp in parts:
            key = (tp.topic, tp.partition)
            position = committed.get(key, -1)
            if position < 0:
                position = starts.get(key, 0)
            result[tp.topic] += max(0, ends.get(key, 0) - position)
        return result

    @staticmethod
    def _offsets_at(
        admin: AdminClient, parts: list[TopicPartition], spec: Any
    ) -> dict[tuple[str, int], int]:
        futures = admin.list_offsets({tp: spec for tp in parts}, request_timeout=10)
        return {(tp.topic, tp.partition): f.result().offset for tp, f in futures.items()}

    def end_offsets(self, topics: Iterable[str]) -> dict[str, int]:
        """Messages ever written per topic (sum of end offsets; blocking)."""
        admin = self.client()
        names = list(topics)
        meta = admin.list_topics(timeout=10).topics
        parts = [TopicPartition(t, p) for t in names if t in meta for p in meta[t].partitions]
        result = dict.fromkeys(names, 0)
        for (topic, _), offset in self._offsets_at(admin, parts, _spec("latest")).items():
            result[topic] += offset
        return result


def _spec(kind: str) -> Any:
    """OffsetSpec.latest() / .earliest() (untyped in the binding's stubs)."""
    return getattr(OffsetSpec, kind)()
