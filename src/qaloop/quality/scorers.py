"""Lexical scorers and the weighted composite. Pure Python (+ rapidfuzz for LCS): no model.

Every scorer:
- maps (answer, reference) to [0, 1], higher = closer;
- tokenises with qaloop.quality.text (Unicode-aware: accents, CJK, emoji count);
- reads at most MAX_CHARS characters of each side (a 2 MB answer costs the same as a 20 kB one);
- scores 0.0 when either side has nothing to compare (no tokens / characters);
- reports per pair the detected languages and a `cross_language` flag (score_batch_detailed):
  the score itself is never altered, see docs/quality.md ("Language").
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache

from rapidfuzz.distance import LCSseq

from qaloop.quality.base import ScoreDetail, Scorer
from qaloop.quality.lang import UNDETERMINED, clear_language_cache, detect_language
from qaloop.quality.text import normalize
from qaloop.quality.text import tokens as _tokens

MAX_CHARS = 20_000


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# A small English + Spanish stop list for the keyword part of the multi-metric score.
STOPWORDS = _words(
    """a an the and or but if of to in on at by for with from as is are was were be been being
    it its this that these those i you he she we they me him her us them my your his our their
    what which who whom how why when where do does did not no so than then there here can could
    would should will just about into over also more most some any all very
    el la los las un una unos unas y o de del en que es por para con se no lo al su sus
    como"""
)


_CACHED_CHARS = 4_000


def tokens(text: str) -> tuple[str, ...]:
    """Cached for texts of ordinary size: a composite scorer tokenises each text of a batch
    once per part (the cache holds two judge batches of pairs). Long texts skip the cache, so
    it stays within ~100 MB even when every answer is long."""
    if len(text) > _CACHED_CHARS:
        return tuple(_tokens(text[:MAX_CHARS]))
    return _cached_tokens(text)


@lru_cache(maxsize=2048)
def _cached_tokens(text: str) -> tuple[str, ...]:
    return tuple(_tokens(text))


def clear_caches() -> None:
    """Forget cached tokens and languages (benchmarks measure cold scoring with it)."""
    _cached_tokens.cache_clear()
    clear_language_cache()


def _empty_rule(a_empty: bool, r_empty: bool) -> float | None:
    """An answer or a reference without tokens scores 0: nothing to compare must not pass."""
    if a_empty or r_empty:
        return 0.0
    return None


class BaseScorer:
    """Pairwise scoring with the batch and detailed methods derived from `score`."""

    name = "base"

    def score(self, answer: str, reference: str) -> float:
        raise NotImplementedError

    def score_batch(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        return [self.score(a, r) for a, r in pairs]

    def score_batch_detailed(self, pairs: Sequence[tuple[str, str]]) -> list[ScoreDetail]:
        return [
            detail(score, answer, reference)
            for score, (answer, reference) in zip(self.score_batch(pairs), pairs, strict=True)
        ]


def detail(score: float, answer: str, reference: str) -> ScoreDetail:
    a_lang = detect_language(answer[:MAX_CHARS])
    r_lang = detect_language(reference[:MAX_CHARS])
    cross = a_lang != UNDETERMINED and r_lang != UNDETERMINED and a_lang != r_lang
    return ScoreDetail(score=score, answer_lang=a_lang, reference_lang=r_lang, cross_language=cross)


class JaccardScorer(BaseScorer):
    """|A ∩ B| / |A ∪ B| over word sets: the original baseline (strict, language-blind)."""

    name = "jaccard"

    def score(self, answer: str, reference: str) -> float:
        a, b = set(tokens(answer)), set(tokens(reference))
        empty = _empty_rule(not a, not b)
        if empty is not None:
            return empty
        return len(a & b) / len(a | b)


class MultiMetricScorer(BaseScorer):
    """The original system's lenient score: completeness 0.4 + keyword overlap 0.3 + length 0.3.

    Reconstructed from its description: completeness saturates at 20 words, keyword overlap
    counts reference keywords found in the answer (doubled, capped at 1), length is the answer
    length relative to the reference (capped at 1). It rewards long answers regardless of
    content, which is why it passes almost everything (see docs/quality.md).
    """

    name = "multi_metric"

    def score(self, answer: str, reference: str) -> float:
        a_tokens = tokens(answer)
        r_tokens = tokens(reference)
        if not a_tokens:
            return 0.0
        completeness = min(1.0, len(a_tokens) / 20.0)
        ref_keywords = {t for t in r_tokens if t not in STOPWORDS}
        if ref_keywords:
            found = len(ref_keywords & set(a_tokens)) / len(ref_keywords)
            keyword = min(1.0, 2.0 * found)
        else:
            keyword = 1.0
        length = min(1.0, len(a_tokens) / len(r_tokens)) if r_tokens else 1.0
        return 0.4 * completeness + 0.3 * keyword + 0.3 * length


def _overlap(a: Counter[str], b: Counter[str]) -> int:
    """sum(min(a[k], b[k])): the multiset intersection size, without building it."""
    if len(a) > len(b):
        a, b = b, a
    get = b.get
    total = 0
    for key, count in a.items():
        other = get(key)
        if other:
            total += count if count < other else other
    return total


def _f1(overlap: float, n_answer: int, n_reference: int) -> float:
    if overlap <= 0:
        return 0.0
    precision = overlap / n_answer
    recall = overlap / n_reference
    return 2 * precision * recall / (precision + recall)


class TokenF1Scorer(BaseScorer):
    """SQuAD-style bag-of-tokens F1: multiset overlap, precision over the answer, recall over
    the reference. Order-blind; rewards answers that reuse the reference's words."""

    name = "token_f1"

    def score(self, answer: str, reference: str) -> float:
        a, r = tokens(answer), tokens(reference)
        empty = _empty_rule(not a, not r)
        if empty is not None:
            return empty
        overlap = _overlap(Counter(a), Counter(r))
        return _f1(overlap, len(a), len(r))


