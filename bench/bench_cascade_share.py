"""Share of the recorded answers the cascade would send to the LLM judge, per uncertain band.

    PYTHONPATH=src .venv/bin/python bench/bench_cascade_share.py [--scorer composite]

Reads ../shared/data/llm_answers.jsonl (or $QALOOP_SHARED_DATA/llm_answers.jsonl; research-only,
never copied into the repository). Every recorded answer has a reference, so this is the share
among answers *with* one; answers to questions without a reference always go to the LLM judge.
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
    p.add_argument("--bands", default="0,0.02,0.03,0.05")
    a = p.parse_args()
    path = DATA / "llm_answers.jsonl"
    if not path.is_file():
        sys.exit(f"recorded answers not found at {path} (set QALOOP_SHARED_DATA)")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    items = [GateInput(r["question"], r["llm_answer"], r["original_answer"]) for r in rows]
    for band in (float(b) for b in a.bands.split(",")):
        verdicts = ScorerGate(get_scorer(a.scorer), a.threshold, band).judge_batch(items)
        unsure = sum(v.outcome is Outcome.UNSURE for v in verdicts)
        print(
            f"{a.scorer} {a.threshold} band {band:.2f}: {len(items)} answers, "
            f"to the LLM judge {unsure} ({100 * unsure / len(items):.1f} %)"
        )


if __name__ == "__main__":
    main()
