"""Rolling upgrade of the envelope codec: what this codec writes decodes with the previous one
(dataclasses + orjson, tests/contract/codec_before_structs.py) -- on its fast path, to the same
envelope -- and what the previous one wrote (messages on the topics, stored envelopes of schema
1 and 2) decodes with this one to the same envelope."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given

from qaloop.core import codec
from qaloop.core.model import Envelope, ErrorClass, EventKind, QuestionState, Usage
from tests.contract import codec_before_structs as before
from tests.strategies import envelopes

_USAGE = Usage("generate", "simulated", "simulated", 31, 18, cost_usd=1.03e-05)
_BATCH_USAGE = Usage("judge", "gemini", "flash", 90, 7, 40, True, "batch", 0.5)


def _pipeline() -> list[Envelope]:
    """A question's records along the pipeline: accepted, answered, rejected and regenerated,
    parked, answered again, failed; and one of the batch lane, validated."""
    t = 1_800_000_000.0
    env = Envelope("q" * 32, "Why is the sky blue? 日本 🙂", "Rayleigh.", "tr", t)
    env = env.with_event(EventKind.ACCEPTED, t)
    out = [env]
    for attempt in (1, 2, 3):
        env = env.with_event(
            EventKind.GENERATED,
            t + attempt,
            {"state": QuestionState.SCORING, "answer": f"A{attempt}.", "llm_calls": attempt},
            answer=f"A{attempt}.",
            latency_ms=0.04524799999217066,
            detail="tokens in=31 out=18",
            usage=_USAGE,
        )
        out.append(env)
        env = env.with_event(
            EventKind.SCORED,
            t + attempt,
            {"score": 0.1 * attempt, "best_answer": "A1.", "best_score": 0.1, "best_attempt": 1},
            score=0.1 * attempt,
            detail="reason=echo; by=gate:composite",
            decision="regenerate",
        )
        if attempt < 3:
            env = env.evolve(
                attempt=attempt + 1, state=QuestionState.QUEUED, feedback="echo", arm="control"
            )
            out.append(env)
        if attempt == 2:
            env = env.with_event(
                EventKind.PARKED,
                t + 2.5,
                {"error_class": ErrorClass.QUOTA_MINUTE, "due_at": t + 60, "tries_in_attempt": 2},
                error_class=ErrorClass.QUOTA_MINUTE,
                wait_s=57.5,
            )
            out.append(env)
    out.append(env.evolve(state=QuestionState.FAILED, error_detail="low score"))
    batch = Envelope(
        "b" * 32, "Q?", None, "", 0.0, caller="key-1", lane="batch", state=QuestionState.VALIDATED
    ).with_event(EventKind.BATCHED, 1.0, usage=_BATCH_USAGE)
    return [*out, batch]


def _previous_reads(env: Envelope) -> None:
    raw = codec.encode(env)
    assert raw.startswith(before._CANONICAL_PREFIX)
    old = before._FAST.decode(raw)  # the previous codec's fast path takes it as it is ...
    assert before.decode(raw) == old  # ... and accepts it
    assert old.to_dict() == env.to_dict()  # the same envelope, every field


def _this_reads(env: Envelope) -> None:
    old = before.decode(orjson.dumps(env.to_dict()))  # the previous codec's envelope
    raw = before.encode(old)
    assert codec.decode(raw) == env
    assert codec.decode(raw.decode()) == env  # the strict path too


@pytest.mark.parametrize("env", _pipeline(), ids=lambda e: f"{e.attempt}-{e.state}")
def test_the_previous_codec_reads_what_this_one_writes(env: Envelope) -> None:
    _previous_reads(env)


@pytest.mark.parametrize("env", _pipeline(), ids=lambda e: f"{e.attempt}-{e.state}")
def test_this_codec_reads_what_the_previous_one_wrote(env: Envelope) -> None:
    _this_reads(env)


@given(envelopes)
def test_both_directions_for_any_envelope(env: Envelope) -> None:
    _previous_reads(env)
    _this_reads(env)


def test_a_stored_version_1_envelope_decodes_as_before() -> None:
    data: dict[str, Any] = _pipeline()[4].to_dict()
    data["schema_version"] = 1
    del data["feedback"], data["arm"]
    raw = orjson.dumps(data)
    env = codec.decode(raw)
    assert env.to_dict() == before.decode(raw).to_dict()
    assert (env.feedback, env.arm, env.schema_version) == (None, None, 2)


def test_writing_leaves_out_defaults_but_keeps_what_the_previous_codec_requires() -> None:
    env = Envelope("q", "Q?", None, "t", 1.0).with_event(EventKind.ACCEPTED, 1.0)
    assert codec.encode(env) == (
        b'{"schema_version":2,"question_id":"q","question":"Q?","reference_answer":null,'
        b'"trace_id":"t","first_seen":1.0,'
        b'"history":[{"seq":0,"kind":"accepted","attempt":1,"at":1.0}]}'
    )
