"""The quality gate's case table, shared by every caller of qaloop.core.routing: the plain judge
(tests/unit/services/test_judge_store_retrier.py), the routing unit tests and the Flink job's
tests. Routing takes a gate's Verdict, not a bare score.

(outcome, reason, score, attempt, max_attempts, expected decision, expected next attempt)
"""

from __future__ import annotations

from collections.abc import Sequence

from qaloop.quality.cascade import Cascade
from qaloop.quality.verdict import GateInput, Outcome, Reason, Verdict

ROUTING_CASES: list[tuple[str, str, float | None, int, int, str, int]] = [
    ("pass", "ok", 0.90, 1, 3, "validate", 1),
    ("pass", "ok", 0.50, 3, 3, "validate", 3),  # a pass on the last attempt
    ("pass", "ok", None, 1, 3, "validate", 1),  # the LLM judge may pass without a score
    ("fail", "low_score", 0.49, 1, 3, "regenerate", 2),
    ("fail", "echo", 0.10, 2, 3, "regenerate", 3),
    ("fail", "off_topic", 0.10, 3, 3, "give_up", 3),
    ("fail", "low_score", 0.10, 7, 3, "give_up", 7),  # a replay past the limit never loops
    ("fail", "non_answer", 0.20, 1, 1, "give_up", 1),
    # UNSURE reaches routing only when no second opinion decided: never a pass
    ("unsure", "no_reference", None, 1, 3, "regenerate", 2),
    ("unsure", "uncertain", 0.5, 3, 3, "give_up", 3),
    # the LLM judge broke: dead letter with its reason, on any attempt, never a pass
    ("fail", "judge_error", None, 1, 3, "judge_error", 1),
    ("fail", "judge_error", None, 3, 3, "judge_error", 3),
]


def verdict_of(outcome: str, reason: str, score: float | None) -> Verdict:
    return Verdict(score, Outcome(outcome), Reason(reason), "fixed", "fixed")


class FixedGate:
    """A Gate that returns one verdict for every answer."""

    name = "fixed"

    def __init__(self, verdict: Verdict) -> None:
        self.verdict = verdict

    def judge_batch(self, items: Sequence[GateInput]) -> list[Verdict]:
        return [self.verdict for _ in items]


def fixed_stage(outcome: str, reason: str, score: float | None) -> Cascade:
    return Cascade(FixedGate(verdict_of(outcome, reason, score)), None)
