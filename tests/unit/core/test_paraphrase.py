"""Paraphrase matching: rewordings match; negation, swapped roles, other numbers and other
questions don't; the index finds the best match above its threshold and stays bounded."""

from __future__ import annotations

import pytest

from qaloop.core.paraphrase import ParaphraseIndex, signature, similarity


def sim(a: str, b: str) -> float:
    return similarity(signature(a), signature(b))


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Why is the sky blue?", "why is the sky blue"),
        ("Why is the sky blue?", "Does anyone know why the sky is blue? Thanks!"),
        ("What's the capital of France?", "what is the capital of france please?"),
        ("How do I cook rice?", "Can someone tell me how to cook rice??"),
    ],
)
def test_rewordings_match(a: str, b: str) -> None:
    assert sim(a, b) == 1.0


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Why is the sky blue?", "Why is the sky not blue?"),
        ("Can dogs eat chocolate?", "Can't dogs eat chocolate?"),
        ("Does a cat chase a dog?", "Does a dog chase a cat?"),
        ("Who won the world cup in 1990?", "Who won the world cup in 1994?"),
        ("What is 0-60 for a Porsche 911?", "What is 0-62 for a Porsche 911?"),
    ],
)
def test_negation_swapped_roles_and_numbers_never_match(a: str, b: str) -> None:
    assert sim(a, b) == 0.0


def test_partial_overlap_scores_between() -> None:
    s = sim("How do I cook brown rice?", "How do I cook white rice?")
    assert 0 < s < 1


def test_index_finds_the_best_match_above_the_threshold() -> None:
    index = ParaphraseIndex(0.7)
    index.add("q1", "Why is the sky blue?")
    index.add("q2", "How do I cook brown rice?")
    assert index.lookup("does anyone know why the sky is blue") == ("q1", 1.0)
    assert index.lookup("How do I cook white rice?") is None  # 2/4 shared terms < 0.7
    assert index.lookup("Why is the sky not blue?") is None
    assert index.lookup("the") is None  # no content words
    assert "q1" in index and len(index) == 2
    index.discard("q1")
    assert index.lookup("why is the sky blue") is None


def test_index_is_bounded() -> None:
    index = ParaphraseIndex(0.9, capacity=2)
    for i, q in enumerate(["red apples taste", "green pears ripen", "blue plums grow"]):
        index.add(f"q{i}", q)
    assert len(index) == 2 and "q0" not in index
    assert index.lookup("red apples taste") is None
    with pytest.raises(ValueError):
        ParaphraseIndex(0.0)
