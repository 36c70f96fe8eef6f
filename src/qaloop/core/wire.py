"""The wire format of a bus record: what a message is, its headers, and how an envelope (or a
rejected message) becomes one. Every producer — the gateway, the stages, the Flink job, the
dead-letter replay — encodes through `out` and `poison`, so every topic carries the same
bytes and headers whichever process wrote them.

Headers duplicate the routing metadata of the envelope (its body is the codec's JSON) so that
tools and the store can route, inspect or rank a record without decoding it.
"""

from __future__ import annotations

import msgspec

from qaloop.core import codec
from qaloop.core.model import Envelope, QuestionState, progress_key

# Header names (docs/architecture.md, "The envelope").
ID = "qaloop-id"
ATTEMPT = "qaloop-attempt"
STATE = "qaloop-state"
TRACE_ID = "qaloop-trace-id"
FIRST_SEEN = "qaloop-first-seen"
SCHEMA = "qaloop-schema"
ERROR_CLASS = "qaloop-error-class"
DUE_AT = "qaloop-due-at"
REASON = "qaloop-reason"
POISON = "qaloop-poison"
SOURCE_TOPIC = "qaloop-source-topic"
SOURCE_PARTITION = "qaloop-source-partition"
SOURCE_OFFSET = "qaloop-source-offset"

MAX_REASON_CHARS = 500


# Structs, like the envelope (qaloop.core.model): one of each is made per record published or
# consumed, and a Struct is built ~10x faster than a frozen dataclass; never in a cycle (gc=False).
class OutMessage(msgspec.Struct, frozen=True, gc=False):
    """A record to publish."""

    topic: str
    key: str
    value: bytes
    headers: dict[str, str] = msgspec.field(default_factory=dict)


class Message(msgspec.Struct, frozen=True, gc=False):
    """A consumed record, with where it was read from."""

    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes | None
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    timestamp: float = 0.0


def envelope_headers(envelope: Envelope, **extra: str) -> dict[str, str]:
    headers = {
        ID: envelope.question_id,
        ATTEMPT: str(envelope.attempt),
        STATE: envelope.state.value,
        TRACE_ID: envelope.trace_id,
        FIRST_SEEN: f"{envelope.first_seen:.6f}",
        SCHEMA: str(envelope.schema_version),
    }
    if envelope.error_class is not None:
        headers[ERROR_CLASS] = envelope.error_class.value
    if envelope.due_at is not None:
        headers[DUE_AT] = f"{envelope.due_at:.6f}"
    headers.update(extra)
    return headers


def out(topic: str, envelope: Envelope, **headers: str) -> OutMessage:
    """The record of an envelope on `topic`: keyed by question id, so one question's records
    keep their order within a partition."""
    return OutMessage(
        topic, envelope.question_id, codec.encode(envelope), envelope_headers(envelope, **headers)
    )


def poison(dead_letter_topic: str, message: Message, reason: str) -> OutMessage:
    """The original bytes, untouched, with where they came from and why they were rejected."""
    return OutMessage(
        dead_letter_topic,
        message.key or "",
        message.value or b"",
        {
            **message.headers,
            REASON: reason[:MAX_REASON_CHARS],
            SOURCE_TOPIC: message.topic,
            SOURCE_PARTITION: str(message.partition),
            SOURCE_OFFSET: str(message.offset),
            POISON: "1",
        },
    )


def header_progress(headers: dict[str, str]) -> int | None:
    """The record's progress key (qaloop.core.model.progress_key) read from its headers alone,
    or None when they don't say (a record written before the state header existed, or not by
    qaloop): then only decoding the body tells."""
    attempt = headers.get(ATTEMPT, "")
    state = headers.get(STATE)
    if not attempt.isdigit() or state is None:
        return None
    try:
        return progress_key(QuestionState(state), int(attempt))
    except ValueError:
        return None
