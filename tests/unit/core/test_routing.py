from __future__ import annotations

import pytest

from qaloop.core.model import Envelope, EventKind, QuestionState
from qaloop.core.routing import (
    Decision,
    GateConfig,
    JudgeCost,
    arm_for,
    decide,
    judge,
    parse_scored_detail,
    prompt_feedback,
    scored_detail,
)
from qaloop.quality.verdict import Outcome, Reason, Verdict
from tests.cases.routing_cases import ROUTING_CASES, verdict_of


def _v(score: float | None, outcome: str = "fail", reason: str = "low_score") -> Verdict:
    return verdict_of(outcome, reason, score)


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
    ("outcome", "reason", "score", "attempt", "max_attempts", "expected", "nxt"), ROUTING_CASES
)
def test_case_table(
    outcome: str,
    reason: str,
    score: float | None,
    attempt: int,
    max_attempts: int,
    expected: str,
    nxt: int,
) -> None:
    gate = GateConfig(0.5, max_attempts)
    verdict = verdict_of(outcome, reason, score)
    assert decide(verdict, attempt, gate) == Decision(expected)
    decision, routed = judge(_env(attempt), verdict, gate, now=200.0)
    assert decision == Decision(expected)
    assert routed.attempt == nxt
    assert routed.history[-1].kind in (EventKind.SCORED, EventKind.GAVE_UP)
    if decision is Decision.VALIDATE:
        assert routed.state is QuestionState.VALIDATED
    else:
        assert routed.state is not QuestionState.VALIDATED


def test_give_up_keeps_best_answer_across_attempts() -> None:
    gate = GateConfig(0.5, 3)
    env = _env(1, "first")
    _, env = judge(env, _v(0.4), gate, 1.0)
    env = env.evolve(answer="second", state=QuestionState.SCORING)
    _, env = judge(env, _v(0.2), gate, 2.0)
    env = env.evolve(answer="third", state=QuestionState.SCORING)
    decision, final = judge(env, _v(0.3), gate, 3.0)
    assert decision is Decision.GIVE_UP
    assert final.state is QuestionState.FAILED
    assert (final.answer, final.score, final.best_attempt) == ("first", 0.4, 1)
    assert [e.score for e in final.history if e.kind == "scored"] == [0.4, 0.2, 0.3]


def test_regenerate_clears_the_answer_and_bumps_attempt() -> None:
    _, routed = judge(_env(1), _v(0.1, reason="echo"), GateConfig(0.5, 3), 5.0)
    assert routed.state is QuestionState.QUEUED
    assert (routed.attempt, routed.answer, routed.score) == (2, None, None)
    assert routed.best_answer == "ans"
    assert routed.feedback == "echo" and routed.arm == "feedback"


def test_gate_config_validates() -> None:
    with pytest.raises(ValueError):
        GateConfig(1.5, 3)
    with pytest.raises(ValueError):
        GateConfig(0.5, 0)


def test_judge_error_is_final_and_says_why() -> None:
    verdict = Verdict(None, Outcome.FAIL, Reason.JUDGE_ERROR, "overload: 503 after 4 tries")
    decision, routed = judge(_env(1), verdict, GateConfig(0.5, 3), 5.0)
    assert decision is Decision.JUDGE_ERROR
    assert routed.state is QuestionState.FAILED
    assert routed.error_detail == "judge_error: overload: 503 after 4 tries"
    assert routed.history[-1].kind is EventKind.GAVE_UP


def test_control_arm_is_a_seeded_share_of_question_ids() -> None:
    gate = GateConfig(0.5, 3, control_share=0.3, control_seed=7)
    ids = [f"{i:032x}" for i in range(4000)]
    arms = [arm_for(i, gate) for i in ids]
    share = arms.count("control") / len(arms)
    assert 0.27 < share < 0.33
    assert arms == [arm_for(i, gate) for i in ids]  # stable: replays pick the same arm
    other = [arm_for(i, GateConfig(0.5, 3, control_share=0.3, control_seed=8)) for i in ids]
    assert other != arms  # the seed matters
    assert {arm_for(i, GateConfig(0.5, 3)) for i in ids} == {"feedback"}
    assert {arm_for(i, GateConfig(0.5, 3, feedback=False)) for i in ids} == {"control"}


def test_regeneration_records_arm_and_reason_and_the_prompt_uses_them() -> None:
    gate = GateConfig(0.5, 3, control_share=1.0)
    _, routed = judge(_env(1), _v(0.1, reason="off_topic"), gate, 5.0)
    assert (routed.feedback, routed.arm) == ("off_topic", "control")
    assert prompt_feedback(routed) is None  # control: the plain prompt
    _, routed = judge(_env(1), _v(0.1, reason="off_topic"), GateConfig(0.5, 3), 5.0)
    assert prompt_feedback(routed) == "off_topic"
    detail = parse_scored_detail(routed.history[-1].detail)
    assert detail["reason"] == "off_topic" and detail["arm"] == "feedback"


def test_scored_detail_round_trips_with_a_semicolon_in_the_note() -> None:
    verdict = Verdict(0.2, Outcome.FAIL, Reason.ECHO, "repeats; the question", "llm_judge")
    text = scored_detail(verdict, JudgeCost(2, 340), "control")
    assert parse_scored_detail(text) == {
        "reason": "echo",
        "by": "llm_judge",
        "judge_calls": "2",
        "judge_tokens": "340",
        "arm": "control",
        "note": "repeats; the question",
    }
    assert parse_scored_detail(None) == {}
