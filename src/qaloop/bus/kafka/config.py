"""What the Kafka adapter is configured with, and the librdkafka settings it derives."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    bootstrap: str = "127.0.0.1:19092"
    partitions: int = 6  # questions, generated, validated: bounds the useful consumers per group
    cold_partitions: int = 2  # delayed, dead letter
    replication_factor: int = 1
    # with acks=all a write succeeds once this many replicas have it (topics created here)
    min_insync_replicas: int = 1
    session_timeout_ms: int = 10_000  # how long a killed consumer holds its partitions
    linger_ms: int = 5
    fetch_wait_max_ms: int = 100
    client_id: str = "qaloop"
    producer: dict[str, Any] = field(default_factory=dict)  # extra librdkafka settings
    consumer: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.min_insync_replicas > self.replication_factor:
            raise ValueError(
                f"min.insync.replicas {self.min_insync_replicas} > replication factor "
                f"{self.replication_factor}: no acks=all write could ever succeed"
            )


def base_config(s: KafkaSettings) -> dict[str, Any]:
    return {"bootstrap.servers": s.bootstrap, "client.id": s.client_id}


def producer_config(s: KafkaSettings) -> dict[str, Any]:
    return {
        **base_config(s),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": s.linger_ms,
        "batch.num.messages": 10_000,
        "queue.buffering.max.messages": 500_000,
        "queue.buffering.max.kbytes": 1_048_576,
        **s.producer,
    }


def consumer_config(s: KafkaSettings, group: str) -> dict[str, Any]:
    timeout = s.session_timeout_ms
    return {
        **base_config(s),
        "group.id": group,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "cooperative-sticky",
        "session.timeout.ms": timeout,
        "heartbeat.interval.ms": max(500, timeout // 5),
        "fetch.wait.max.ms": s.fetch_wait_max_ms,
        "enable.partition.eof": False,
        **s.consumer,
    }
