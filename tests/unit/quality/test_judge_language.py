"""The judge counts cross-language pairs (scorers with details) without changing decisions."""

from __future__ import annotations

import logging

import pytest

from qaloop.bus.base import Message, Topics
from qaloop.core import codec
from qaloop.core.model import Envelope, QuestionState
from qaloop.core.routing import GateConfig
from qaloop.quality import get_scorer
from qaloop.services.judge import Judge, score_envelopes

REFERENCE = "The cat is on the mat and it is sleeping all day long."


def _env(qid: str, answer: str, reference: str | None = REFERENCE) -> Envelope:
    return Envelope(
        question_id=qid,
        question="Where is the cat?",
        reference_answer=reference,
        trace_id="t",
        first_seen=0.0,
        state=QuestionState.SCORING,
        answer=answer,
    )


async def test_judge_counts_and_logs_cross_language(caplog: pytest.LogCaptureFixture) -> None:
    judge = Judge(get_scorer("token_f1"), GateConfig(0.3, 3), Topics(), clock=lambda: 1.0)
    envelopes = [
        _env("q-es", "El gato está en la alfombra y está durmiendo todo el día."),
        _env("q-en", "The cat is on the mat, sleeping all day."),
        _env("q-none", "whatever", reference=None),
    ]
    messages = [Message("g", 0, i, e.question_id, codec.encode(e)) for i, e in enumerate(envelopes)]
    with caplog.at_level(logging.DEBUG, logger="qaloop.services.judge"):
        await judge.handle_batch(messages)
    assert judge.quality["cross_language"] == 1
    assert judge.unscored == 1
    # a bare scorer has no second opinion: the answer without a reference is not validated
    assert judge.decisions == {"regenerate": 2, "validate": 1}
    assert any("q-es" in r.getMessage() and "es" in r.getMessage() for r in caplog.records)


def test_score_envelopes_without_stats_keeps_its_old_contract() -> None:
    scores = score_envelopes(get_scorer("jaccard"), [_env("q", REFERENCE), _env("r", "x", None)])
    assert scores == [1.0, None]
