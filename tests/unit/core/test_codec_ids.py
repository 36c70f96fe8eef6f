from __future__ import annotations

import contextlib

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from qaloop.core import codec
from qaloop.core.ids import normalise, question_id
from qaloop.core.model import SCHEMA_VERSION, Envelope, ErrorClass, EventKind, QuestionState
from tests.strategies import envelopes, floats


def test_roundtrip_keeps_everything() -> None:
    env = (
        Envelope(
            "b" * 32,
            "¿Qué es?",
            None,
            "trace",
            1.5,
            attempt=2,
            state=QuestionState.SCORING,
            answer="Es 日本 🙂",
            score=0.25,
            error_class=ErrorClass.QUOTA_MINUTE,
            due_at=9.0,
            llm_calls=3,
        )
        .with_event(EventKind.ACCEPTED, 1.5)
        .with_event(EventKind.LLM_ERROR, 2.0, error_class=ErrorClass.OVERLOAD, latency_ms=3.0)
    )
    assert codec.decode(codec.encode(env)) == env


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "empty"),
        (b"\xff\xfe", "not JSON"),
        (b"[1,2]", "JSON object"),
        (b'{"schema_version": 99}', "schema_version"),
        (b'{"schema_version": 1, "question": "x"}', "schema violation"),
        (b'{"schema_version": 1, "question_id": "a", "question": 5}', "must be a string"),
        (
            b'{"schema_version": 1, "question_id": "a", "question": "q", "trace_id": "t",'
            b' "first_seen": 1, "attempt": 0}',
            "attempt",
        ),
        (
            b'{"schema_version": 1, "question_id": "a", "question": "q", "trace_id": "t",'
            b' "first_seen": 1, "state": "lost"}',
            "schema violation",
        ),
    ],
)
def test_invalid_messages_say_why(raw: bytes | None, reason: str) -> None:
    with pytest.raises(codec.InvalidMessage, match=reason):
        codec.decode(raw)


@given(st.binary(max_size=200))
def test_decode_never_raises_anything_else(raw: bytes) -> None:
    with contextlib.suppress(codec.InvalidMessage):
        codec.decode(raw)


@given(
    st.dictionaries(
        st.text(max_size=8), st.none() | st.integers(-(2**62), 2**62) | st.text(max_size=8)
    )
)
def test_decode_of_arbitrary_objects(data: dict[str, object]) -> None:
    data["schema_version"] = 1
    with contextlib.suppress(codec.InvalidMessage):
        codec.decode(orjson.dumps(data))


@given(envelopes)
def test_fast_and_strict_paths_agree_on_what_encode_writes(envelope: Envelope) -> None:
    raw = codec.encode(envelope)
    assert raw.startswith(codec._CANONICAL_PREFIX)  # so decode() takes the fast path
    assert codec.decode(raw) == codec._decode_strict(raw) == envelope


@given(
    st.dictionaries(
        st.sampled_from(
            ["question_id", "question", "reference_answer", "trace_id", "first_seen", "attempt",
             "state", "score", "llm_calls", "history", "best_attempt", "schema_version",
             "feedback", "arm"]
        ),
        st.none() | st.booleans() | st.integers(-3, 3) | floats | st.text(max_size=6)
        | st.lists(st.dictionaries(st.sampled_from(["seq", "kind", "attempt", "at"]),
                                   st.integers(0, 3) | st.sampled_from(["accepted", "x"]))),
    )
)  # fmt: skip
def test_fast_path_accepts_nothing_the_strict_path_refuses(data: dict[str, object]) -> None:
    head = b'{"schema_version":%d' % SCHEMA_VERSION  # the fast path's prefix
    raw = head + b"," + orjson.dumps(data)[1:] if data else head + b"}"
    try:
        expected: Envelope | None = codec._decode_strict(raw)
    except codec.InvalidMessage:
        expected = None
    if expected is None:
        with pytest.raises(codec.InvalidMessage):
            codec.decode(raw)
    else:
        assert codec.decode(raw) == expected


def test_same_question_same_id() -> None:
    assert normalise("  What IS\tPython?\n") == "what is python?"
    assert question_id("Qué ES  python") == question_id("qué es python")
    assert question_id("ｐｙｔｈｏｎ") == question_id("python")  # NFKC folds full-width letters
    assert question_id("a") != question_id("b")
    assert len(question_id("x")) == 32
