"""Calibrating the paraphrase cache (qaloop.core.paraphrase) on the Yahoo! Answers questions.

Pairs (seeded):
- paraphrases: each question rewritten the way people re-ask (a filler prefix or suffix,
  contractions expanded or made, case and punctuation changed). These rewrites are an input we
  construct, not a finding: they say how the matcher treats these kinds of rewording, not how
  often real users reword, nor how it treats rewordings with other words (synonyms).
- hard non-paraphrases, all real questions or minimal edits of them:
  `neighbour` the most similar *other* question of the data set (the hardest real negative),
  `negated` the question with "not" after its first auxiliary verb,
  `swapped` the question with its first and last content words swapped (roles reversed),
  `number` the question with a number changed (when it has one).

The threshold is the lowest one whose false-hit rate is at most `target_fhr` on every hard
family (the paraphrase match rate is what that buys). The extra hit rate replays Zipf traffic
where a request comes back reworded with probability `reword_p`: hits with exact ids only vs
with the paraphrase index, and how many paraphrase hits served another question's answer.
"""

from __future__ import annotations

import csv
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from qaloop.core.paraphrase import ParaphraseIndex, signature, similarity
from qaloop.report.tables import Cell, Table
from qaloop.traffic_model import popularity

THRESHOLDS = tuple(round(0.30 + 0.05 * i, 2) for i in range(15))  # 0.30 .. 1.00
FAMILIES = ("neighbour", "negated", "swapped", "number")
_AUX = re.compile(
    r"\b(is|are|was|were|do|does|did|can|could|will|would|should|has|have)\b(?!')",
    re.IGNORECASE,
)
_PREFIXES = ("Does anyone know ", "Can someone tell me ", "Quick question: ", "Hey, ", "Please, ")
_SUFFIXES = (" please?", " thanks!", " Any ideas?", "??", " (serious answers only)")
_CONTRACT = (
    ("what is", "what's"),
    ("do not", "don't"),
    ("is not", "isn't"),
    ("i am", "i'm"),
    ("how is", "how's"),
    ("it is", "it's"),
)


def load_titles(path: str | Path, limit: int = 3000) -> list[str]:
    titles: list[str] = []
    seen: set[str] = set()
    with Path(path).open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            title = (row.get("question_title") or "").strip()
            if len(signature(title).content) >= 3 and title.casefold() not in seen:
                seen.add(title.casefold())
                titles.append(title)
            if len(titles) >= limit:
                break
    return titles


def reword(question: str, rng: random.Random) -> str:
    text = question.rstrip("?!. ")
    low = text.lower()
    for long, short in _CONTRACT:
        if long in low and rng.random() < 0.5:
            text = re.sub(re.escape(long), short, text, flags=re.IGNORECASE)
            break
        if short in low and rng.random() < 0.5:
            text = re.sub(re.escape(short), long, text, flags=re.IGNORECASE)
            break
    if rng.random() < 0.5:
        text = text.lower()
    choice = rng.random()
    if choice < 0.45:
        text = rng.choice(_PREFIXES) + text[:1].lower() + text[1:] + "?"
    elif choice < 0.9:
        text = text + rng.choice(_SUFFIXES)
    else:
        text = text + "?"
    return text


def negate(question: str) -> str | None:
    m = _AUX.search(question)
    if m is None:
        return None
    return question[: m.end()] + " not" + question[m.end() :]


def swap_roles(question: str) -> str | None:
    words = question.split()
    idx = [
        i for i, w in enumerate(words) if signature(w).content and not any(c.isdigit() for c in w)
    ]
    if len(idx) < 2:
        return None
    i, j = idx[0], idx[-1]
    a, b = words[i].strip("?!.,"), words[j].strip("?!.,")
    if not a or not b or signature(a).content == signature(b).content:
        return None
    words[i] = words[i].replace(a, b)
    words[j] = words[j].replace(b, a)
    return " ".join(words)


def change_number(question: str) -> str | None:
    m = re.search(r"\d+", question)
    if m is None:
        return None
    return question[: m.start()] + str(int(m.group()) + 1) + question[m.end() :]


