"""The controlled feedback gain and the LLM judge's share, computed from stored events."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from qaloop.core.routing import JudgeCost, scored_detail
from qaloop.quality.verdict import Outcome, Reason, Verdict
from qaloop.report.data import ReportData
from qaloop.report.feedback import feedback_gain, plot_gain, section, wilson


def test_wilson_interval() -> None:
    assert wilson(0, 0) is None
    lo, hi = wilson(8, 10) or (0, 0)
    assert lo == pytest.approx(0.490, abs=1e-3) and hi == pytest.approx(0.943, abs=1e-3)
    lo, hi = wilson(0, 5) or (1, 1)
    assert lo == 0.0 and 0.4 < hi < 0.5


def _scored(
    qid: str, attempt: int, seq: int, decision: str, by: str, arm: str | None, calls: int = 0
) -> dict[str, Any]:
    outcome = Outcome.PASS if decision == "validate" else Outcome.FAIL
    reason = Reason.OK if decision == "validate" else Reason.ECHO
    verdict = Verdict(0.5, outcome, reason, "", by)
    detail = scored_detail(verdict, JudgeCost(calls, 100 * calls), arm)
    return {
        "question_id": qid,
        "seq": seq,
        "kind": "scored",
        "attempt": attempt,
        "at": 1.0,
        "detail": detail,
        "decision": decision,
    }


def _generated(qid: str, attempt: int, seq: int) -> dict[str, Any]:
    return {
        "question_id": qid,
        "seq": seq,
        "kind": "generated",
        "attempt": attempt,
        "at": 1.0,
        "detail": "tokens in=10 out=5",
    }


def _history(qid: str, decisions: list[str], arm: str | None, by: str = "composite") -> list[Any]:
    events: list[dict[str, Any]] = []
    for n, decision in enumerate(decisions, start=1):
        events.append(_generated(qid, n, len(events)))
        calls = 1 if by == "llm_judge" else 0
        a = arm if decision == "regenerate" else None
        events.append(_scored(qid, n, len(events), decision, by, a, calls))
    return events


def _data() -> ReportData:
    events = [
        *_history("a", ["validate"], None),
        *_history("b", ["regenerate", "validate"], "feedback"),
        *_history("c", ["regenerate", "regenerate", "validate"], "feedback"),
        *_history("d", ["regenerate", "give_up"], "control"),
        *_history("e", ["validate"], None, by="llm_judge"),
    ]
    questions = [
        {"question_id": q, "state": s, "reference_answer": None if q == "e" else "r"}
        for q, s in (("a", "validated"), ("b", "validated"), ("c", "validated"), ("d", "failed"))
    ] + [{"question_id": "e", "state": "validated", "reference_answer": None}]
    return ReportData(questions=questions, events=events, dead_letters=[])


def test_gain_per_arm_base_rate_and_cost() -> None:
    g = feedback_gain(_data().questions, _data().events)
    assert (g.base.successes, g.base.n) == (2, 5)
    # feedback: b 1->2 ok, c 1->2 rejected, c 2->3 ok; control: d 1->2 rejected
    assert (g.arms["feedback"].successes, g.arms["feedback"].n) == (2, 3)
    assert (g.arms["control"].successes, g.arms["control"].n) == (0, 1)
    assert g.gain_pp() == pytest.approx(100 * 2 / 3)
    assert g.by_attempt[("feedback", 2)].n == 1
    assert g.cost_all.validated == 4 and g.cost_all.gen_calls == 9
    assert g.cost_all.gen_tokens == 9 * 15 and g.cost_all.judge_calls == 1
    calls, tokens = g.cost_all.per_validated()
    assert calls == pytest.approx(10 / 4) and tokens == pytest.approx((135 + 100) / 4)
    assert g.cost_arm["control"].validated == 0 and g.cost_arm["feedback"].validated == 2
    assert g.judged == 9 and g.by_judge["llm_judge"] == 1 and g.llm_no_reference == 1
    assert g.reasons["echo"] == 5


def test_the_judge_table_shows_its_spend_per_validated_answer(tmp_path: Path) -> None:
    data = _data()
    usage = [
        {"question_id": "e", "purpose": "generate", "cost_usd": 0.003},
        {"question_id": "e", "purpose": "judge", "cost_usd": 0.002},
    ]
    data = ReportData(data.questions, data.events, data.dead_letters, usage=usage)
    _, _, tables, _ = section(data, tmp_path)
    judge = {str(r[0]).strip(): r[1] for r in tables[2].rows}
    assert judge["LLM-judge spend (USD)"] == "0.00200000"
    assert judge["per validated answer (USD)"] == "0.00050000"  # 4 validated
    assert judge["share (%)"] == pytest.approx(100 / 9)


def test_section_renders_tables_and_a_plot(tmp_path: Path) -> None:
    _, _, tables, plots = section(_data(), tmp_path)
    assert plots == ["feedback_gain.png"]
    assert [t.title for t in tables] == [
        "Controlled feedback gain",
        "Cost per validated answer",
        "LLM judge: share and cost",
    ]
    assert "+66.7 points" in tables[0].note and "not a finding" in tables[0].note
    assert (tmp_path / "feedback_gain.png").stat().st_size > 1000
    judge = {str(r[0]).strip(): r[1] for r in tables[2].rows}
    assert judge["LLM-judge spend (USD)"] == "–"  # no usage rows: unknown, not free
    empty = feedback_gain([], [])
    assert empty.gain_pp() is None
    plot_gain(empty, tmp_path / "empty.png")
