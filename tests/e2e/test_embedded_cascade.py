"""The cascade end to end in embedded mode (one process, SQLite, the simulated LLM as answerer
and judge): questions without a reference are judged by the LLM judge, the LLM judge sees only
what the cheap gate is unsure of, a judge that keeps failing dead-letters the question with its
reason (never a pass), and `qaloop report` shows the controlled feedback gain."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from qaloop.core.routing import parse_scored_detail
from qaloop.dataset import load_sample
from qaloop.pipeline import EmbeddedPipeline
from qaloop.quality.verdict import GateInput, Outcome
from qaloop.services.gating import cheap_gate
from qaloop.settings import Settings
from tests.e2e.judge_spend import check_judge_spend


async def test_cascade_feedback_and_judge_errors_end_to_end(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'cascade.db'}"
    settings = Settings(
        db=db,
        scorer="composite",
        threshold=0.14,
        judge_unsure_band=0.06,  # the ScorerGate's band
        gate_unsure_threshold=0.08,  # the default gate's (once merged)
        feedback_control_share=0.5,
        sim_overload_rate=0.12,  # generation and judge calls alike
        overload_tries=2,
        backoff_base_s=0.001,
        backoff_cap_s=0.01,
        max_parks=8,
    )
    pipeline = EmbeddedPipeline(settings)
    await pipeline.start()
    qas = load_sample(limit=160)
    for i, qa in enumerate(qas):
        reference = None if i % 4 == 0 else qa.reference_answer
        status, _ = await pipeline.service.ask(qa.question, reference)
        assert status == 202
    assert await pipeline.drain(120)
    await pipeline.stop()

    repo = pipeline.repo
    counts = repo.state_counts()
    assert set(counts) <= {"validated", "failed"} and sum(counts.values()) == len(qas)
    questions = {q["question_id"]: q for q in repo.export_questions()}
    events = repo.export_events()
    gate = cheap_gate(settings)  # the judge's own cheap gate, recomputed
    assert gate is not None
    answers: dict[tuple[str, int], str] = {}
    by_judge = {"free": 0, "ref_llm": 0, "ref_cheap": 0}
    for e in events:
        qid, attempt = e["question_id"], int(e["attempt"])
        if e["kind"] == "generated":
            answers[(qid, attempt)] = e["answer"]
        elif e["kind"] == "scored":
            q = questions[qid]
            by = parse_scored_detail(e.get("detail")).get("by")
            if by == "precheck":  # the cascade's own checks (empty, injected, ...)
                continue
            item = GateInput(q["question"], answers[(qid, attempt)], q["reference_answer"])
            [cheap] = gate.judge_batch([item])
            # the LLM judge saw exactly what the cheap gate was unsure of
            assert (by == "llm_judge") == (cheap.outcome is Outcome.UNSURE), e
            if q["reference_answer"] is None:
                # without a reference only the LLM judge can pass an answer
                assert e["decision"] != "validate" or by == "llm_judge", e
                by_judge["free"] += by == "llm_judge"
                continue
            by_judge["ref_llm" if by == "llm_judge" else "ref_cheap"] += 1
    assert by_judge["free"] >= 20 and by_judge["ref_llm"] > 0 and by_judge["ref_cheap"] > 0
    validated = [q for q in questions.values() if q["state"] == "validated"]
    assert validated and all(q["score"] is not None for q in validated)
    assert any(q["reference_answer"] is None for q in validated)

    # the judge's provider failed past its retries for some answers: dead-lettered, not passed
    letters = [d for d in repo.dead_letters(limit=10_000) if d.reason.startswith("judge_error")]
    assert letters, "expected judge errors from the simulated 503s"
    for letter in letters:
        rec = repo.get(letter.question_id or "")
        assert rec is not None and rec.state.value == "failed"
        assert rec.error_detail and "overload" in rec.error_detail

    all_stats = pipeline.stats()
    stats = all_stats["pipeline"]["judge_gates"]
    assert stats["cascade"]["to_second"] == by_judge["free"] + by_judge["ref_llm"]
    assert stats["decisions"].get("judge_error", 0) == len(letters)

    # the LLM judge's calls are priced into llm_usage and counted in llm_calls (docs/spend.md)
    summary = check_judge_spend(
        events,
        repo.export_usage(),
        {q["question_id"]: int(q["llm_calls"]) for q in questions.values()},
        validated=len(validated),
    )
    stored = all_stats["cost"]  # what /v1/stats serves: storage's own summary
    for key in ("judge_calls", "judge_per_validated_answer_usd", "cost_usd"):
        assert stored[key] == pytest.approx(summary[key], abs=1e-8), key
    assert stored["judge_share"] == pytest.approx(summary["judge_share"], abs=1e-4)
    assert 0 < stored["judge_answer_share"] < 1

    out = tmp_path / "report"
    subprocess.run(
        [sys.executable, "-m", "qaloop", "report", "--db", db, "--out", str(out)],
        check=True,
        capture_output=True,
    )
    text = (out / "report.md").read_text(encoding="utf-8")
    assert "Controlled feedback gain" in text and "control (plain prompt)" in text
    assert "LLM judge: share and cost" in text and (out / "feedback_gain.png").is_file()
    assert "LLM-judge cost per validated answer (USD)" in text and "LLM-judge spend (USD)" in text
