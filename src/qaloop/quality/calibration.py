"""Threshold calibration from recorded answers: pure computation, no plotting (see
qaloop.cli.calibrate for the command, the PNG plots and the markdown report).

Method (docs/quality.md explains the choices):
- Pairs are (LLM answer, human reference). Each pair gets the languages of both sides
  (qaloop.quality.lang) and falls in one group: same language (both sides detected, equal),
  cross-language (both detected, different) or undetermined (a side too short or unclear).
  The threshold is calibrated on the same-language group; the other two are reported apart,
  since a lexical or an English-only embedding comparison across languages says nothing
  about answer quality.
- Negative control: every same-language answer is also scored against the reference of
  another, randomly chosen question of the same source (a seeded derangement within each
  source, so that answer and reference lengths stay typical of that source). A scorer that
  means something scores the true pairs above these mismatched ones:
  AUC = P(true score > mismatched score).
- Threshold sweep: pass rate p(t) on the true same-language pairs, false-pass rate on the
  mismatched pairs, and the cost of the feedback loop with `max_attempts` attempts:
  * independent model: each attempt is a fresh draw that passes with probability p, so
    E[LLM calls per question] = sum_{k<m} (1-p)^k, extra calls = that - 1, and the share
    given up = (1-p)^m (optimistic: a hard question tends to fail again);
  * correlated bound: an answer that failed once fails every time, so extra calls =
    (1-p)(m-1) and the share given up = 1-p (pessimistic).
- Candidate threshold for a scorer: the smallest t (0.01 grid) whose false-pass rate on the
  mismatched pairs is <= the target (default 5 %): an unrelated answer rarely passes.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from qaloop.quality.base import Scorer
from qaloop.quality.lang import UNDETERMINED, detect_language

ANSWER_FIELDS = ("llm_answer", "answer")
REFERENCE_FIELDS = ("original_answer", "reference", "reference_answer", "best_answer")
SWEEP = tuple(round(0.05 * i, 2) for i in range(21))
# Box-drawing and other CP437 glyphs that show up when UTF-8 bytes were decoded as CP437.
_MOJIBAKE_MARKS = frozenset("├┬┤│┼╜╝╗╚║═∞Γ")


class CalibrationInputError(ValueError):
    pass


@dataclass(slots=True)
class Pair:
    answer: str
    reference: str
    question: str = ""
    source: str = ""
    recorded_score: float | None = None
    answer_lang: str = UNDETERMINED
    reference_lang: str = UNDETERMINED

    @property
    def cross_language(self) -> bool:
        a, r = self.answer_lang, self.reference_lang
        return a != UNDETERMINED and r != UNDETERMINED and a != r

    @property
    def group(self) -> str:
        """ "same", "cross" or "undetermined" (see the module docstring)."""
        if UNDETERMINED in (self.answer_lang, self.reference_lang):
            return "undetermined"
        return "cross" if self.answer_lang != self.reference_lang else "same"


@dataclass(slots=True)
class LoadStats:
    rows: int = 0
    skipped: int = 0
    repaired: int = 0


def repair_mojibake(text: str) -> tuple[str, bool]:
    """Undo UTF-8 text that was decoded as CP437 ("canci├│n" -> "canción"), when it round-trips."""
    if not any(c in _MOJIBAKE_MARKS for c in text):
        return text, False
    try:
        fixed = text.encode("cp437").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return text, False
    return fixed, fixed != text


def _first(row: Mapping[str, Any], names: Iterable[str]) -> str | None:
    for name in names:
        value = row.get(name)
        if isinstance(value, str):
            return value
    return None


def load_pairs(path: Path, repair: bool = True) -> tuple[list[Pair], LoadStats]:
    """Read a JSONL file of {llm_answer|answer, original_answer|reference, [question], [source],
    [score]}; rows without both texts are skipped (counted)."""
    pairs: list[Pair] = []
    stats = LoadStats()
    with path.open("rb") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            stats.rows += 1
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise CalibrationInputError(f"{path}:{line_no}: invalid JSON ({exc})") from exc
            if not isinstance(row, dict):
                raise CalibrationInputError(f"{path}:{line_no}: expected a JSON object")
            answer, reference = _first(row, ANSWER_FIELDS), _first(row, REFERENCE_FIELDS)
            if answer is None or reference is None or not reference.strip():
                stats.skipped += 1
                continue
            if repair:
                answer, fixed_a = repair_mojibake(answer)
                reference, fixed_r = repair_mojibake(reference)
                stats.repaired += int(fixed_a or fixed_r)
            recorded = row.get("score")
            pair = Pair(
                answer=answer,
                reference=reference,
                question=str(row.get("question") or ""),
                source=str(row.get("source") or "").split(":")[0],
                recorded_score=float(recorded) if isinstance(recorded, int | float) else None,
            )
            pair.answer_lang = detect_language(answer[:5000])
            pair.reference_lang = detect_language(reference[:5000])
            pairs.append(pair)
    if not pairs:
        raise CalibrationInputError(f"{path}: no (answer, reference) pairs")
    return pairs, stats


# ----------------------------------------------------------------------------- statistics


def ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties get the average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    result = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        avg = (i + j) / 2 + 1
        for k in range(i, j + 1):
            result[order[k]] = avg
        i = j + 1
    return result


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    n = len(x)
    if n < 2 or n != len(y):
        return math.nan
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    if sxx == 0 or syy == 0:
        return math.nan
    return sxy / math.sqrt(sxx * syy)


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho: Pearson correlation of the (tie-averaged) ranks."""
    return pearson(ranks(x), ranks(y))


