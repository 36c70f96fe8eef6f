"""Answer-quality scorers behind one interface (qaloop.quality.base.Scorer)."""

from qaloop.quality.base import DetailedScorer, ScoreDetail, Scorer, score_details
from qaloop.quality.registry import get_scorer, scorer_names

__all__ = [
    "DetailedScorer",
    "ScoreDetail",
    "Scorer",
    "get_scorer",
    "score_details",
    "scorer_names",
]
