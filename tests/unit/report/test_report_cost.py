"""The report's spend section: exact numbers from a small set of usage rows."""

from __future__ import annotations

from typing import Any

import pytest

from qaloop.report.cost import cost


def _u(qid: str, attempt: int, usd: float, **kw: Any) -> dict[str, Any]:
    row = {
        "question_id": qid,
        "seq": attempt,
        "attempt": attempt,
        "at": 0.0,
        "purpose": "generate",
        "provider": "openai",
        "model": "gpt-4o-mini",
        "lane": "interactive",
        "input_tokens": 100,
        "output_tokens": 10,
        "cached_tokens": 0,
        "estimated": False,
        "cost_usd": usd,
    }
    return row | kw


QUESTIONS = [
    {"question_id": "a", "state": "validated", "first_seen": 0.0, "finished_at": 2.0},
    {"question_id": "b", "state": "validated", "first_seen": 0.0, "finished_at": 4.0},
    {"question_id": "c", "state": "failed", "first_seen": 0.0, "finished_at": 9.0},
    {"question_id": "d", "state": "queued", "first_seen": 0.0, "finished_at": None},
]
USAGE = [
    _u("a", 1, 0.002),
    _u("a", 1, 0.001, purpose="judge", seq=2),
    _u("b", 1, 0.002),
    _u("b", 2, 0.004, estimated=True),
    _u("c", 1, 0.001, lane="batch"),
]


def test_cost_numbers() -> None:
    c = cost(USAGE, QUESTIONS)
    assert c.total_usd == pytest.approx(0.010)
    assert (c.calls, c.estimated_calls, c.questions, c.validated) == (5, 1, 3, 2)
    assert c.per_validated_usd == pytest.approx(0.005)  # failed question's spend included
    assert c.share(c.regeneration_usd) == pytest.approx(40.0)
    assert c.share(c.judge_usd) == pytest.approx(10.0)
    assert sorted(c.per_question) == pytest.approx([0.001, 0.003, 0.006])
    judge = [m for m in c.models if m.purpose == "judge"]
    assert len(judge) == 1 and judge[0].calls == 1
    # the LLM judge graded 1 of the 4 answers generated: 0.001 USD over 2 validated answers
    assert (c.judge_calls, c.generate_calls) == (1, 4)
    assert c.judge_answer_share == pytest.approx(25.0)
    assert c.judge_per_validated_usd == pytest.approx(0.0005)
    rows = {str(r[0]).strip(): r[1] for r in c.summary_table().rows}
    assert rows["share of the answers generated, %"] == "25.0"
    assert rows["LLM-judge cost per validated answer (USD)"] == "0.000500"
    lanes = {r.lane: r for r in c.lanes}
    assert lanes["interactive"].questions == 2 and lanes["interactive"].validated == 2
    assert lanes["interactive"].answer_p50_s == 3.0
    assert lanes["batch"].validated == 0 and lanes["batch"].per_validated_usd is None


def test_tables_render_without_usage() -> None:
    c = cost([], QUESTIONS)
    assert c.per_validated_usd is None
    summary = c.summary_table()
    assert summary.rows[0] == ["total spend (USD)", "0.000000"]
    assert c.models_table().rows == [] and c.lanes_table().rows == []
