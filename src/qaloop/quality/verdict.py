"""What a quality gate says about one answer: the contract between gates and the judge stage.

A gate looks at (question, answer, reference-or-None) and returns a `Verdict`: a score, an
outcome and the reason for it. `UNSURE` means "this gate cannot decide": a cascade hands such
answers (and answers to questions with no reference) to a second opinion, the LLM judge. The
reason travels in the envelope, so a regeneration can tell the model what was wrong without
leaking the reference answer (docs/quality.md).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


class Outcome(enum.StrEnum):
    PASS = "pass"
    FAIL = "fail"
    UNSURE = "unsure"  # the gate can't decide: a cascade asks its second opinion


class Reason(enum.StrEnum):
    """Why a gate decided as it did. The values are stable: they are stored and logged."""

    OK = "ok"  # passed
    LOW_SCORE = "low_score"  # below the threshold, no more specific reason found
    OFF_TOPIC = "off_topic"  # about something other than the question
    ECHO = "echo"  # repeats or paraphrases the question instead of answering it
    NON_ANSWER = "non_answer"  # generic filler, "I don't know", a refusal
    CONTRADICTION = "contradiction"  # numbers, dates, names or polarity contradict the reference
    WRONG_LANGUAGE = "wrong_language"  # not in the question's language
    TRUNCATED = "truncated"  # stops mid-sentence / far too short to be complete
    EMPTY = "empty"  # nothing (or only whitespace/control characters) to judge
    MALFORMED = "malformed"  # binary, enormous, or an instruction aimed at the judge
    UNCERTAIN = "uncertain"  # inside the calibrated uncertain band (outcome UNSURE)
    NO_REFERENCE = "no_reference"  # nothing to compare with (outcome UNSURE for a cheap gate)
    JUDGE_REJECTED = "judge_rejected"  # the LLM judge graded it bad (its reason in `detail`)
    JUDGE_ERROR = "judge_error"  # the LLM judge failed; never a pass

    @property
    def feedback(self) -> str:
        """What a regeneration prompt may say about the rejected attempt (no reference text)."""
        return _FEEDBACK.get(self, "")


_FEEDBACK = {
    Reason.LOW_SCORE: "The previous answer did not address the question well enough.",
    Reason.OFF_TOPIC: "The previous answer was about something other than the question.",
    Reason.ECHO: "The previous answer only repeated the question; answer it instead.",
    Reason.NON_ANSWER: "The previous answer was a non-answer; give a concrete, specific answer.",
    Reason.CONTRADICTION: (
        "The previous answer stated facts (numbers, dates, names or claims) that are wrong; "
        "check them."
    ),
    Reason.WRONG_LANGUAGE: "The previous answer was in the wrong language; answer in the "
    "question's language.",
    Reason.TRUNCATED: "The previous answer was cut off; give a complete answer.",
    Reason.EMPTY: "The previous answer was empty.",
    Reason.MALFORMED: "The previous answer was not a plain-text answer to the question.",
    Reason.JUDGE_REJECTED: "A reviewer judged the previous answer inadequate.",
}


@dataclass(frozen=True, slots=True)
class GateInput:
    question: str
    answer: str
    reference: str | None  # None or blank: no reference answer (most real questions)


@dataclass(frozen=True, slots=True)
class Verdict:
    score: float | None  # in [0, 1]; None when nothing could be scored
    outcome: Outcome
    reason: Reason
    detail: str = ""  # short, human-readable; never contains the reference answer
    judged_by: str = ""  # which gate decided: the cheap gate's name, "llm_judge", …

    @property
    def passed(self) -> bool:
        return self.outcome is Outcome.PASS


@runtime_checkable
class Gate(Protocol):
    """A synchronous, pure gate (no I/O): the cheap first line of a cascade."""

    name: str

    def judge_batch(self, items: Sequence[GateInput]) -> list[Verdict]: ...
