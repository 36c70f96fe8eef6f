"""The report's spend section (pure: rows in, numbers and tables out).

Inputs: `Repository.export_usage()` rows (one per priced LLM call) and `export_questions()`.
Cost per validated answer divides *all* spend (failed questions, regenerations and judge calls
included) by the validated answers: what one validated answer really costs.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from qaloop.report.tables import Cell, Table, percentile


@dataclass(frozen=True, slots=True)
class ModelRow:
    purpose: str
    provider: str
    model: str
    lane: str
    calls: int
    estimated_calls: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cost_usd: float


@dataclass(frozen=True, slots=True)
class LaneRow:
    lane: str
    questions: int
    validated: int
    cost_usd: float
    per_validated_usd: float | None
    answer_p50_s: float | None
    answer_p95_s: float | None


@dataclass(slots=True)
class Cost:
    total_usd: float = 0.0
    calls: int = 0
    estimated_calls: int = 0
    questions: int = 0  # questions with at least one priced call
    validated: int = 0
    per_question: list[float] = field(default_factory=list)
    regeneration_usd: float = 0.0
    judge_usd: float = 0.0
    judge_calls: int = 0  # priced LLM-judge calls: one per answer the LLM judge graded
    generate_calls: int = 0  # priced generation calls: one per answer generated
    models: list[ModelRow] = field(default_factory=list)
    lanes: list[LaneRow] = field(default_factory=list)

    @property
    def per_call_usd(self) -> float | None:
        return self.total_usd / self.calls if self.calls else None

    @property
    def per_validated_usd(self) -> float | None:
        # no priced call at all (data from before spend accounting): unknown, not free
        return self.total_usd / self.validated if self.validated and self.calls else None

    @property
    def judge_answer_share(self) -> float | None:
        """% of the answers generated that the LLM judge graded (each answer is judged once)."""
        return 100.0 * self.judge_calls / self.generate_calls if self.generate_calls else None

    @property
    def judge_per_validated_usd(self) -> float | None:
        return self.judge_usd / self.validated if self.validated and self.calls else None

    def share(self, part: float) -> float | None:
        return 100.0 * part / self.total_usd if self.total_usd > 0 else None

    def summary_table(self) -> Table:
        rows: list[list[Cell]] = [
            ["total spend (USD)", _usd(self.total_usd)],
            ["LLM calls priced", self.calls],
            ["  of which usage estimated (provider gave none)", self.estimated_calls],
            ["cost per call (USD)", _usd(self.per_call_usd)],
            ["cost per question, mean (USD)", _usd(_mean(self.per_question))],
            ["cost per question, p50 / p95 / max (USD)", self._spread()],
            ["validated answers", self.validated],
            ["cost per validated answer (USD)", _usd(self.per_validated_usd)],
            [
                "share spent on regenerations (attempt > 1), %",
                _pct(self.share(self.regeneration_usd)),
            ],
            ["share spent on the LLM judge, %", _pct(self.share(self.judge_usd))],
            ["answers graded by the LLM judge (priced calls)", self.judge_calls],
            ["  share of the answers generated, %", _pct(self.judge_answer_share)],
            ["  LLM-judge cost per validated answer (USD)", _usd(self.judge_per_validated_usd)],
        ]
        return Table(
            "Spend",
            ["measure", "value"],
            rows,
            note="Prices from the price table (docs/spend.md); simulated and replayed calls are "
            "priced as QALOOP_PRICE_AS. Per validated answer = all spend / validated answers.",
        )

    def _spread(self) -> str:
        if not self.per_question:
            return "–"
        p50 = percentile(self.per_question, 50)
        p95 = percentile(self.per_question, 95)
        return f"{_usd(p50)} / {_usd(p95)} / {_usd(max(self.per_question))}"

    def models_table(self) -> Table:
        rows: list[list[Cell]] = [
            [
                r.purpose,
                f"{r.provider}/{r.model}",
                r.lane,
                r.calls,
                r.estimated_calls,
                r.input_tokens,
                r.output_tokens,
                r.cached_tokens,
                _usd(r.cost_usd),
            ]
            for r in self.models
        ]
        return Table(
            "Spend by purpose and model",
            ["purpose", "model", "lane", "calls", "estimated", "input tok", "output tok",
             "cached tok", "USD"],
            rows,
        )  # fmt: skip

    def lanes_table(self) -> Table:
        rows: list[list[Cell]] = [
            [
                r.lane,
                r.questions,
                r.validated,
                _usd(r.cost_usd),
                _usd(r.per_validated_usd),
                r.answer_p50_s,
                r.answer_p95_s,
            ]
            for r in self.lanes
        ]
        return Table(
            "Lanes: cost and time to answer",
            ["lane", "questions", "validated", "USD", "USD / validated", "answer p50 s",
             "answer p95 s"],
            rows,
            note="A question's lane is the lane of its first priced call.",
        )  # fmt: skip


def _usd(value: float | None) -> str:
    if value is None:
        return "–"
    if 0 < value < 1e-4:  # per-answer costs of cheap models: keep two significant digits
        return f"{value:.8f}"
    return f"{value:.6f}" if value < 1 else f"{value:.2f}"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def _mean(values: Sequence[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def cost(usage: Sequence[dict[str, Any]], questions: Sequence[dict[str, Any]]) -> Cost:
    result = Cost()
    by_question: dict[str, float] = defaultdict(float)
    lane_of: dict[str, str] = {}
    models: dict[tuple[str, str, str, str], list[float]] = {}
    for u in usage:
        usd = float(u["cost_usd"])
        qid = str(u["question_id"])
        result.total_usd += usd
        result.calls += 1
        result.estimated_calls += int(bool(u["estimated"]))
        by_question[qid] += usd
        lane_of.setdefault(qid, str(u["lane"]))
        if u["purpose"] == "judge":
            result.judge_usd += usd
            result.judge_calls += 1
        else:
            result.generate_calls += 1
            if int(u["attempt"]) > 1:
                result.regeneration_usd += usd
        key = (str(u["purpose"]), str(u["provider"]), str(u["model"]), str(u["lane"]))
        acc = models.setdefault(key, [0, 0, 0, 0, 0, 0.0])
        acc[0] += 1
        acc[1] += int(bool(u["estimated"]))
        acc[2] += int(u["input_tokens"])
        acc[3] += int(u["output_tokens"])
        acc[4] += int(u["cached_tokens"])
        acc[5] += usd
    result.questions = len(by_question)
    result.per_question = list(by_question.values())
    result.models = [
        ModelRow(*key, int(a[0]), int(a[1]), int(a[2]), int(a[3]), int(a[4]), float(a[5]))
        for key, a in sorted(models.items())
    ]
    validated = {str(q["question_id"]) for q in questions if q["state"] == "validated"}
    result.validated = len(validated)
    result.lanes = _lanes(questions, by_question, lane_of, validated)
    return result


def _lanes(
    questions: Sequence[dict[str, Any]],
    by_question: dict[str, float],
    lane_of: dict[str, str],
    validated: set[str],
) -> list[LaneRow]:
    waits: dict[str, list[float]] = defaultdict(list)
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    spend: dict[str, float] = defaultdict(float)
    for q in questions:
        qid = str(q["question_id"])
        lane = lane_of.get(qid)
        if lane is None:
            continue  # never reached the LLM (or not priced)
        counts[lane][0] += 1
        spend[lane] += by_question.get(qid, 0.0)
        if qid in validated:
            counts[lane][1] += 1
            if q.get("finished_at") is not None:
                waits[lane].append(float(q["finished_at"]) - float(q["first_seen"]))
    rows = []
    for lane in sorted(counts):
        n, ok = counts[lane]
        p50 = percentile(waits[lane], 50)
        p95 = percentile(waits[lane], 95)
        rows.append(
            LaneRow(
                lane,
                n,
                ok,
                spend[lane],
                spend[lane] / ok if ok else None,
                None if p50 is None else round(p50, 3),
                None if p95 is None else round(p95, 3),
            )
        )
    return rows