def auc(positives: Sequence[float], negatives: Sequence[float]) -> float:
    """P(positive > negative) + 0.5 P(tie) (Mann-Whitney U / (n1 n2))."""
    n1, n2 = len(positives), len(negatives)
    if n1 == 0 or n2 == 0:
        return math.nan
    r = ranks([*positives, *negatives])
    u = sum(r[:n1]) - n1 * (n1 + 1) / 2
    return u / (n1 * n2)


def pass_rate(scores: Sequence[float], threshold: float) -> float:
    if not scores:
        return math.nan
    return sum(1 for s in scores if s >= threshold) / len(scores)


@dataclass(frozen=True, slots=True)
class LoopCost:
    """Feedback-loop cost per question for a per-attempt pass probability p."""

    calls: float  # expected LLM calls per question (independent attempts)
    extra_calls: float  # calls - 1
    given_up: float  # share of questions that exhaust max_attempts
    extra_calls_correlated: float  # bound when a failed question always fails again
    given_up_correlated: float


def loop_cost(p: float, max_attempts: int) -> LoopCost:
    q = 1.0 - p
    calls = sum(q**k for k in range(max_attempts))
    return LoopCost(
        calls=calls,
        extra_calls=calls - 1.0,
        given_up=q**max_attempts,
        extra_calls_correlated=q * (max_attempts - 1),
        given_up_correlated=q,
    )


