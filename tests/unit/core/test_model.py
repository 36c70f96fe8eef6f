"""Envelope copies: with_event's one-copy form is the same as with_event(...).evolve(...)."""

from __future__ import annotations

import pytest

from qaloop.core.model import Envelope, EventKind, QuestionState


def _env() -> Envelope:
    return Envelope("qid", "Why?", "Because.", "trace", 1.0).with_event(EventKind.ACCEPTED, 1.0)


def test_with_event_and_changes_in_one_copy_equals_two_copies() -> None:
    env = _env()
    changes = {"state": QuestionState.SCORING, "answer": "A.", "llm_calls": 1, "attempt": 2}
    one = env.with_event(EventKind.GENERATED, 2.0, changes, answer="A.", latency_ms=3.0)
    two = env.with_event(EventKind.GENERATED, 2.0, answer="A.", latency_ms=3.0).evolve(**changes)
    assert one == two
    assert one.history[-1].attempt == 1  # the event belongs to the attempt it happened in
    assert one.attempt == 2 and env.attempt == 1 and len(env.history) == 1  # env unchanged


def test_with_event_refuses_unknown_fields() -> None:
    with pytest.raises(TypeError, match="no field"):
        _env().with_event(EventKind.GENERATED, 2.0, {"anwser": "typo"})
