"""Share of the recorded answers the cascade would send to the LLM judge, per uncertain band.

    PYTHONPATH=src .venv/bin/python bench/bench_cascade_share.py [--scorer composite]

Reads ../shared/data/llm_answers.jsonl (or $QALOOP_SHARED_DATA/llm_answers.jsonl; research-only,
never copied into the repository). Every recorded answer has a reference, so this is the share
among answers *with* one; answers to questions without a reference always go to the LLM judge.

It also calibrates the band: on the rows an LLM judge graded (Dhater/Sistemas2, grok grades
0-10, a few on 0-100; bad = grade <= 5), how often the cheap gate's decision agrees with the
grade, by distance of the cheap score from the threshold. The band should cover the distances
where the cheap gate is little better than a coin.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from qaloop.quality import get_scorer
from qaloop.quality.cascade import ScorerGate
from qaloop.quality.verdict import GateInput, Outcome

_DEFAULT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
DATA = Path(os.environ.get("QALOOP_SHARED_DATA", _DEFAULT))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scorer", default="composite")
    p.add_argument("--threshold", type=float, default=0.14)
    p.add_argument("--bands", default="0,0.02,0.03,0.04,0.05")
    a = p.parse_args()
    path = DATA / "llm_answers.jsonl"
    if not path.is_file():
        sys.exit(f"recorded answers not found at {path} (set QALOOP_SHARED_DATA)")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    items = [GateInput(r["question"], r["llm_answer"], r["original_answer"]) for r in rows]
    graded = [r for r in rows if r["source"].startswith("Dhater/") and r["score"] is not None]
    scorer = get_scorer(a.scorer)
    scores = scorer.score_batch([(r["llm_answer"], r["original_answer"]) for r in graded])
    bins: dict[int, list[int]] = {}
    for s, r in zip(scores, graded, strict=True):
        grade = r["score"] / 10 if r["score"] > 10 else r["score"]
        b = min(int(abs(s - a.threshold) / 0.02), 6)
        agree = (s >= a.threshold) == (grade > 5)
        bins.setdefault(b, [0, 0])
        bins[b][0] += agree
        bins[b][1] += 1
    print(f"agreement with the LLM-judge grades ({len(graded)} graded answers):")
    for b in sorted(bins):
        lo, hi = b * 0.02, (b + 1) * 0.02
        span = f"[{lo:.2f}, {hi:.2f})" if b < 6 else f">= {lo:.2f}"
        ok, n = bins[b]
        print(f"  |score - threshold| {span}: n {n}, agree {100 * ok / n:.0f} %")
    for band in (float(b) for b in a.bands.split(",")):
        verdicts = ScorerGate(get_scorer(a.scorer), a.threshold, band).judge_batch(items)
        unsure = sum(v.outcome is Outcome.UNSURE for v in verdicts)
        print(
            f"{a.scorer} {a.threshold} band {band:.2f}: {len(items)} answers, "
            f"to the LLM judge {unsure} ({100 * unsure / len(items):.1f} %)"
        )


if __name__ == "__main__":
    main()
