"""The quality gate's one decision, shared by the plain judge and the Flink job.

It takes a gate's `Verdict` (qaloop.quality.verdict), never a bare score:

PASS                                    -> validated
FAIL or UNSURE, attempt < max_attempts  -> back to the pending-questions topic with attempt + 1,
                                           carrying the rejection's reason (the feedback)
FAIL or UNSURE, last attempt            -> failed, keeping the best answer seen
reason JUDGE_ERROR (the LLM judge broke) -> failed and dead-lettered with the judge's error:
                                           never a pass, and never a silent re-roll

UNSURE reaches this function only when no second opinion could decide (a cascade turns UNSURE
into the LLM judge's verdict); it is not a pass.

The attempt number lives in the message, so a replayed message can't loop forever: every
regeneration strictly increases it and nothing past max_attempts is sent back.

A regeneration is in one of two arms of the feedback experiment (docs/quality.md): "feedback"
(the next prompt says what was wrong) or "control" (the plain prompt), chosen once per question
by a seeded hash of its id, so replays and both judges pick the same arm.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass

from qaloop.core.model import Envelope, Event, EventKind, QuestionState, Usage
from qaloop.quality.verdict import Outcome, Reason, Verdict


class Decision(enum.StrEnum):
    VALIDATE = "validate"
    REGENERATE = "regenerate"
    GIVE_UP = "give_up"
    JUDGE_ERROR = "judge_error"


FEEDBACK, CONTROL = "feedback", "control"


@dataclass(frozen=True, slots=True)
class GateConfig:
    threshold: float = 0.5  # the cheap scorer's threshold (quality.cascade.ScorerGate)
    max_attempts: int = 3
    feedback: bool = True  # regeneration prompts say what was wrong (else: all "control")
    control_share: float = 0.0  # share of questions regenerated with the plain prompt
    control_seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if not 0.0 <= self.control_share <= 1.0:
            raise ValueError(f"control_share must be in [0, 1], got {self.control_share}")


@dataclass(frozen=True, slots=True)
class JudgeCost:
    """What judging one answer cost in LLM-judge calls and tokens (0 for the cheap gate), and
    the priced usage of the call that returned the verdict (qaloop.llm.accounting, purpose
    "judge"): it rides on the SCORED event, so storage's llm_usage gets a judge row."""

    calls: int = 0
    tokens: int = 0
    usage: Usage | None = None


# What the cheap gate's verdict cost: frozen, so one instance serves every answer (the judge
# built one per answer).
FREE = JudgeCost()

# Enum members' `.value` is a descriptor call; these lookups run for every answer.
DECISION_VALUE: dict[Decision, str] = {d: d.value for d in Decision}
REASON_VALUE: dict[Reason, str] = {r: r.value for r in Reason}


def decide(verdict: Verdict, attempt: int, gate: GateConfig) -> Decision:
    if verdict.reason is Reason.JUDGE_ERROR:
        return Decision.JUDGE_ERROR
    if verdict.outcome is Outcome.PASS:
        return Decision.VALIDATE
    if attempt < gate.max_attempts:
        return Decision.REGENERATE
    return Decision.GIVE_UP


def arm_for(question_id: str, gate: GateConfig) -> str:
    """The question's arm of the feedback experiment: a seeded hash, uniform in [0, 1)."""
    if not gate.feedback:
        return CONTROL
    if gate.control_share <= 0.0:
        return FEEDBACK
    digest = hashlib.blake2b(f"{gate.control_seed}:{question_id}".encode(), digest_size=8)
    u = int.from_bytes(digest.digest(), "big") / 2**64
    return CONTROL if u < gate.control_share else FEEDBACK


def prompt_feedback(envelope: Envelope) -> str | None:
    """The rejection reason the worker's prompt carries for this attempt (None: plain prompt)."""
    return envelope.feedback if envelope.arm == FEEDBACK else None


def scored_detail(verdict: Verdict, cost: JudgeCost, arm: str | None) -> str:
    """The SCORED event's detail, `key=value; ...` (the report parses it: parse_scored_detail).
    The gate's free-text note goes last, so a `;` inside it can't break the parse."""
    parts = [f"reason={REASON_VALUE[verdict.reason]}", f"by={verdict.judged_by or 'gate'}"]
    if cost.calls:
        parts += [f"judge_calls={cost.calls}", f"judge_tokens={cost.tokens}"]
    if arm is not None:
        parts.append(f"arm={arm}")
    note = " ".join(verdict.detail.split())[:200]
    if note:
        parts.append(f"note={note}")
    return "; ".join(parts)


def parse_scored_detail(detail: str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    if not detail:
        return out
    rest = detail
    while rest:
        if rest.startswith("note="):
            out["note"] = rest[5:]
            break
        head, sep, rest = rest.partition("; ")
        key, eq, value = head.partition("=")
        if eq:
            out[key] = value
        if not sep:
            break
    return out


def judge(
    envelope: Envelope,
    verdict: Verdict,
    gate: GateConfig,
    now: float,
    cost: JudgeCost | None = None,
) -> tuple[Decision, Envelope]:
    """Apply the decision to a generated envelope; returns the envelope for the next topic."""
    if cost is None:
        cost = FREE
    decision = decide(verdict, envelope.attempt, gate)
    score = verdict.score
    best_answer, best_score, best_attempt = (
        envelope.best_answer,
        envelope.best_score,
        envelope.best_attempt,
    )
    if score is not None and (best_score is None or score > best_score):
        best_answer, best_score, best_attempt = envelope.answer, score, envelope.attempt
    arm = arm_for(envelope.question_id, gate) if decision is Decision.REGENERATE else None
    history = (
        *envelope.history,
        Event(
            len(envelope.history),
            EventKind.SCORED,
            envelope.attempt,
            now,
            score=score,
            detail=scored_detail(verdict, cost, arm),
            decision=DECISION_VALUE[decision],
            usage=cost.usage,
        ),
    )
    # `llm_calls` counts every LLM call made for the question, the judge's too (docs/spend.md).
    calls = envelope.llm_calls + cost.calls
    best = {"best_answer": best_answer, "best_score": best_score, "best_attempt": best_attempt}
    # One copy of the envelope per decision: this runs for every answer.
    match decision:
        case Decision.VALIDATE:
            return decision, envelope.evolve(
                state=QuestionState.VALIDATED,
                score=score,
                history=history,
                llm_calls=calls,
                **best,
            )
        case Decision.REGENERATE:
            return decision, envelope.evolve(
                state=QuestionState.QUEUED,
                attempt=envelope.attempt + 1,
                answer=None,
                score=None,
                tries_in_attempt=0,
                error_class=None,
                error_detail=None,
                history=history,
                llm_calls=calls,
                feedback=verdict.reason.value,
                arm=arm,
                **best,
            )
        case Decision.GIVE_UP | Decision.JUDGE_ERROR:
            # Keep the best answer seen across attempts, not merely the last one.
            if decision is Decision.GIVE_UP:
                why = f"{verdict.reason.value} after {envelope.attempt} attempts"
            else:
                why = f"judge_error: {verdict.detail or 'the LLM judge failed'}"[:300]
            gave_up = Event(len(history), EventKind.GAVE_UP, envelope.attempt, now, detail=why)
            return decision, envelope.evolve(
                state=QuestionState.FAILED,
                answer=best_answer,
                score=best_score,
                error_detail=why,
                history=(*history, gave_up),
                llm_calls=calls,
                **best,
            )
