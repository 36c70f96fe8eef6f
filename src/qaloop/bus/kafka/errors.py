"""The Kafka adapter's errors, and the broker errors it treats as harmless."""

from __future__ import annotations

from confluent_kafka import KafkaError


class KafkaDeliveryError(RuntimeError):
    """At least one message of a `publish_many` call was not acknowledged by the broker."""


# Commit failures that only mean "the group moved on": the messages come back, nothing is lost.
REBALANCE_CODES = {
    KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError.ILLEGAL_GENERATION,
    KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError._NO_OFFSET,
    KafkaError._ASSIGNMENT_LOST,
}
