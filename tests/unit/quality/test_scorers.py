"""Lexical scorers: hand-checked values, Unicode, empty and huge inputs, registry, details."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qaloop.quality import ScoreDetail, get_scorer, score_details, scorer_names
from qaloop.quality.scorers import (
    MAX_CHARS,
    ChrFScorer,
    CompositeScorer,
    JaccardScorer,
    KeywordRecallScorer,
    MultiMetricScorer,
    RougeLScorer,
    TokenF1Scorer,
)

LEXICAL = ["jaccard", "multi_metric", "token_f1", "rouge_l", "chrf", "keyword_recall", "composite"]
CAT_A = "the cat sat on the mat"
CAT_R = "the cat is on the mat"


def test_registry_lists_every_scorer() -> None:
    assert set(LEXICAL) | {"embedding", "embedding_int8", "composite_embedding"} <= set(
        scorer_names()
    )
    with pytest.raises(ValueError, match="unknown scorer"):
        get_scorer("bleu")


# ------------------------------------------------------------------ hand-checked values


def test_jaccard_known_values() -> None:
    s = JaccardScorer()
    assert s.score("the cat sat", "the cat ran") == pytest.approx(2 / 4)
    # {the, cat, sat, on, mat} vs {the, cat, is, on, mat}: 4 shared of 6.
    assert s.score(CAT_A, CAT_R) == pytest.approx(4 / 6)


def test_token_f1_known_values() -> None:
    s = TokenF1Scorer()
    # 6 tokens each; multiset overlap the, the, cat, on, mat = 5 -> P = R = 5/6.
    assert s.score(CAT_A, CAT_R) == pytest.approx(5 / 6)
    # Precision 1/1, recall 1/4 -> F1 = 2 * 0.25 / 1.25 = 0.4.
    assert s.score("cat", "the cat is here") == pytest.approx(0.4)
    assert s.score("a b c d", "d c b a") == pytest.approx(1.0)  # order-blind


def test_rouge_l_known_values() -> None:
    s = RougeLScorer()
    # LCS "the cat on the mat" = 5 of 6 on both sides.
    assert s.score(CAT_A, CAT_R) == pytest.approx(5 / 6)
    # Reversed order: LCS 1 of 4 -> F1 0.25 (token F1 would say 1.0).
    assert s.score("a b c d", "d c b a") == pytest.approx(0.25)
    # LCS "a c" = 2: P = 2/3, R = 2/2 -> F1 0.8.
    assert s.score("a b c", "a c") == pytest.approx(0.8)


def test_chrf_known_values() -> None:
    s = ChrFScorer()
    assert s.score("ab", "ab") == pytest.approx(1.0)
    # 1-grams: {a, b} vs {a, c}: P = R = 1/2; 2-grams: {ab} vs {ac}: 0 -> mean P = R = 1/4.
    assert s.score("ab", "ac") == pytest.approx(0.25)
    # sacrebleu 2.6 CHRF().sentence_score("the cat sat on the mat", ["the cat is on the mat"])
    # gives 64.5779420625287 (checked once; sacrebleu is not a dependency).
    assert s.score(CAT_A, CAT_R) == pytest.approx(0.645779420625287, abs=1e-12)
    # Recall weighs more (beta = 2): a short answer inside a long reference scores lower
    # than the long answer against the short reference.
    assert s.score("cat", "the cat is here") < s.score("the cat is here", "cat")
    assert s.score("THE CAT", "the cat") == pytest.approx(1.0)  # case-insensitive


def test_multi_metric_known_values_and_leniency() -> None:
    s = MultiMetricScorer()
    reference = "Paris is the capital of France"
    # Unrelated 20-word answer as long as the reference: completeness 1, length 1, keywords 0.
    unrelated = " ".join(["banana"] * 20)
    assert s.score(unrelated, reference) == pytest.approx(0.4 + 0.0 + 0.3)
    # 2 of the 3 reference keywords {paris, capital, france} -> keyword min(1, 2*2/3) = 1.
    assert s.score("paris capital", reference) == pytest.approx(
        0.4 * 2 / 20 + 0.3 * 1.0 + 0.3 * 2 / 6
    )


def test_composite_is_the_weighted_mean() -> None:
    c = CompositeScorer({"jaccard": 1.0, "token_f1": 3.0})
    expected = 0.25 * (4 / 6) + 0.75 * (5 / 6)
    assert c.score(CAT_A, CAT_R) == pytest.approx(expected)
    assert c.score_batch([(CAT_A, CAT_R), ("x", "y")]) == pytest.approx([expected, 0.0])
    with pytest.raises(ValueError):
        CompositeScorer({})
    with pytest.raises(ValueError):
        CompositeScorer({"jaccard": -1.0})


def test_keyword_recall_known_values() -> None:
    s = KeywordRecallScorer()
    # Reference keywords {paris, capital, france}; the answer has 2 of them.
    assert s.score("Paris is a capital city", "Paris is the capital of France") == pytest.approx(
        2 / 3
    )
    # Long answers are not punished: recall only.
    long_answer = "Paris is the capital of France. " + "It has many museums and cafes. " * 20
    assert s.score(long_answer, "Paris is the capital of France") == 1.0
    # A reference of stop words only falls back to all its tokens: {it, is} -> 1 of 2.
    assert s.score("it was", "it is") == pytest.approx(0.5)


def test_default_composite_weights() -> None:
    c = get_scorer("composite")
    # keyword recall: reference keywords {cat, mat} both in the answer -> 1; ROUGE-L 5/6.
    assert c.score(CAT_A, CAT_R) == pytest.approx(0.5 * 1.0 + 0.5 * 5 / 6)


# ------------------------------------------------------------------ Unicode


@pytest.mark.parametrize("name", ["jaccard", "token_f1", "rouge_l", "chrf", "keyword_recall"])
def test_unicode_identical_texts_score_one(name: str) -> None:
    s = get_scorer(name)
    for text in ["la canción está aquí", "我喜欢猫", "私は猫が好きです", "I love 🍕🍕", "Ёлка"]:
        assert s.score(text, text) == pytest.approx(1.0), text


@pytest.mark.parametrize("name", ["jaccard", "token_f1", "rouge_l", "keyword_recall"])
def test_accents_and_emoji_make_different_tokens(name: str) -> None:
    s = get_scorer(name)
    assert s.score("canción", "acción") == 0.0
    assert s.score("año", "ano") == 0.0
    assert s.score("🍕", "🍔") == 0.0
    assert 0.0 < s.score("I love 🍕", "I love 🍔") < 1.0


def test_cjk_partial_overlap() -> None:
    # 我 喜 欢 猫 vs 我 喜 欢 狗: LCS 3 of 4 on both sides.
    assert RougeLScorer().score("我喜欢猫", "我喜欢狗") == pytest.approx(0.75)
    assert TokenF1Scorer().score("我喜欢猫", "我喜欢狗") == pytest.approx(0.75)
    assert 0.0 < ChrFScorer().score("我喜欢猫", "我喜欢狗") < 1.0


def test_rouge_score_default_tokenizer_drops_non_ascii() -> None:
    """rouge-score lowercases and keeps only [a-z0-9]: CJK vanishes (identical Chinese texts
    score 0) and "canción" / "acción" share the fragment "n" (0.5). Ours: 1.0 and 0.0."""
    rouge_scorer = pytest.importorskip(
        "rouge_score.rouge_scorer", reason="rouge-score (dev extra) not installed"
    )
    theirs = rouge_scorer.RougeScorer(["rougeL"])
    ours = RougeLScorer()
    assert theirs.score("我喜欢猫", "我喜欢猫")["rougeL"].fmeasure == 0.0
    assert ours.score("我喜欢猫", "我喜欢猫") == 1.0
    assert theirs.score("canción", "acción")["rougeL"].fmeasure == pytest.approx(0.5)
    assert ours.score("canción", "acción") == 0.0
    # Same formula on ASCII text: the values agree.
    for a, r in [(CAT_A, CAT_R), ("a b c", "a c"), ("x y z w", "w z y x q")]:
        assert ours.score(a, r) == pytest.approx(theirs.score(r, a)["rougeL"].fmeasure)


# ------------------------------------------------------------------ empty and huge


@pytest.mark.parametrize("name", LEXICAL)
def test_empty_inputs(name: str) -> None:
    s = get_scorer(name)
    assert s.score("", "some reference") == 0.0
    assert s.score("   ", "some reference") == 0.0
    assert s.score_batch([]) == []
    # Nothing to compare must not pass, even when both sides are empty.
    assert s.score("", "") == 0.0
    if name != "multi_metric":  # the original score ignores an empty reference
        assert s.score("an answer", "") == 0.0
    if name != "chrf" and name != "composite":  # chrF compares characters, punctuation too
        assert s.score("!!!", "???") == 0.0


@pytest.mark.parametrize("name", LEXICAL)
def test_huge_inputs_are_bounded(name: str) -> None:
    s = get_scorer(name)
    huge = "lorem ipsum dolor sit amet consectetur " * 60_000  # ~2.3 MB
    started = time.perf_counter()
    value = s.score(huge, "lorem ipsum dolor sit amet")
    assert time.perf_counter() - started < 5.0
    assert 0.0 <= value <= 1.0
    # Only the first MAX_CHARS characters count.
    assert s.score(huge, huge) == pytest.approx(s.score(huge[:MAX_CHARS], huge[:MAX_CHARS]))


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=80), st.text(max_size=80))
def test_scores_are_in_unit_interval(answer: str, reference: str) -> None:
    for name in LEXICAL:
        value = get_scorer(name).score(answer, reference)
        assert 0.0 <= value <= 1.0 + 1e-12, (name, answer, reference)


@settings(max_examples=40, deadline=None)
@given(st.text(max_size=60), st.text(max_size=60))
def test_f1_scores_are_symmetric(answer: str, reference: str) -> None:
    for scorer in (JaccardScorer(), TokenF1Scorer(), RougeLScorer()):
        assert scorer.score(answer, reference) == pytest.approx(scorer.score(reference, answer))


# ------------------------------------------------------------------ details / language


def test_details_flag_cross_language_without_changing_the_score() -> None:
    s = get_scorer("token_f1")
    pairs = [
        ("El gato está en la alfombra y está durmiendo.", "The cat is on the mat and sleeping."),
        ("The cat is on the mat and it is sleeping.", "The cat is on the mat and sleeping."),
        ("Sí.", "The cat is on the mat and sleeping."),
    ]
    details = score_details(s, pairs)
    assert [d.cross_language for d in details] == [True, False, False]
    assert [(d.answer_lang, d.reference_lang) for d in details] == [
        ("es", "en"),
        ("en", "en"),
        ("und", "en"),
    ]
    assert [d.score for d in details] == s.score_batch(pairs)


def test_score_details_wraps_a_plain_scorer() -> None:
    class Plain:
        name = "plain"

        def score(self, answer: str, reference: str) -> float:
            return 0.5

        def score_batch(self, pairs: list[tuple[str, str]]) -> list[float]:
            return [0.5 for _ in pairs]

    assert score_details(Plain(), [("a", "b")]) == [ScoreDetail(score=0.5)]
