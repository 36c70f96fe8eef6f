"""The scorer interface (the registry the judge selects from by name: qaloop.quality.registry)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@runtime_checkable
class Scorer(Protocol):
    """Scores an answer against a reference in [0, 1]; higher is closer."""

    name: str

    def score(self, answer: str, reference: str) -> float: ...

    def score_batch(self, pairs: Sequence[tuple[str, str]]) -> list[float]: ...


@dataclass(frozen=True, slots=True)
class ScoreDetail:
    """One score with what the scorer noticed about the pair (languages: qaloop.quality.lang)."""

    score: float
    answer_lang: str = "und"
    reference_lang: str = "und"
    cross_language: bool = False


@runtime_checkable
class DetailedScorer(Scorer, Protocol):
    """Optional extension: scores plus per-pair details (the judge uses it when present)."""

    def score_batch_detailed(self, pairs: Sequence[tuple[str, str]]) -> list[ScoreDetail]: ...


def score_details(scorer: Scorer, pairs: Sequence[tuple[str, str]]) -> list[ScoreDetail]:
    """Details from a DetailedScorer, or bare scores (languages undetermined) from any Scorer."""
    if isinstance(scorer, DetailedScorer):
        return scorer.score_batch_detailed(pairs)
    return [ScoreDetail(score=s) for s in scorer.score_batch(pairs)]
