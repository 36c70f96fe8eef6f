"""Record what a build of the gate decides on tests/cases/gate_inputs.py, for the
identical-decisions test (tests/unit/quality/test_gate_identical.py).

    # the reference: main before the judge's speed-up (issue 13, point 4)
    git archive <commit> | tar -x -C /tmp/base
    PYTHONPATH=/tmp/base/src:. .venv/bin/python tests/cases/record_gate_verdicts.py

With `--shared FILE`, the same for the 6,329 recorded answers of ../shared/data (or
$QALOOP_SHARED_DATA), written to FILE (outside the repository: the data is research-only);
`--compare A B` counts the identical rows of two such files.

A deliberate change of a check's decisions re-records with the build that makes it
(`PYTHONPATH=src:.`), and says so in its commit.
Writes tests/cases/gate_verdicts.jsonl.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import orjson

from tests.cases.gate_inputs import inputs

OUT = Path(__file__).with_name("gate_verdicts.jsonl")
ROOT = Path(__file__).resolve().parents[2]


def _verdict(v: Any) -> list[Any] | None:
    return None if v is None else [v.outcome.value, v.reason.value, v.score, v.detail, v.judged_by]


def decisions(items: list[tuple[str, str, str, str | None]]) -> list[dict[str, Any]]:
    """Per item: the cheap half of the judge's cascade (the LLM judge's pre-checks, then the
    default gate with the throughput benchmark's composite scorer at 0.14), and each check on
    its own (a later check is otherwise hidden behind an earlier one)."""
    from qaloop.quality import llm_judge
    from qaloop.quality.gate import (
        GateSpec,
        build_gate,
        contradiction,
        is_non_answer,
        is_truncated,
        malformed,
        new_content_words,
    )
    from qaloop.quality.lang import detect_language
    from qaloop.quality.verdict import GateInput

    gate = build_gate(GateSpec(scorer="composite", pass_threshold=0.14, unsure_threshold=0.03))
    gate_inputs = [GateInput(q, a, r) for _, q, a, r in items]
    pre = [llm_judge.precheck(i, "precheck") for i in gate_inputs]
    todo = [i for i, v in zip(gate_inputs, pre, strict=True) if v is None]
    gated = iter(gate.judge_batch(todo))
    out = []
    for (family, q, a, r), p in zip(items, pre, strict=True):
        cascade = p if p is not None else next(gated)
        out.append(
            {
                "family": family,
                "cascade": _verdict(cascade),
                "llm_precheck": _verdict(p),
                "malformed": malformed(a, 20_000),
                "contradiction": contradiction(a, r, q) if r and r.strip() else None,
                "language": [detect_language(q), detect_language(a), detect_language(r or "")],
                "non_answer": is_non_answer(a, 25),
                "new_words": new_content_words(q, a),
                "truncated": is_truncated(a),
            }
        )
    return out


def shared_inputs() -> list[tuple[str, str, str, str | None]]:
    base = Path(os.environ.get("QALOOP_SHARED_DATA", ROOT.parent / "shared" / "data"))
    with (base / "llm_answers.jsonl").open("rb") as fh:
        rows = [orjson.loads(line) for line in fh]
    return [("recorded", r["question"], r["llm_answer"], r["original_answer"]) for r in rows]


def main() -> None:
    import qaloop

    args = sys.argv[1:]
    if args[:1] == ["--compare"] and len(args) == 3:
        a, b = ([orjson.loads(x) for x in Path(f).read_bytes().splitlines()] for f in args[1:])
        same = sum(1 for x, y in zip(a, b, strict=True) if x == y)
        print(f"{same} of {len(a)} identical")
        sys.exit(0 if same == len(a) == len(b) else 1)
    items, out = inputs(), OUT
    if args[:1] == ["--shared"] and len(args) == 2:
        items, out = shared_inputs(), Path(args[1])
    elif args:
        sys.exit("usage: record_gate_verdicts.py [--shared FILE | --compare FILE FILE]")
    rows = decisions(items)
    out.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))
    print(f"{len(rows)} verdicts from {Path(qaloop.__file__).parent} -> {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
