"""Envelope <-> bytes. A message that can't be decoded raises InvalidMessage with the reason,
which the consumer turns into a dead-letter record instead of dying."""

from __future__ import annotations

from typing import Any

import msgspec
import orjson

from qaloop.core.model import (
    LANES,
    READABLE_SCHEMA_VERSIONS,
    SCHEMA_VERSION,
    Envelope,
    ErrorClass,
    Event,
    QuestionState,
)


class InvalidMessage(ValueError):
    """The bytes are not a valid envelope of a schema version we understand."""


# msgspec writes the Structs of qaloop.core.model in C, without Envelope.to_dict's dict (2.5-3.3x
# cheaper, bench/bench_codec.py): the schema version (the Struct's tag) first, then the fields
# in order, leaving out those at their default (model._Data). What orjson.dumps(to_dict())
# wrote, and stored envelopes hold, still decodes the same; and what this writes decodes with
# the previous codec (tests/contract/test_codec_compat.py).
_ENCODE = msgspec.json.Encoder().encode


def encode(envelope: Envelope) -> bytes:
    return _ENCODE(envelope)


# What encode() always starts with. Such bytes take the fast path: msgspec checks every field's
# type in C while building the Envelope (~7x faster than orjson plus the checks below). Anything
# else -- and anything msgspec refuses -- takes the strict path, whose errors say what's wrong.
_CANONICAL_PREFIX = b'{"schema_version":%d,' % SCHEMA_VERSION
_FAST = msgspec.json.Decoder(Envelope)
_ARMS = (None, "feedback", "control")


def decode(raw: bytes | str | None) -> Envelope:
    if raw is None:
        raise InvalidMessage("empty message (no value)")
    if isinstance(raw, bytes) and raw.startswith(_CANONICAL_PREFIX):
        try:
            envelope = _FAST.decode(raw)
        except msgspec.MsgspecError:
            pass  # the strict path says why (or accepts what it is lenient about)
        else:
            if (  # the schema version is checked by msgspec (the Struct's tag)
                envelope.question_id
                and envelope.question.strip()
                and envelope.attempt >= 1
                and envelope.arm in _ARMS
                and envelope.lane in LANES
            ):
                return envelope
    return _decode_strict(raw)


def _decode_strict(raw: bytes | str) -> Envelope:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidMessage(f"not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidMessage(f"expected a JSON object, got {type(data).__name__}")
    version = data.get("schema_version")
    if isinstance(version, bool) or version not in READABLE_SCHEMA_VERSIONS:
        raise InvalidMessage(
            f"unsupported schema_version {version!r} (expected one of "
            f"{', '.join(map(str, READABLE_SCHEMA_VERSIONS))})"
        )
    try:
        return _from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidMessage(f"schema violation: {type(exc).__name__}: {exc}") from exc


def _str(data: dict[str, Any], key: str, *, optional: bool = False) -> str | None:
    value = data.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise TypeError(f"field {key!r} must be a string, got {type(value).__name__}")
    return value


def _num(data: dict[str, Any], key: str, *, optional: bool = False) -> float | None:
    value = data.get(key)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"field {key!r} must be a number, got {type(value).__name__}")
    return float(value)


def _from_dict(data: dict[str, Any]) -> Envelope:
    question_id = _str(data, "question_id")
    question = _str(data, "question")
    assert question_id is not None and question is not None
    if not question_id or not question.strip():
        raise ValueError("question_id and question must be non-empty")
    attempt = data.get("attempt", 1)
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
        raise ValueError(f"attempt must be an integer >= 1, got {attempt!r}")
    history_raw = data.get("history", [])
    if not isinstance(history_raw, list):
        raise TypeError("field 'history' must be a list")
    ec = data.get("error_class")
    best_attempt = data.get("best_attempt")
    return Envelope(
        question_id=question_id,
        question=question,
        reference_answer=_str(data, "reference_answer", optional=True),
        trace_id=_str(data, "trace_id") or "",
        first_seen=_num(data, "first_seen") or 0.0,
        attempt=attempt,
        state=QuestionState(data.get("state", "queued")),
        answer=_str(data, "answer", optional=True),
        score=_num(data, "score", optional=True),
        best_answer=_str(data, "best_answer", optional=True),
        best_score=_num(data, "best_score", optional=True),
        best_attempt=None if best_attempt is None else int(best_attempt),
        error_class=None if ec is None else ErrorClass(ec),
        error_detail=_str(data, "error_detail", optional=True),
        due_at=_num(data, "due_at", optional=True),
        llm_calls=int(data.get("llm_calls", 0)),
        tries_in_attempt=int(data.get("tries_in_attempt", 0)),
        history=tuple(Event.from_dict(e) for e in history_raw),
        caller=_str(data, "caller", optional=True),
        lane=_lane(data.get("lane", "interactive")),
        feedback=_str(data, "feedback", optional=True),
        arm=_arm(data.get("arm")),
    )


def _lane(value: Any) -> str:
    if value not in LANES:
        raise ValueError(f"lane must be one of {LANES}, got {value!r}")
    return str(value)


def _arm(value: Any) -> str | None:
    if value in _ARMS:
        return value  # type: ignore[no-any-return]
    raise ValueError(f"arm must be 'feedback', 'control' or null, got {value!r}")