def neighbours(questions: Sequence[str]) -> tuple[list[tuple[str, str]], int]:
    """Each question with its most similar other question (by the matcher's own score), and
    how many such pairs were left out as duplicates: the same content words, negations and
    numbers in the same order (the same question asked twice in the data set, a restatement
    the cache is meant to serve, not a false hit)."""
    index = ParaphraseIndex(threshold=1e-9, capacity=len(questions) + 1)
    for i, q in enumerate(questions):
        index.add(str(i), q)
    pairs = []
    duplicates = 0
    for i, q in enumerate(questions):
        best = index.lookup(q, exclude=str(i))
        if best is None:
            continue
        other = questions[int(best[0])]
        if signature(other) == signature(q):
            duplicates += 1
            continue
        pairs.append((q, other))
    return pairs, duplicates


@dataclass
class Calibration:
    threshold: float
    target_fhr: float
    recall: dict[float, float]  # threshold -> paraphrase match rate
    fhr: dict[str, dict[float, float]]  # family -> threshold -> false-hit rate
    counts: dict[str, int]
    examples: dict[str, tuple[str, str, float]] = field(default_factory=dict)

    def table(self) -> Table:
        rows: list[list[Cell]] = []
        for t in THRESHOLDS:
            label = f"{t:.2f}" + (" (chosen)" if t == self.threshold else "")
            row: list[Cell] = [label, round(100 * self.recall[t], 1)]
            row += [round(100 * self.fhr[f][t], 2) for f in FAMILIES]
            rows.append(row)
        return Table(
            "Paraphrase matching by threshold: paraphrases matched vs false hits on hard "
            "non-paraphrases (%)",
            ["threshold", "paraphrases matched", *FAMILIES],
            rows,
            digits=2,
            note=f"pairs: {self.counts}; chosen: the lowest threshold with every false-hit "
            f"rate <= {100 * self.target_fhr:g} %",
        )


def calibrate(questions: Sequence[str], *, seed: int = 1, target_fhr: float = 0.01) -> Calibration:
    rng = random.Random(seed)
    positives = [(q, reword(q, rng)) for q in questions]
    near, duplicates = neighbours(questions)
    negatives: dict[str, list[tuple[str, str]]] = {
        "neighbour": near,
        "negated": [(q, n) for q in questions if (n := negate(q)) is not None],
        "swapped": [(q, s) for q in questions if (s := swap_roles(q)) is not None],
        "number": [(q, c) for q in questions if (c := change_number(q)) is not None],
    }

    def scores(pairs: list[tuple[str, str]]) -> list[float]:
        return [similarity(signature(a), signature(b)) for a, b in pairs]

    pos = scores(positives)
    neg = {f: scores(p) for f, p in negatives.items()}
    recall = {t: sum(s >= t for s in pos) / len(pos) for t in THRESHOLDS}
    fhr = {
        f: {t: (sum(s >= t for s in v) / len(v) if v else 0.0) for t in THRESHOLDS}
        for f, v in neg.items()
    }
    chosen = next((t for t in THRESHOLDS if all(fhr[f][t] <= target_fhr for f in FAMILIES)), 1.0)
    examples = {}
    for f, pairs in negatives.items():
        if pairs:
            score, (a, b) = max(zip(neg[f], pairs, strict=True), key=lambda x: x[0])
            examples[f] = (a, b, round(score, 3))
    counts = {"paraphrases": len(positives), **{f: len(v) for f, v in negatives.items()}}
    counts["duplicates_left_out"] = duplicates
    return Calibration(chosen, target_fhr, recall, fhr, counts, examples)


@dataclass(frozen=True, slots=True)
class HitRates:
    requests: int
    exact: float  # share of requests answered from the same question asked before
    with_paraphrase: float
    false_hits: float  # share of requests served another question's answer

    @property
    def extra(self) -> float:
        return self.with_paraphrase - self.exact


def hit_rates(
    questions: Sequence[str],
    threshold: float,
    *,
    requests: int = 20_000,
    reword_p: float = 0.3,
    zipf_s: float = 1.1,
    seed: int = 1,
) -> HitRates:
    """An unbounded cache: the hit rate a paraphrase index adds, not a policy's."""
    rng = random.Random(seed)
    order = popularity("zipf", len(questions), seed, zipf_s).sample(requests)
    index = ParaphraseIndex(threshold, capacity=len(questions) + 1)
    seen: set[str] = set()
    exact = para = false = 0
    for k in order:
        asked = questions[k]
        text = reword(asked, rng) if rng.random() < reword_p else asked
        key = text.casefold()
        if key in seen:
            exact += 1
            para += 1
            continue
        found = index.lookup(text)
        if found is not None:
            para += 1
            if found[0] != str(k):
                false += 1
        seen.add(key)
        index.add(str(k), asked)
    return HitRates(requests, exact / requests, para / requests, false / requests)
