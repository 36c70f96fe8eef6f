"""The paraphrase part of `qaloop experiment cache --paraphrase-data CSV` (docs/spend.md)."""

from __future__ import annotations

from pathlib import Path

from qaloop.report.paraphrase_experiment import (
    FAMILIES,
    calibrate,
    hit_rates,
    load_titles,
)
from qaloop.report.render import Section


def paraphrase_section(data: Path, n_questions: int, seed: int) -> tuple[Section, list[str]]:
    questions = load_titles(data, n_questions)
    cal = calibrate(questions, seed=seed)
    t = cal.threshold
    rates = hit_rates(questions, t, seed=seed)
    fhr = ", ".join(f"{f} {100 * cal.fhr[f][t]:.2f} %" for f in FAMILIES)
    lines = [
        f"Paraphrase cache: calibrated threshold {t:.2f} on {len(questions)} questions: "
        f"{100 * cal.recall[t]:.1f} % of the paraphrases matched; false-hit rates {fhr}.",
        f"Paraphrase cache on Zipf traffic (30 % of requests reworded): hit rate "
        f"{100 * rates.exact:.1f} % exact -> {100 * rates.with_paraphrase:.1f} % with it "
        f"(+{100 * rates.extra:.1f} points); {100 * rates.false_hits:.3f} % of requests served "
        "another question's answer.",
    ]
    examples = "; ".join(f"{f}: {a!r} vs {b!r} ({s})" for f, (a, b, s) in cal.examples.items())
    section = Section(
        "Paraphrase cache",
        "Paraphrases are rewordings we construct (fillers, contractions, case, punctuation): an "
        "input, not a finding. Hard non-paraphrases are real: each question's most similar "
        "other question, and minimal edits (negation, swapped roles, a changed number). "
        f"Highest-scoring hard pair per family: {examples}.",
        [cal.table()],
    )
    return section, lines
