"""Answer-quality scorers behind one interface (qaloop.quality.base.Scorer)."""

from qaloop.quality.base import Scorer, get_scorer, scorer_names

__all__ = ["Scorer", "get_scorer", "scorer_names"]
