from __future__ import annotations

import pytest

from qaloop.core.model import Envelope, EventKind, QuestionState
from qaloop.core.routing import Decision, GateConfig, decide, judge
from tests.cases.routing_cases import ROUTING_CASES


def _env(attempt: int, answer: str = "ans") -> Envelope:
    return Envelope(
        "q" * 32,
        "Why?",
        "because",
        "t",
        100.0,
        attempt=attempt,
        answer=answer,
        state=QuestionState.SCORING,
    )


@pytest.mark.parametrize(
    ("score", "attempt", "threshold", "max_attempts", "expected", "nxt"), ROUTING_CASES
)
def test_case_table(
    score: float | None, attempt: int, threshold: float, max_attempts: int, expected: str, nxt: int
) -> None:
    gate = GateConfig(threshold, max_attempts)
    assert decide(score, attempt, gate) == Decision(expected)
    decision, routed = judge(_env(attempt), score, gate, now=200.0)
    assert decision == Decision(expected)
    assert routed.attempt == nxt
    assert routed.history[-1].kind in (EventKind.SCORED, EventKind.GAVE_UP)


def test_give_up_keeps_best_answer_across_attempts() -> None:
    gate = GateConfig(0.5, 3)
    env = _env(1, "first")
    _, env = judge(env, 0.4, gate, 1.0)
    env = env.evolve(answer="second", state=QuestionState.SCORING)
    _, env = judge(env, 0.2, gate, 2.0)
    env = env.evolve(answer="third", state=QuestionState.SCORING)
    decision, final = judge(env, 0.3, gate, 3.0)
    assert decision is Decision.GIVE_UP
    assert final.state is QuestionState.FAILED
    assert (final.answer, final.score, final.best_attempt) == ("first", 0.4, 1)
    assert [e.score for e in final.history if e.kind == "scored"] == [0.4, 0.2, 0.3]


def test_regenerate_clears_the_answer_and_bumps_attempt() -> None:
    _, routed = judge(_env(1), 0.1, GateConfig(0.5, 3), 5.0)
    assert routed.state is QuestionState.QUEUED
    assert (routed.attempt, routed.answer, routed.score) == (2, None, None)
    assert routed.best_answer == "ans"


def test_gate_config_validates() -> None:
    with pytest.raises(ValueError):
        GateConfig(1.5, 3)
    with pytest.raises(ValueError):
        GateConfig(0.5, 0)
