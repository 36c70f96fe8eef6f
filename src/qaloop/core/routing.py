"""The quality gate's one decision, shared by the plain judge and the Flink job.

score >= threshold            -> validated
below, attempt < max_attempts -> back to the pending-questions topic with attempt + 1
below, last attempt           -> failed, keeping the best answer seen

The attempt number lives in the message, so a replayed message can't loop forever: every
regeneration strictly increases it and nothing past max_attempts is sent back.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from qaloop.core.model import Envelope, Event, EventKind, QuestionState


class Decision(enum.StrEnum):
    VALIDATE = "validate"
    REGENERATE = "regenerate"
    GIVE_UP = "give_up"


@dataclass(frozen=True, slots=True)
class GateConfig:
    threshold: float = 0.5
    max_attempts: int = 3

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")


def decide(score: float | None, attempt: int, gate: GateConfig) -> Decision:
    """`score is None` means there is no reference to compare with: accepted unscored."""
    if score is None or score >= gate.threshold:
        return Decision.VALIDATE
    if attempt < gate.max_attempts:
        return Decision.REGENERATE
    return Decision.GIVE_UP


def judge(
    envelope: Envelope, score: float | None, gate: GateConfig, now: float
) -> tuple[Decision, Envelope]:
    """Apply the decision to a generated envelope; returns the envelope for the next topic."""
    decision = decide(score, envelope.attempt, gate)
    best_answer, best_score, best_attempt = (
        envelope.best_answer,
        envelope.best_score,
        envelope.best_attempt,
    )
    if score is not None and (best_score is None or score > best_score):
        best_answer, best_score, best_attempt = envelope.answer, score, envelope.attempt
    history = (
        *envelope.history,
        Event(
            len(envelope.history),
            EventKind.SCORED,
            envelope.attempt,
            now,
            score=score,
            decision=decision.value,
        ),
    )
    best = {"best_answer": best_answer, "best_score": best_score, "best_attempt": best_attempt}
    # One copy of the envelope per decision: this runs for every answer.
    match decision:
        case Decision.VALIDATE:
            return decision, envelope.evolve(
                state=QuestionState.VALIDATED, score=score, history=history, **best
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
                **best,
            )
        case Decision.GIVE_UP:
            # Keep the best answer seen across attempts, not merely the last one.
            gave_up = Event(
                len(history),
                EventKind.GAVE_UP,
                envelope.attempt,
                now,
                detail="score below threshold",
            )
            return decision, envelope.evolve(
                state=QuestionState.FAILED,
                answer=best_answer,
                score=best_score,
                error_detail=f"score below {gate.threshold} after {envelope.attempt} attempts",
                history=(*history, gave_up),
                **best,
            )
