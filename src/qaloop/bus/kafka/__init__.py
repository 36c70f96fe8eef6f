"""The Kafka bus (confluent-kafka / librdkafka), honouring the semantics of qaloop.bus.base.

Modules: `config` (KafkaSettings, librdkafka settings), `producer`, `consumer`, `admin` (topic
creation, offsets for lag), `errors`; KafkaBus, here, puts them behind the Bus interface.

Producer: idempotent, acks=all; `publish_many` hands every message to librdkafka and returns
only when the broker has acknowledged all of them (delivery reports, served by a background
thread that polls the producer, are bridged to one asyncio future per call). A failed delivery
raises KafkaDeliveryError: the caller leaves its input uncommitted and it comes back.

Consumer: no auto-commit. `poll` runs `consume()` on the consumer's own thread, so the event
loop stays free; `commit` marks messages done in an OffsetTracker and commits, with explicit
offsets, only the contiguous done prefix of each partition. Commits are asynchronous and
coalesced (one request in flight, at most one per 50 ms; a failed one is retried with the
next): outputs are acknowledged before the offsets that cover them are committed, which is the
order at-least-once needs, and a blocking commit can deadlock against a group coordinator that
waits for this consumer to poll (seen on a broker restart). Rebalances: on revoke, the done
prefix of every partition is committed and the tracker forgets the revoked partitions;
messages still in flight there may be redelivered to the new owner, which is harmless because
every downstream write is idempotent. `pause`/`resume` act on every assigned partition (and on
partitions assigned while paused), and the caller keeps polling, so it stays in its group.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any

from confluent_kafka.admin import AdminClient

from qaloop.bus.base import OutMessage, Topics
from qaloop.bus.kafka.admin import Offsets, TopicSpec, ensure_topics, topic_specs
from qaloop.bus.kafka.config import KafkaSettings, base_config, consumer_config
from qaloop.bus.kafka.consumer import KafkaConsumer
from qaloop.bus.kafka.errors import KafkaDeliveryError
from qaloop.bus.kafka.producer import KafkaProducer

__all__ = [
    "KafkaBus",
    "KafkaConsumer",
    "KafkaDeliveryError",
    "KafkaProducer",
    "KafkaSettings",
    "TopicSpec",
]


class KafkaBus:
    def __init__(self, settings: KafkaSettings | str, topics: Topics | None = None) -> None:
        self.settings = KafkaSettings(settings) if isinstance(settings, str) else settings
        self.topics = topics or Topics()
        self._producer = KafkaProducer(self.settings)
        self._offsets = Offsets(self.settings)

    def topic_partitions(self) -> dict[str, int]:
        return {name: spec.partitions for name, spec in self.topic_specs().items()}

    def topic_specs(self) -> dict[str, TopicSpec]:
        return topic_specs(self.settings, self.topics)

    async def start(self) -> None:
        if self._producer.started:
            return
        await asyncio.to_thread(self._ensure_topics)
        self._producer.start()

    def _ensure_topics(self) -> None:
        ensure_topics(AdminClient(base_config(self.settings)), self.topic_specs())

    async def publish_many(self, messages: Sequence[OutMessage]) -> None:
        await self._producer.publish_many(messages)

    def consumer(self, group: str, topics: Sequence[str]) -> KafkaConsumer:
        return KafkaConsumer(self.consumer_config(group), group, list(topics))

    def consumer_config(self, group: str) -> dict[str, Any]:
        return consumer_config(self.settings, group)

    async def close(self) -> None:
        await self._producer.close()
        await asyncio.to_thread(self._offsets.close)

    def lag(self, group: str, topics: Iterable[str]) -> dict[str, int]:
        """Messages not yet committed by `group`, per topic (blocking: call from a thread)."""
        return self._offsets.lag(group, topics)

    def end_offsets(self, topics: Iterable[str]) -> dict[str, int]:
        """Messages ever written per topic (sum of end offsets; blocking)."""
        return self._offsets.end_offsets(topics)
