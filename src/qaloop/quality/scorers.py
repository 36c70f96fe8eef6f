"""Lexical scorers. Tokenisation is Unicode-aware: accents, CJK and other scripts count."""

from __future__ import annotations

import re
from collections.abc import Sequence

from qaloop.quality.base import register

_WORD = re.compile(r"\w+", re.UNICODE)

# A small English + Spanish stop list for the keyword part of the multi-metric score.
STOPWORDS = frozenset(
    """a an the and or but if of to in on at by for with from as is are was were be been being
    it its this that these those i you he she we they me him her us them my your his our their
    what which who whom how why when where do does did not no so than then there here can could
    would should will just about into over also more most some any all very
    el la los las un una unos unas y o de del en que es por para con se no lo al su sus como""".split()
)


def tokens(text: str) -> list[str]:
    return _WORD.findall(text.casefold())


class _PairwiseScorer:
    name = "base"

    def score(self, answer: str, reference: str) -> float:
        raise NotImplementedError

    def score_batch(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        return [self.score(a, r) for a, r in pairs]


class JaccardScorer(_PairwiseScorer):
    """|A ∩ B| / |A ∪ B| over word sets: the original baseline (strict, language-blind)."""

    name = "jaccard"

    def score(self, answer: str, reference: str) -> float:
        a, b = set(tokens(answer)), set(tokens(reference))
        if not a and not b:
            return 1.0
        if not a or not b:
            return 0.0
        return len(a & b) / len(a | b)


class MultiMetricScorer(_PairwiseScorer):
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


register("jaccard", JaccardScorer)
register("multi_metric", MultiMetricScorer)
