"""The cascade end to end in distributed mode, with the plain judge and with the Flink judge:
gateway, worker, judge (or `qaloop flink-job`), store and retrier as OS processes over the real
Kafka broker and PostgreSQL.

Questions with and without a reference go in over HTTP. Checked from storage alone:
- every answer to a question without a reference was judged by the LLM judge (none validated
  unscored);
- an answer to a question with a reference went to the LLM judge exactly when the cheap gate,
  recomputed on the stored answer, says UNSURE;
- regenerations carry their arm (feedback or control) and the report computes the gain;
- both judges make the same decisions for the same answers (one decision, one implementation).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from qaloop.core.routing import parse_scored_detail
from qaloop.quality.verdict import GateInput, Outcome
from qaloop.report.feedback import by_arm_counts, feedback_gain
from qaloop.services.gating import cheap_gate
from qaloop.settings import Settings
from tests.e2e.distributed_stack import (
    ROOT,
    Stack,
    Traffic,
    check_invariants,
    pg_schema,
    questions,
    require_servers,
    sql,
    wait_final,
)
from tests.e2e.judge_spend import check_judge_spend

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]

SCORER, THRESHOLD, BAND = "composite", 0.14, 0.06
SETTINGS: dict[str, Any] = {
    "sim_latency_ms": 2,
    "scorer": SCORER,
    "threshold": THRESHOLD,
    "judge_unsure_band": BAND,  # the ScorerGate's band
    "gate_unsure_threshold": THRESHOLD - BAND,  # the default gate's (once merged)
    "feedback_control_share": 0.5,
    "max_attempts": 3,
}
N_REF, N_FREE = 40, 20


def _traffic() -> list[tuple[str, str | None]]:
    with_ref = questions(N_REF, "cascade-ref")
    free = [(q, None) for q, _ in questions(N_FREE, "cascade-free")]
    return with_ref + free


def _check_cascade(dsn: str) -> dict[str, Any]:
    refs = dict(sql(dsn, "SELECT question_id, reference_answer FROM questions"))
    texts = dict(sql(dsn, "SELECT question_id, question FROM questions"))
    rows = sql(
        dsn,
        "SELECT question_id, seq, attempt, kind, answer, detail, decision, score FROM events "
        "ORDER BY question_id, seq",
    )
    names = ("question_id", "seq", "attempt", "kind", "answer", "detail", "decision", "score")
    events = [dict(zip(names, r, strict=True)) for r in rows]
    gate = cheap_gate(Settings(**SETTINGS))  # the judge's own cheap gate, recomputed
    assert gate is not None
    answers: dict[tuple[str, int], str] = {}
    seen = {"free_llm": 0, "ref_llm": 0, "ref_cheap": 0}
    decisions: dict[tuple[str, int], str] = {}
    for e in events:
        qid, attempt = e["question_id"], int(e["attempt"])
        if e["kind"] == "generated":
            answers[(qid, attempt)] = e["answer"]
            continue
        if e["kind"] != "scored":
            continue
        by = parse_scored_detail(e["detail"]).get("by")
        decisions[(qid, attempt)] = e["decision"]
        if by == "precheck":  # the cascade's own checks (empty, injected, ...)
            continue
        ref = refs[qid]
        [cheap] = gate.judge_batch([GateInput(texts[qid], answers[(qid, attempt)], ref)])
        # the LLM judge saw exactly what the cheap gate was unsure of
        expected = "llm_judge" if cheap.outcome is Outcome.UNSURE else gate.name
        assert by == expected, (e, cheap)
        if ref is None:
            # without a reference only the LLM judge can pass an answer
            assert e["decision"] != "validate" or by == "llm_judge", e
            seen["free_llm"] += by == "llm_judge"
            continue
        seen["ref_llm" if by == "llm_judge" else "ref_cheap"] += 1
    unscored = sql(
        dsn, "SELECT count(*) FROM questions WHERE state = 'validated' AND score IS NULL"
    )
    assert unscored[0][0] == 0, "a question was validated unscored"
    free_validated = sql(
        dsn,
        "SELECT count(*) FROM questions WHERE state = 'validated' AND reference_answer IS NULL",
    )[0][0]
    assert free_validated > 0
    assert seen["free_llm"] >= N_FREE // 2 and seen["ref_llm"] > 0 and seen["ref_cheap"] > 0
    arms = by_arm_counts(events)
    assert arms.get("feedback", 0) > 0 and arms.get("control", 0) > 0, arms
    questions_rows = [
        {"question_id": q, "state": s, "reference_answer": r}
        for q, s, r in sql(dsn, "SELECT question_id, state, reference_answer FROM questions")
    ]
    gain = feedback_gain(questions_rows, events)
    assert gain.by_judge["llm_judge"] == seen["free_llm"] + seen["ref_llm"]
    assert gain.llm_calls >= gain.by_judge["llm_judge"] - gain.llm_outcomes.get("malformed", 0)
    # the LLM judge's calls are priced into llm_usage and counted in llm_calls (docs/spend.md)
    cols = ("question_id", "seq", "attempt", "purpose", "lane", "input_tokens",
            "output_tokens", "estimated", "cost_usd")  # fmt: skip
    usage = [
        dict(zip(cols, r, strict=True))
        for r in sql(dsn, f"SELECT {', '.join(cols)} FROM llm_usage")
    ]
    check_judge_spend(
        events,
        usage,
        dict(sql(dsn, "SELECT question_id, llm_calls FROM questions")),
        validated=sum(1 for q in questions_rows if q["state"] == "validated"),
    )
    return {"seen": seen, "decisions": decisions}


def _run(tmp_path: Path, judge: str) -> dict[str, Any]:
    bootstrap, base_dsn = require_servers()
    with pg_schema(base_dsn) as (_, dsn):
        stack = Stack.create(tmp_path, bootstrap, dsn, **SETTINGS)
        try:
            stack.start("store")
            stack.start("retrier")
            if judge == "flink":
                stack.start("flink-job", "judge", ["--flink-state-dir", str(tmp_path / "flink")])
            else:
                stack.start("judge")
            stack.start("worker")
            stack.start("gateway")
            stack.wait_http()
            traffic = Traffic(stack.url)
            asyncio.run(traffic.send(_traffic(), rate_per_s=100))
            assert len(traffic.accepted) == N_REF + N_FREE, traffic.other[:3]
            wait_final(dsn, N_REF + N_FREE, 240 if judge == "flink" else 90, stack)
            stack.assert_alive()
            check_invariants(dsn, traffic.accepted)
            return _check_cascade(dsn)
        finally:
            stack.stop_all()


def test_plain_judge_cascade(tmp_path: Path) -> None:
    result = _run(tmp_path, "plain")
    TestOneDecision.plain = result["decisions"]


def test_flink_judge_cascade(tmp_path: Path) -> None:
    flink_python = ROOT / ".venv-flink" / "bin" / "python"
    if not flink_python.is_file() and not os.environ.get("QALOOP_FLINK_PYTHON"):
        pytest.skip("no .venv-flink: run `make flink-venv`")
    from qaloop.flink.core import find_connector_jar

    try:
        find_connector_jar()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    result = _run(tmp_path, "flink")
    TestOneDecision.flink = result["decisions"]


class TestOneDecision:
    plain: dict[tuple[str, int], str] | None = None
    flink: dict[tuple[str, int], str] | None = None

    def test_both_judges_decided_the_same(self) -> None:
        if self.plain is None or self.flink is None:
            pytest.skip("needs both cascade runs in this session")
        assert self.plain == self.flink
