"""Scorers by name: the registry the judge, the Flink job and `qaloop calibrate` select from.

A factory module, apart from the interface (qaloop.quality.base) and the implementations
(qaloop.quality.scorers, qaloop.quality.embedding), so none of them imports another in a
cycle. Built-ins are imported on first use: `import qaloop.quality` stays light.
"""

from __future__ import annotations

from collections.abc import Callable

from qaloop.quality.base import Scorer

_REGISTRY: dict[str, Callable[[], Scorer]] = {}
_loaded = False


def register(name: str, factory: Callable[[], Scorer]) -> None:
    _REGISTRY[name] = factory


def scorer_names() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def get_scorer(name: str) -> Scorer:
    _load_builtins()
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown scorer {name!r}; choose one of {sorted(_REGISTRY)}") from None
    return factory()


def _embedding() -> Scorer:
    from qaloop.quality.embedding import EmbeddingScorer  # optional model download

    return EmbeddingScorer()


def _embedding_int8() -> Scorer:
    from qaloop.quality.embedding import EmbeddingScorer, shared_model

    return EmbeddingScorer(shared_model("int8"), name="embedding_int8")


def _load_builtins() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    import qaloop.quality.scorers as s

    for name, factory in s.LEXICAL.items():
        _REGISTRY.setdefault(name, factory)

    def composite(weights: dict[str, float], name: str) -> Callable[[], Scorer]:
        return lambda: s.CompositeScorer(weights, name, resolve=get_scorer)

    for name, factory in {
        "composite": composite(s.DEFAULT_COMPOSITE, "composite"),
        "embedding": _embedding,
        "embedding_int8": _embedding_int8,
        "composite_embedding": composite(s.EMBEDDING_COMPOSITE, "composite_embedding"),
    }.items():
        _REGISTRY.setdefault(name, factory)