def quantile(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def threshold_for_false_pass(negatives: Sequence[float], target: float) -> float:
    """Smallest threshold on a 0.01 grid whose pass rate on `negatives` is <= target."""
    for step in range(101):
        t = step / 100
        if pass_rate(negatives, t) <= target:
            return t
    return 1.0


def derangement(n: int, rng: random.Random) -> list[int]:
    """A random permutation with no fixed point (n >= 2): a shuffled-reference control."""
    if n < 2:
        raise ValueError("a derangement needs at least 2 items")
    while True:
        perm = list(range(n))
        rng.shuffle(perm)
        if all(i != j for i, j in enumerate(perm)):
            return perm


def stratified_derangement(strata: Sequence[str], rng: random.Random) -> list[tuple[int, int]]:
    """(i, j) pairs, i != j, mapping each item to another item of the same stratum (source),
    so that the shuffled control keeps each source's answer and reference lengths. Items
    alone in their stratum are pooled together; a single leftover item is left out."""
    groups: dict[str, list[int]] = {}
    for i, stratum in enumerate(strata):
        groups.setdefault(stratum, []).append(i)
    pooled = [m[0] for m in groups.values() if len(m) == 1]
    buckets = [m for m in groups.values() if len(m) >= 2]
    if len(pooled) >= 2:
        buckets.append(pooled)
    mapping: list[tuple[int, int]] = []
    for members in buckets:
        for k, j in enumerate(derangement(len(members), rng)):
            mapping.append((members[k], members[j]))
    return sorted(mapping)


# ----------------------------------------------------------------------------- calibration


@dataclass(slots=True)
class SweepRow:
    threshold: float
    pass_rate: float  # same-language true pairs
    false_pass: float  # mismatched (shuffled-reference) pairs
    pass_rate_cross: float  # cross-language pairs
    pass_rate_und: float  # pairs with a language undetermined
    pass_rate_all: float
    cost: LoopCost


@dataclass(slots=True)
class Example:
    score: float
    answer: str
    reference: str
    question: str


@dataclass(slots=True)
class ScorerResult:
    name: str
    scores: list[float]  # aligned with CalibrationResult.pairs
    shuffled: list[float]  # the control: same-language answers vs other questions' references
    auc: float
    mean_same: float
    mean_cross: float
    mean_und: float
    mean_shuffled: float
    candidate: float
    candidate_row: SweepRow
    sweep: list[SweepRow]
    above: list[Example] = field(default_factory=list)
    below: list[Example] = field(default_factory=list)
    recorded_spearman: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass(slots=True)
class CalibrationResult:
    pairs: list[Pair]
    load: LoadStats
    same_idx: list[int]
    cross_idx: list[int]
    und_idx: list[int]
    max_attempts: int
    target_false_pass: float
    seed: int
    scorers: dict[str, ScorerResult]
    spearman_same: dict[tuple[str, str], float]
    languages: Counter[tuple[str, str]]
    skipped_scorers: dict[str, str]


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _boundary(
    pairs: Sequence[Pair], idx: Sequence[int], scores: Sequence[float], t: float, k: int
) -> tuple[list[Example], list[Example]]:
    """The k same-language pairs scoring just at/above t and the k just below it."""
    ordered = sorted(idx, key=lambda i: scores[i])
    above = [i for i in ordered if scores[i] >= t][:k]
    below = [i for i in ordered if scores[i] < t][-k:][::-1]

    def ex(i: int) -> Example:
        p = pairs[i]
        return Example(scores[i], p.answer, p.reference, p.question)

    return [ex(i) for i in above], [ex(i) for i in below]


def calibrate(
    pairs: list[Pair],
    load: LoadStats,
    scorers: Mapping[str, Scorer],
    *,
    max_attempts: int = 3,
    target_false_pass: float = 0.05,
    seed: int = 0,
    examples: int = 2,
    skipped_scorers: Mapping[str, str] | None = None,
    progress: Any = None,
) -> CalibrationResult:
    import time

    same_idx = [i for i, p in enumerate(pairs) if p.group == "same"]
    cross_idx = [i for i, p in enumerate(pairs) if p.group == "cross"]
    und_idx = [i for i, p in enumerate(pairs) if p.group == "undetermined"]
    control = stratified_derangement([pairs[i].source for i in same_idx], random.Random(seed))
    shuffled_pairs = [(pairs[same_idx[i]].answer, pairs[same_idx[j]].reference) for i, j in control]
    languages: Counter[tuple[str, str]] = Counter((p.answer_lang, p.reference_lang) for p in pairs)

    results: dict[str, ScorerResult] = {}
    for name, scorer in scorers.items():
        started = time.perf_counter()
        scores = scorer.score_batch([(p.answer, p.reference) for p in pairs])
        shuffled = scorer.score_batch(shuffled_pairs) if shuffled_pairs else []
        seconds = time.perf_counter() - started
        same = [scores[i] for i in same_idx]
        cross = [scores[i] for i in cross_idx]
        und = [scores[i] for i in und_idx]
        sweep: list[SweepRow] = []
        candidate = threshold_for_false_pass(shuffled, target_false_pass) if shuffled else 0.5
        grid = sorted({*SWEEP, candidate})
        for t in grid:
            p = pass_rate(same, t)
            sweep.append(
                SweepRow(
                    threshold=t,
                    pass_rate=p,
                    false_pass=pass_rate(shuffled, t),
                    pass_rate_cross=pass_rate(cross, t),
                    pass_rate_und=pass_rate(und, t),
                    pass_rate_all=pass_rate(scores, t),
                    cost=loop_cost(0.0 if math.isnan(p) else p, max_attempts),
                )
            )
        candidate_row = next(r for r in sweep if r.threshold == candidate)
        above, below = _boundary(pairs, same_idx, scores, candidate, examples)
        recorded: dict[str, float] = {}
        by_source: dict[str, list[int]] = {}
        for i in same_idx:
            if pairs[i].recorded_score is not None:
                by_source.setdefault(pairs[i].source or "?", []).append(i)
        for source, idx in sorted(by_source.items()):
            if len(idx) >= 10:
                recorded[source] = spearman(
                    [scores[i] for i in idx], [pairs[i].recorded_score or 0.0 for i in idx]
                )
        results[name] = ScorerResult(
            name=name,
            scores=scores,
            shuffled=shuffled,
            auc=auc(same, shuffled),
            mean_same=_mean(same),
            mean_cross=_mean(cross),
            mean_und=_mean(und),
            mean_shuffled=_mean(shuffled),
            candidate=candidate,
            candidate_row=candidate_row,
            sweep=sweep,
            above=above,
            below=below,
            recorded_spearman=recorded,
            seconds=seconds,
        )
        if progress is not None:
            progress(name, seconds)

    names = list(results)
    spearman_same: dict[tuple[str, str], float] = {}
    for a in names:
        for b in names:
            xa = [results[a].scores[i] for i in same_idx]
            xb = [results[b].scores[i] for i in same_idx]
            spearman_same[(a, b)] = 1.0 if a == b else spearman(xa, xb)
    return CalibrationResult(
        pairs=pairs,
        load=load,
        same_idx=same_idx,
        cross_idx=cross_idx,
        und_idx=und_idx,
        max_attempts=max_attempts,
        target_false_pass=target_false_pass,
        seed=seed,
        scorers=results,
        spearman_same=spearman_same,
        languages=languages,
        skipped_scorers=dict(skipped_scorers or {}),
    )


def summary_json(result: CalibrationResult) -> dict[str, Any]:
    """The numbers of a calibration, without any text of the input (safe to keep)."""
    return {
        "pairs": len(result.pairs),
        "rows": result.load.rows,
        "skipped_rows": result.load.skipped,
        "mojibake_repaired": result.load.repaired,
        "same_language": len(result.same_idx),
        "cross_language": len(result.cross_idx),
        "undetermined_language": len(result.und_idx),
        "language_pairs": {f"{a}/{r}": n for (a, r), n in result.languages.most_common()},
        "max_attempts": result.max_attempts,
        "target_false_pass": result.target_false_pass,
        "seed": result.seed,
        "skipped_scorers": result.skipped_scorers,
        "scorers": {
            name: {
                "auc_true_vs_shuffled": r.auc,
                "mean_same_language": r.mean_same,
                "mean_cross_language": r.mean_cross,
                "mean_undetermined_language": r.mean_und,
                "mean_shuffled": r.mean_shuffled,
                "candidate_threshold": r.candidate,
                "seconds": r.seconds,
                "spearman_vs_recorded_score": r.recorded_spearman,
                "sweep": [
                    {
                        "threshold": row.threshold,
                        "pass_rate_same_language": row.pass_rate,
                        "false_pass_shuffled": row.false_pass,
                        "pass_rate_cross_language": row.pass_rate_cross,
                        "pass_rate_undetermined_language": row.pass_rate_und,
                        "pass_rate_all": row.pass_rate_all,
                        "expected_calls": row.cost.calls,
                        "extra_calls": row.cost.extra_calls,
                        "given_up": row.cost.given_up,
                        "extra_calls_correlated": row.cost.extra_calls_correlated,
                        "given_up_correlated": row.cost.given_up_correlated,
                    }
                    for row in r.sweep
                ],
            }
            for name, r in result.scorers.items()
        },
        "spearman_same_language": {
            f"{a}~{b}": v for (a, b), v in result.spearman_same.items() if a < b
        },
    }