class RougeLScorer(BaseScorer):
    """ROUGE-L F1 (beta = 1, as rouge-score reports `fmeasure`): the longest common
    subsequence of the two token lists, computed by rapidfuzz's bit-parallel LCS.

    Same formula as rouge-score's rougeL, but with qaloop's Unicode-aware tokens: rouge-score's
    default tokenizer keeps only [a-z0-9], so "canción" becomes "canci n" and CJK text vanishes.
    """

    name = "rouge_l"

    def score(self, answer: str, reference: str) -> float:
        a, r = tokens(answer), tokens(reference)
        empty = _empty_rule(not a, not r)
        if empty is not None:
            return empty
        lcs = LCSseq.similarity(a, r)
        return _f1(float(lcs), len(a), len(r))


class ChrFScorer(BaseScorer):
    """chrF (Popović 2015) as sacrebleu computes it: character n-grams of orders 1..6 with
    whitespace removed, precision and recall averaged over the orders present in both texts,
    then F-beta with beta = 2 (recall weighs 4x precision). Reported in [0, 1] (sacrebleu
    reports x100) on casefolded NFC text, so it is case-insensitive (sacrebleu's default isn't).
    Script-agnostic: works for accents and CJK without any tokeniser."""

    name = "chrf"
    order = 6
    beta = 2.0

    @staticmethod
    def _chars(text: str) -> str:
        return "".join(normalize(text[:MAX_CHARS]).split())

    def score(self, answer: str, reference: str) -> float:
        a, r = self._chars(answer), self._chars(reference)
        empty = _empty_rule(not a, not r)
        if empty is not None:
            return empty
        precision_sum = recall_sum = 0.0
        orders = 0
        for n in range(1, self.order + 1):
            if len(a) < n or len(r) < n:
                break
            a_grams = Counter([a[i : i + n] for i in range(len(a) - n + 1)])
            r_grams = Counter([r[i : i + n] for i in range(len(r) - n + 1)])
            matches = _overlap(a_grams, r_grams)
            precision_sum += matches / (len(a) - n + 1)
            recall_sum += matches / (len(r) - n + 1)
            orders += 1
        if orders == 0:
            return 0.0
        precision, recall = precision_sum / orders, recall_sum / orders
        if precision + recall == 0:
            return 0.0
        factor = self.beta**2
        return (1 + factor) * precision * recall / (factor * precision + recall)


class KeywordRecallScorer(BaseScorer):
    """Share of the reference's keywords (distinct tokens that are not stop words) found in
    the answer. Recall only: an LLM answer is often several times longer than the human
    reference, and precision-based scores (Jaccard, F1) punish that length whatever the
    content. A reference made only of stop words falls back to all its tokens."""

    name = "keyword_recall"

    def score(self, answer: str, reference: str) -> float:
        a, r = set(tokens(answer)), set(tokens(reference))
        empty = _empty_rule(not a, not r)
        if empty is not None:
            return empty
        keywords = (r - STOPWORDS) or r
        return len(keywords & a) / len(keywords)


# Weights chosen on the recorded answers (docs/quality.md): the best true-vs-shuffled AUC among
# the lexical combinations tried, and fast (no character n-grams).
DEFAULT_COMPOSITE = {"keyword_recall": 0.5, "rouge_l": 0.5}
EMBEDDING_COMPOSITE = {"embedding": 0.5, "chrf": 0.5}


def _lexical(name: str) -> Scorer:
    try:
        return LEXICAL[name]()
    except KeyError:
        raise ValueError(f"unknown scorer {name!r}; choose one of {sorted(LEXICAL)}") from None


class CompositeScorer(BaseScorer):
    """Weighted mean of other scorers (weights normalised to sum 1); each part is batched."""

    def __init__(
        self,
        weights: Mapping[str, float],
        name: str = "composite",
        resolve: Callable[[str], Scorer] | None = None,
    ) -> None:
        if not weights or any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
            raise ValueError(f"composite weights must be >= 0 with a positive sum: {weights}")
        total = sum(weights.values())
        self.name = name
        self.weights = {k: w / total for k, w in weights.items()}
        # Parts by name: this module's scorers, or any registered one (the registry passes its
        # own lookup, which keeps this module free of an import of the registry).
        lookup = resolve or _lexical
        self.parts: dict[str, Scorer] = {k: lookup(k) for k in self.weights}

    def score(self, answer: str, reference: str) -> float:
        return self.score_batch([(answer, reference)])[0]

    def score_batch(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        totals = [0.0] * len(pairs)
        for key, part in self.parts.items():
            weight = self.weights[key]
            for i, value in enumerate(part.score_batch(pairs)):
                totals[i] += weight * value
        return [min(1.0, max(0.0, t)) for t in totals]


# The scorers this module defines, by name (qaloop.quality.registry adds the rest).
LEXICAL: dict[str, Callable[[], Scorer]] = {
    "jaccard": JaccardScorer,
    "multi_metric": MultiMetricScorer,
    "token_f1": TokenF1Scorer,
    "rouge_l": RougeLScorer,
    "chrf": ChrFScorer,
    "keyword_recall": KeywordRecallScorer,
}
