"""The embedded demo: replay questions through the full loop and summarise what happened.

Requests are drawn from the dataset with Zipf popularity (seeded) and offered in waves; the
pipeline drains between waves. Within a wave a repeated question joins the one in flight
(coalescing); across waves it is a cache or storage hit. With the seeded simulated LLM this
makes every count repeatable run to run; only the timings vary.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qaloop.dataset import QA
from qaloop.pipeline import EmbeddedPipeline
from qaloop.report import tables
from qaloop.settings import Settings
from qaloop.traffic_model import popularity


@dataclass
class RequestOutcome:
    question_id: str
    asked_at: float
    status: int
    source: str  # cache | storage | queued | joined | failed
    latency_s: float  # hits: time to the response; queued: time to the final answer


@dataclass
class DemoResult:
    offered: int
    outcomes: list[RequestOutcome]
    stats: dict[str, Any]
    questions: list[dict[str, Any]]
    events: list[dict[str, Any]]
    wall_s: float
    summary: dict[str, Any] = field(default_factory=dict)


async def run_demo(
    settings: Settings,
    dataset: list[QA],
    *,
    requests: int = 400,
    unique: int = 200,
    zipf_s: float = 1.0,
    wave: int = 50,
    seed: int = 42,
) -> DemoResult:
    pool = dataset[:unique]
    if not pool:
        raise ValueError("the dataset has no usable rows")
    order = [pool[i] for i in popularity("zipf", len(pool), seed, zipf_s).sample(requests)]
    pipeline = EmbeddedPipeline(settings)
    await pipeline.start()
    outcomes: list[RequestOutcome] = []
    started = time.perf_counter()
    try:
        for begin in range(0, len(order), wave):
            queued: list[RequestOutcome] = []
            # Hold the worker while a wave is offered: whether a repeat joins the question in
            # flight or hits storage then depends on the order of requests, not on timing.
            pipeline.pause_workers()
            for qa in order[begin : begin + wave]:
                t0 = time.perf_counter()
                asked_at = time.time()
                status, body = await pipeline.service.ask(qa.question, qa.reference_answer)
                elapsed = time.perf_counter() - t0
                if status == 200:
                    source = body["source"] if body["status"] == "answered" else "failed"
                else:
                    source = "joined" if body.get("joined") else "queued"
                outcome = RequestOutcome(body["id"], asked_at, status, source, elapsed)
                outcomes.append(outcome)
                if status == 202:
                    queued.append(outcome)
            pipeline.resume_workers()
            if not await pipeline.drain(timeout_s=120):
                raise RuntimeError("the pipeline did not drain within 120 s")
            for outcome in queued:
                record = pipeline.repo.get(outcome.question_id)
                if record is not None and record.finished_at is not None:
                    outcome.latency_s = max(0.0, record.finished_at - outcome.asked_at)
    finally:
        await pipeline.stop()
    wall = time.perf_counter() - started
    result = DemoResult(
        offered=len(order),
        outcomes=outcomes,
        stats=pipeline.stats(),
        questions=pipeline.repo.export_questions(),
        events=pipeline.repo.export_events(),
        wall_s=wall,
    )
    pipeline.repo.close()
    result.summary = summarise(result)
    return result


def summarise(result: DemoResult) -> dict[str, Any]:
    """The demo's summary, from the same table functions as `qaloop report`."""
    sources = Counter(o.source for o in result.outcomes)
    by_state: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for q in result.questions:
        by_state[q["state"]].append(q)
    validated_by_attempt = Counter(q["attempt"] for q in by_state["validated"])
    histories = tables.group_events(result.events)
    retries = tables.retries(histories)
    feedback = tables.feedback(histories)
    hits = [o.latency_s for o in result.outcomes if o.source in ("cache", "storage")]
    queued = [o.latency_s for o in result.outcomes if o.source in ("queued", "joined")]
    failed = by_state["failed"]
    cost = result.stats.get("cost", {})
    return {
        "offered": result.offered,
        "answered_cache": sources["cache"],
        "answered_storage": sources["storage"],
        "queued_new": sources["queued"],
        "joined_in_flight": sources["joined"],
        "answered_failed": sources["failed"],
        "unique_questions": len(result.questions),
        "llm_calls": result.stats["pipeline"]["llm_calls"],
        # every LLM-judge call, failed ones too (the priced ones are in `judge_calls`)
        "judge_llm_calls": result.stats["pipeline"]["judge_gates"]["cascade"].get(
            "second_calls", 0
        ),
        "validated_by_attempt": dict(sorted(validated_by_attempt.items())),
        "gave_up_low_score": sum(1 for q in failed if q["error_class"] is None),
        "gave_up_errors": sum(1 for q in failed if q["error_class"] is not None),
        "errors": {
            r.error_class: {"calls": r.errors, "questions": r.questions, "recovered": r.recovered}
            for r in sorted(retries.rows, key=lambda r: r.error_class)
        },
        "mean_score_by_attempt": {
            a.attempt: round(a.mean_score, 3) for a in feedback.attempts if a.mean_score is not None
        },
        "cost_usd": cost.get("cost_usd"),
        "cost_per_validated_usd": cost.get("per_validated_answer_usd"),
        "cost_regeneration_share": cost.get("regeneration_share"),
        "cost_judge_share": cost.get("judge_share"),
        "judge_calls": cost.get("judge_calls", 0),
        "judge_answer_share": cost.get("judge_answer_share"),
        "judge_per_validated_usd": cost.get("judge_per_validated_answer_usd"),
        "cost_estimated_calls": cost.get("estimated_calls"),
        "hit_p50_ms": _ms(tables.percentile(hits, 50)),
        "hit_p95_ms": _ms(tables.percentile(hits, 95)),
        "queued_p50_ms": _ms(tables.percentile(queued, 50)),
        "queued_p95_ms": _ms(tables.percentile(queued, 95)),
        "wall_s": round(result.wall_s, 2),
    }


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 2)


