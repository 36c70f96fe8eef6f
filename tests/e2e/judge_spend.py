"""What storage must show of the LLM judge's spend after a cascade run (embedded and
distributed alike; docs/spend.md): one `llm_usage` row of purpose "judge" per priced LLM-judge
call, on the SCORED event of the answer it graded, priced from its own tokens, adding up to the
judge's part of the stored summary; and each question's `llm_calls` counting its generation
calls and its LLM-judge calls."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from qaloop.core.routing import parse_scored_detail
from qaloop.llm.accounting import DEFAULT_PRICE_AS, JUDGE, summarise
from qaloop.llm.pricing import PriceTable, parse_deployment


def check_judge_spend(
    events: Sequence[Mapping[str, Any]],
    usage: Sequence[Mapping[str, Any]],
    llm_calls: Mapping[str, int],
    *,
    validated: int,
) -> dict[str, Any]:
    """`events`: question_id, seq, attempt, kind, detail, decision; `usage`: llm_usage rows;
    `llm_calls`: the questions table's count per question. Returns the stored summary."""
    price = PriceTable.load().find(*parse_deployment(DEFAULT_PRICE_AS))  # simulated calls
    assert price is not None
    scored = {(e["question_id"], int(e["seq"])): e for e in events if e["kind"] == "scored"}
    judge_rows = [u for u in usage if u["purpose"] == JUDGE]
    assert judge_rows, "the LLM judge graded answers but storage shows no judge usage"
    graded = 0
    for u in judge_rows:
        e = scored.get((u["question_id"], int(u["seq"])))
        assert e is not None, f"a judge usage row off a SCORED event: {u}"
        d = parse_scored_detail(e.get("detail"))
        assert d.get("by") == "llm_judge" and int(d.get("judge_calls", 0)) >= 1, (u, e)
        assert int(u["attempt"]) == int(e["attempt"])
        expected = price.cost(int(u["input_tokens"]), int(u["output_tokens"]), 0)
        assert float(u["cost_usd"]) == pytest.approx(expected, rel=1e-9), u
        assert float(u["cost_usd"]) > 0  # never free, estimated or not
    # every answer the LLM judge decided (not a provider failure) has its priced call
    for e in scored.values():
        d = parse_scored_detail(e.get("detail"))
        if d.get("by") == "llm_judge" and e.get("decision") != "judge_error":
            graded += 1
    assert len(judge_rows) >= graded > 0
    # llm_calls = generation calls (answers and errors) + LLM-judge calls, per question
    counted: Counter[str] = Counter()
    for e in events:
        if e["kind"] in ("generated", "llm_error"):
            counted[e["question_id"]] += 1
        elif e["kind"] == "scored":
            counted[e["question_id"]] += int(
                parse_scored_detail(e.get("detail")).get("judge_calls", 0)
            )
    assert dict(counted) == {q: n for q, n in llm_calls.items() if n}
    # the stored summary's judge part is the sum of those rows
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    for u in usage:
        key = (u["purpose"], int(u["attempt"]) > 1, u["lane"], bool(u["estimated"]))
        g = groups.setdefault(
            key,
            dict(zip(("purpose", "regeneration", "lane", "estimated"), key, strict=True))
            | {
                "calls": 0,
                "input_tokens": 0,
                "output_tokens": 0,
                "cached_tokens": 0,
                "cost_usd": 0.0,
            },
        )
        g["calls"] += 1
        g["cost_usd"] += float(u["cost_usd"])
    summary = summarise(
        groups.values(), questions=len({u["question_id"] for u in usage}), validated=validated
    )
    judge_usd = math.fsum(float(u["cost_usd"]) for u in judge_rows)
    assert summary["by_purpose"][JUDGE] == pytest.approx(judge_usd, abs=1e-8)
    assert summary["judge_calls"] == len(judge_rows)
    assert summary["judge_share"] == pytest.approx(judge_usd / summary["cost_usd"], abs=1e-4)
    assert summary["judge_per_validated_answer_usd"] == pytest.approx(
        judge_usd / validated, abs=1e-9
    )
    return summary
