"""Paraphrase matching for the cache (off by default: docs/spend.md). Pure: no I/O.

A question that means the same as one already answered may be served that answer. Lexical
matching on content words, with guards for what cosine-style similarity gets wrong:

- content words: case-folded word tokens, stop words and question fillers removed ("does
  anyone know", "please"), a light plural/verb-ending stem; similarity = Jaccard of the sets;
- negation must agree (the same number of negation words): "why is the sky blue" never
  matches "why is the sky not blue";
- numbers must agree, in order: "in 1990" is not "in 1999" (any token with a digit);
- order of the shared content words must agree when the sets are the same, so swapped roles
  ("does a cat chase a dog" / "does a dog chase a cat") never match. (Some true paraphrases
  that only reorder are missed: a cost we take for no false hit.)

The threshold is calibrated (qaloop.report.paraphrase_experiment) on paraphrase pairs vs
hard non-paraphrases drawn from the Yahoo! Answers questions.
"""

from __future__ import annotations

import re
from collections import OrderedDict, defaultdict
from dataclasses import dataclass

_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?", re.UNICODE)

NEGATIONS = frozenset(
    {
        "not",
        "no",
        "never",
        "none",
        "nobody",
        "nothing",
        "neither",
        "nor",
        "without",
        "cannot",
        "isnt",
        "arent",
        "wasnt",
        "werent",
        "dont",
        "doesnt",
        "didnt",
        "cant",
        "couldnt",
        "wont",
        "wouldnt",
        "shouldnt",
        "hasnt",
        "havent",
        "hadnt",
        "mustnt",
    }
)
STOP_WORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "to",
        "in",
        "on",
        "at",
        "for",
        "from",
        "by",
        "with",
        "about",
        "as",
        "into",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "am",
        "do",
        "does",
        "did",
        "doing",
        "have",
        "has",
        "had",
        "having",
        "i",
        "me",
        "my",
        "we",
        "our",
        "you",
        "your",
        "he",
        "she",
        "it",
        "its",
        "they",
        "them",
        "their",
        "this",
        "that",
        "these",
        "those",
        "there",
        "here",
        "what",
        "which",
        "who",
        "whom",
        "whose",
        "why",
        "how",
        "when",
        "where",
        "can",
        "could",
        "would",
        "should",
        "will",
        "shall",
        "may",
        "might",
        "must",
        "and",
        "or",
        "but",
        "if",
        "so",
        "than",
        "then",
        "very",
        "just",
        "also",
        "any",
        "some",
        "anyone",
        "someone",
        "somebody",
        "anybody",
        "know",
        "tell",
        "please",
        "help",
        "thanks",
        "thank",
        "question",
        "quick",
        "hi",
        "hello",
        "hey",
        "guys",
        "folks",
        "ok",
        "okay",
        "really",
    ]
)


def _stem(word: str) -> str:
    for suffix, keep in (("ies", "y"), ("sses", "ss"), ("ing", ""), ("ed", ""), ("es", ""),
                         ("s", "")):  # fmt: skip
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: len(word) - len(suffix)] + keep
    return word


@dataclass(frozen=True, slots=True)
class Signature:
    content: tuple[str, ...]  # content-word stems in question order (duplicates dropped)
    negations: int  # how many negation words ("not", "never", "won't", ...)
    numbers: tuple[str, ...]  # every token with a digit, in order ("1990", "62mph")

    @property
    def terms(self) -> frozenset[str]:
        return frozenset(self.content)


def signature(question: str) -> Signature:
    words: list[str] = []
    for raw in _WORD.findall(question.casefold().replace("\u2019", "'")):
        if raw.endswith("n't"):  # don't, won't, isn't: a negation
            words.append(raw.replace("'", ""))
        else:  # what's, it's, john's: the word before the apostrophe
            words.append(raw.split("'", 1)[0])
    negations = sum(1 for w in words if w in NEGATIONS)
    numbers = tuple(w for w in words if any(c.isdigit() for c in w))
    content: list[str] = []
    for w in words:
        if w in STOP_WORDS or w in NEGATIONS or any(c.isdigit() for c in w):
            continue
        stem = _stem(w)
        if stem not in content:
            content.append(stem)
    return Signature(tuple(content), negations, numbers)


def similarity(a: Signature, b: Signature) -> float:
    """Jaccard of the content terms; 0 when a guard (negation, numbers, order) says no."""
    if a.negations != b.negations or a.numbers != b.numbers:
        return 0.0
    ta, tb = a.terms, b.terms
    if not ta or not tb:
        return 0.0
    if ta == tb and a.content != b.content:
        return 0.0  # the same words in another order: maybe swapped roles
    return len(ta & tb) / len(ta | tb)


class ParaphraseIndex:
    """Answered questions by content term, for look-ups of new ones. At most `capacity`
    entries (the oldest go first)."""

    def __init__(self, threshold: float, capacity: int = 100_000) -> None:
        if not 0 < threshold <= 1:
            raise ValueError("paraphrase threshold must be in (0, 1]")
        self.threshold = threshold
        self.capacity = capacity
        self._entries: OrderedDict[str, Signature] = OrderedDict()
        self._by_term: dict[str, set[str]] = defaultdict(set)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, question_id: object) -> bool:
        return question_id in self._entries

    def add(self, question_id: str, question: str) -> None:
        if question_id in self._entries:
            return
        sig = signature(question)
        if not sig.content:
            return
        self._entries[question_id] = sig
        for term in sig.terms:
            self._by_term[term].add(question_id)
        while len(self._entries) > self.capacity:
            old_id, old = self._entries.popitem(last=False)
            for term in old.terms:
                ids = self._by_term.get(term)
                if ids is not None:
                    ids.discard(old_id)
                    if not ids:
                        del self._by_term[term]

    def discard(self, question_id: str) -> None:
        sig = self._entries.pop(question_id, None)
        if sig is not None:
            for term in sig.terms:
                self._by_term.get(term, set()).discard(question_id)

    def lookup(self, question: str, exclude: str | None = None) -> tuple[str, float] | None:
        """The best stored question at or above the threshold, with its similarity."""
        sig = signature(question)
        if not sig.content:
            return None
        # A match needs Jaccard >= t, so it shares at least t * |terms| of our terms: look
        # only at questions sharing one of our terms.
        candidates: set[str] = set()
        for term in sig.terms:
            candidates |= self._by_term.get(term, set())
        best: tuple[str, float] | None = None
        for qid in candidates:
            if qid == exclude:
                continue
            score = similarity(sig, self._entries[qid])
            if score >= self.threshold and (best is None or score > best[1]):
                best = (qid, score)
        return best