def format_summary(s: dict[str, Any], settings: Settings) -> str:
    from qaloop.gate_config import gate_spec_from_settings

    gate = gate_spec_from_settings(settings)
    lines = [
        "qaloop demo — embedded mode, simulated LLM "
        f"(seed {settings.sim_seed}, gate {gate.scorer} >= {gate.pass_threshold} "
        f"[unsure >= {gate.unsure_threshold}: LLM judge], "
        f"max attempts {settings.max_attempts}, "
        f"cache {settings.cache_policy}/{settings.cache_size})",
        "",
        f"questions offered           {s['offered']}  ({s['unique_questions']} unique)",
        f"answered from cache         {s['answered_cache']}",
        f"answered from storage       {s['answered_storage']}",
        f"queued (new)                {s['queued_new']}",
        f"joined a question in flight {s['joined_in_flight']}",
        f"known failures served       {s['answered_failed']}",
        f"LLM calls                   {s['llm_calls']} generation + {s['judge_llm_calls']} judge",
    ]
    for attempt, n in s["validated_by_attempt"].items():
        lines.append(f"validated on attempt {attempt}      {n}")
    lines.append(f"gave up (low score)         {s['gave_up_low_score']}")
    lines.append(f"gave up (LLM errors)        {s['gave_up_errors']}")
    lines.append("errors by type              calls / questions / recovered")
    if not s["errors"]:
        lines.append("  (none)")
    for cls, e in s["errors"].items():
        lines.append(f"  {cls:<25} {e['calls']} / {e['questions']} / {e['recovered']}")
    scores = ", ".join(f"{a}: {m:.3f}" for a, m in s["mean_score_by_attempt"].items())
    lines.append(f"mean score by attempt       {scores}")
    if s.get("cost_usd") is not None:
        lines.append(
            f"spend                       {s['cost_usd']:.6f} USD, "
            f"{_usd(s['cost_per_validated_usd'])} per validated answer "
            f"(tokens priced as {settings.price_as})"
        )
        lines.append(
            f"  regenerations / judge     {_share(s['cost_regeneration_share'])} / "
            f"{_share(s['cost_judge_share'])} of it; {s['cost_estimated_calls']} calls estimated"
        )
        lines.append(
            f"  LLM judge                 {s['judge_calls']} priced calls, "
            f"{_share(s['judge_answer_share'])} of answers, "
            f"{_usd(s['judge_per_validated_usd'])} per validated answer"
        )
    lines.append(f"time to answer, hits       p50 {s['hit_p50_ms']} ms, p95 {s['hit_p95_ms']} ms")
    lines.append(
        f"time to answer, queued     p50 {s['queued_p50_ms']} ms, p95 {s['queued_p95_ms']} ms"
    )
    lines.append(f"wall time                   {s['wall_s']} s")
    return "\n".join(lines)


def _usd(value: float | None) -> str:
    return "–" if value is None else f"{value:.8f} USD"


def _share(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def temporary_db() -> str:
    directory = Path(tempfile.mkdtemp(prefix="qaloop-demo-"))
    return f"sqlite:///{directory / 'demo.db'}"


def run(settings: Settings, dataset: list[QA], **kwargs: Any) -> DemoResult:
    return asyncio.run(run_demo(settings, dataset, **kwargs))
