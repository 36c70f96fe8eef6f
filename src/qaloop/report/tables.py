"""The report's numbers, computed from exported rows (pure: no I/O, no plotting).

Every section is a small dataclass with the exact numbers (the tests check them) and a
`table()` that renders it as a `Table` for markdown/HTML. Inputs are the dicts that
`Repository.export_questions()` / `export_events()` return and the dead-letter records.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from qaloop.report.data import ERROR, HIT, QUEUED, RequestRow
from qaloop.storage.base import DeadLetter

Cell = str | int | float | None


@dataclass(frozen=True, slots=True)
class Table:
    title: str
    columns: list[str]
    rows: list[list[Cell]]
    note: str = ""
    digits: int | None = None  # fixed decimals for every float (else: 3, or 1 from 10 up)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def mean(values: Sequence[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def pct(part: float, whole: float) -> float | None:
    return 100.0 * part / whole if whole else None


def group_events(events: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Events per question, in history order."""
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        grouped[str(e["question_id"])].append(e)
    for history in grouped.values():
        history.sort(key=lambda e: int(e["seq"]))
    return dict(grouped)


# --- overview ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Overview:
    questions: int
    states: dict[str, int]
    hits: int
    llm_calls: int
    dead_letters: int
    span_s: float | None

    def table(self) -> Table:
        rows: list[list[Cell]] = [["questions stored", self.questions]]
        rows += [[f"  state {state}", n] for state, n in sorted(self.states.items())]
        rows += [
            ["repeat asks served (hit_count total)", self.hits],
            ["LLM calls (answers + errors)", self.llm_calls],
            ["dead letters", self.dead_letters],
            ["time span of the data (s)", self.span_s],
        ]
        return Table("Overview", ["metric", "value"], rows)


def overview(
    questions: Sequence[dict[str, Any]],
    events: Sequence[dict[str, Any]],
    dead_letters: Sequence[DeadLetter],
) -> Overview:
    times = [float(e["at"]) for e in events] + [float(q["first_seen"]) for q in questions]
    return Overview(
        questions=len(questions),
        states=dict(Counter(str(q["state"]) for q in questions)),
        hits=sum(int(q.get("hit_count") or 0) for q in questions),
        llm_calls=sum(1 for e in events if e["kind"] in ("generated", "llm_error")),
        dead_letters=len(dead_letters),
        span_s=(max(times) - min(times)) if times else None,
    )


# --- perceived latency ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Latency:
    """Time to an answer per kind of request (seconds), and where the numbers came from."""

    samples: dict[str, list[float]]
    source: str  # "requests CSV" or "storage timestamps"
    hits_without_latency: int = 0
    side: str = "server"  # "client": what the traffic client saw; "server": storage's clock

    @property
    def title(self) -> str:
        if self.side == "client":
            return "Time to an answer, client-side (what the traffic client saw)"
        return "Time to an answer, server-side (storage timestamps)"

    def table(self) -> Table:
        rows: list[list[Cell]] = []
        for kind, values in self.samples.items():
            rows.append(
                [
                    kind,
                    len(values),
                    mean(values),
                    percentile(values, 50),
                    percentile(values, 95),
                    percentile(values, 99),
                ]
            )
        if self.side == "client":
            note = (
                f"Source: {self.source}. Measured by the client, from sending the request to "
                "its response (hits) or to the final answer of a queued question (its wait "
                "over SSE or ?wait=): includes HTTP, the client's own queueing and how it "
                "learnt of the answer."
            )
        else:
            note = (
                f"Source: {self.source}. Measured by the server, from the gateway accepting "
                "the question to the store writing its final state: excludes the HTTP round "
                "trip and the client's wait, so it is lower than what a client sees."
            )
        if self.hits_without_latency:
            note += (
                f" Storage records no per-request latency for the {self.hits_without_latency} "
                "repeat asks answered from cache or storage (pass --requests CSV for them)."
            )
        return Table(
            self.title,
            ["requests", "n", "mean (s)", "p50 (s)", "p95 (s)", "p99 (s)"],
            rows,
            note,
        )


def latency_from_storage(questions: Sequence[dict[str, Any]]) -> Latency:
    samples: dict[str, list[float]] = {"queued -> validated": [], "queued -> failed": []}
    for q in questions:
        if q.get("finished_at") is None:
            continue
        key = "queued -> validated" if q["state"] == "validated" else "queued -> failed"
        samples[key].append(float(q["finished_at"]) - float(q["first_seen"]))
    hits = sum(int(q.get("hit_count") or 0) for q in questions)
    return Latency(samples, "storage timestamps (finished_at - first_seen)", hits)


def latency_from_requests(rows: Sequence[RequestRow]) -> Latency:
    samples: dict[str, list[float]] = {HIT: [], QUEUED: [], ERROR: []}
    for r in rows:
        samples[r.outcome].append(r.latency_s)
    return Latency(
        {k: v for k, v in samples.items() if v or k != ERROR}, "requests CSV", side="client"
    )


def throughput(
    times: Sequence[float], bins: int = 40, span: tuple[float, float] | None = None
) -> tuple[list[float], list[float], float]:
    """Events per second over time: (bin starts relative to the span's start, rates, bin width).

    `span` (start, end) fixes the bins, so several series can share them."""
    if not times:
        return [], [], 0.0
    t0, t1 = span if span is not None else (min(times), max(times))
    width = max((t1 - t0) / bins, 1e-3)
    counts = [0] * bins
    for t in times:
        counts[max(0, min(int((t - t0) / width), bins - 1))] += 1
    return [i * width for i in range(bins)], [c / width for c in counts], width


# --- retry effectiveness ----------------------------------------------------------------------


@dataclass(slots=True)
class RetryRow:
    error_class: str
    errors: int = 0  # failed LLM calls of this class
    questions: int = 0  # questions that met at least one
    retried_now: int = 0  # errors followed at once by another call (backoff, no park)
    parked: int = 0  # parks of this class
    recovered: int = 0  # questions that got an answer after their last error of this class
    gave_up: int = 0  # ... that ended failed without one
    pending: int = 0  # ... neither yet
    waits_s: list[float] = field(default_factory=list)  # each backoff sleep or park
    recover_s: list[float] = field(default_factory=list)  # first error of a streak -> answer


@dataclass(frozen=True, slots=True)
class Retries:
    rows: list[RetryRow]

    def by_class(self) -> dict[str, RetryRow]:
        return {r.error_class: r for r in self.rows}

    def table(self) -> Table:
        out: list[list[Cell]] = []
        for r in self.rows:
            out.append(
                [
                    r.error_class,
                    r.errors,
                    r.questions,
                    r.retried_now,
                    r.parked,
                    r.recovered,
                    r.gave_up,
                    r.pending,
                    pct(r.recovered, r.questions),
                    mean(r.waits_s),
                    percentile(r.waits_s, 95),
                    mean(r.recover_s),
                    percentile(r.recover_s, 95),
                ]
            )
        return Table(
            "Retry effectiveness per error type",
            [
                "error class",
                "errors",
                "questions",
                "retried in-process",
                "parked",
                "recovered",
                "gave up",
                "pending",
                "recovered %",
                "wait mean (s)",
                "wait p95 (s)",
                "time to recover mean (s)",
                "time to recover p95 (s)",
            ],
            out,
            "Questions are counted once per class, by what followed their last error of that "
            "class. A wait is one backoff sleep or one park; time to recover runs from the first "
            "error of a streak to the next generated answer.",
        )


def _call_start(event: dict[str, Any]) -> float:
    return float(event["at"]) - float(event.get("latency_ms") or 0.0) / 1000.0


def retries(events_by_question: dict[str, list[dict[str, Any]]]) -> Retries:
    rows: dict[str, RetryRow] = {}
    for history in events_by_question.values():
        last_error_pos: dict[str, int] = {}
        streak_start: dict[str, float] = {}
        for i, e in enumerate(history):
            kind = e["kind"]
            if kind == "llm_error":
                cls = str(e.get("error_class") or "unknown")
                row = rows.setdefault(cls, RetryRow(cls))
                row.errors += 1
                last_error_pos[cls] = i
                streak_start.setdefault(cls, float(e["at"]))
                _count_wait(row, history, i)
            elif kind == "parked":
                cls = str(e.get("error_class") or "unknown")
                rows.setdefault(cls, RetryRow(cls)).parked += 1
            elif kind == "generated":
                for cls, start in streak_start.items():
                    rows[cls].recover_s.append(float(e["at"]) - start)
                streak_start.clear()
        for cls, pos in last_error_pos.items():
            row = rows[cls]
            row.questions += 1
            after = [e["kind"] for e in history[pos + 1 :]]
            if "generated" in after:
                row.recovered += 1
            elif "gave_up" in after:
                row.gave_up += 1
            else:
                row.pending += 1
    return Retries(sorted(rows.values(), key=lambda r: (-r.errors, r.error_class)))


def _count_wait(row: RetryRow, history: list[dict[str, Any]], i: int) -> None:
    """The wait that followed the error at history[i]: a backoff sleep or a park."""
    nxt = history[i + 1] if i + 1 < len(history) else None
    if nxt is None:
        return
    if nxt["kind"] in ("generated", "llm_error"):
        row.retried_now += 1
        row.waits_s.append(max(0.0, _call_start(nxt) - float(history[i]["at"])))
    elif nxt["kind"] == "parked":
        resumed = next((e for e in history[i + 2 :] if e["kind"] == "resumed"), None)
        if resumed is not None and resumed.get("wait_s") is not None:
            row.waits_s.append(float(resumed["wait_s"]))
        elif resumed is not None:
            row.waits_s.append(float(resumed["at"]) - float(nxt["at"]))


# --- feedback loop ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AttemptRow:
    attempt: int
    scored: int  # judged with a score (an answer without a reference has none)
    mean_score: float | None
    validated: int
    regenerated: int
    gave_up: int
    unscored: int = 0  # decided without a score: a check of the gate failed (echo, non-answer...)


@dataclass(frozen=True, slots=True)
class Feedback:
    attempts: list[AttemptRow]
    validated_total: int
    regenerated_questions: int  # questions scored on more than one attempt
    first_mean: float | None
    best_mean: float | None
    gain_mean: float | None
    improved: int  # regenerated questions whose best score beat their first
    llm_calls: int
    answers: int  # successful calls
    errors: int  # failed calls
    questions_called: int  # questions with at least one call

    @property
    def calls_per_validated(self) -> float | None:
        return self.llm_calls / self.validated_total if self.validated_total else None

    @property
    def extra_calls(self) -> int:
        return self.llm_calls - self.questions_called

    @property
    def overhead_pct(self) -> float | None:
        """Extra calls beyond one per question, in % of that minimum."""
        return pct(self.extra_calls, self.questions_called)

    @property
    def extra_share_pct(self) -> float | None:
        """Extra calls in % of all calls."""
        return pct(self.extra_calls, self.llm_calls)

    def attempts_table(self) -> Table:
        rows: list[list[Cell]] = [
            [
                a.attempt,
                a.scored,
                a.unscored,
                a.mean_score,
                a.validated,
                pct(a.validated, self.validated_total),
                a.regenerated,
                a.gave_up,
            ]
            for a in self.attempts
        ]
        return Table(
            "Feedback loop: outcome per attempt",
            [
                "attempt",
                "answers scored",
                "rejected by a check (no score)",
                "mean score",
                "validated",
                "% of validated",
                "sent back",
                "gave up",
            ],
            rows,
        )

    def cost_table(self) -> Table:
        rows: list[list[Cell]] = [
            # Best - first over regenerated questions cannot be negative and has no control
            # group: the controlled gain is in the section of report/feedback.py.
            ["questions scored on > 1 attempt (uncontrolled)", self.regenerated_questions],
            ["  mean first-attempt score", self.first_mean],
            ["  mean best score", self.best_mean],
            ["  mean gain (best - first)", self.gain_mean],
            ["  improved (best > first)", self.improved],
            ["LLM calls", self.llm_calls],
            ["  answers / errors", f"{self.answers} / {self.errors}"],
            ["validated answers", self.validated_total],
            ["LLM calls per validated answer", self.calls_per_validated],
            ["extra calls (beyond one per question)", self.extra_calls],
            ["  overhead, % of one call per question", self.overhead_pct],
            ["  overhead, % of all calls", self.extra_share_pct],
        ]
        return Table("Feedback loop: score gain and cost", ["metric", "value"], rows)


def feedback(events_by_question: dict[str, list[dict[str, Any]]]) -> Feedback:
    scores: dict[int, list[float]] = defaultdict(list)
    decisions: dict[int, Counter[str]] = defaultdict(Counter)
    firsts: list[float] = []
    bests: list[float] = []
    improved = calls = answers = errors = called = 0
    for history in events_by_question.values():
        per_attempt: dict[int, float] = {}
        n_calls = 0
        for e in history:
            kind = e["kind"]
            if kind in ("generated", "llm_error"):
                n_calls += 1
                answers += kind == "generated"
                errors += kind == "llm_error"
            elif kind == "scored":
                attempt = int(e["attempt"])
                decisions[attempt][str(e.get("decision") or "")] += 1
                if e.get("score") is not None:
                    scores[attempt].append(float(e["score"]))
                    per_attempt.setdefault(attempt, float(e["score"]))
        calls += n_calls
        called += n_calls > 0
        if len(per_attempt) > 1:
            first = per_attempt[min(per_attempt)]
            best = max(per_attempt.values())
            firsts.append(first)
            bests.append(best)
            improved += best > first
    attempts = sorted(set(scores) | set(decisions))
    rows = [
        AttemptRow(
            a,
            len(scores[a]),
            mean(scores[a]),
            decisions[a]["validate"],
            decisions[a]["regenerate"],
            decisions[a]["give_up"],
            sum(decisions[a].values()) - len(scores[a]),
        )
        for a in attempts
    ]
    return Feedback(
        attempts=rows,
        validated_total=sum(r.validated for r in rows),
        regenerated_questions=len(firsts),
        first_mean=mean(firsts),
        best_mean=mean(bests),
        gain_mean=mean([b - f for f, b in zip(firsts, bests, strict=True)]),
        improved=improved,
        llm_calls=calls,
        answers=answers,
        errors=errors,
        questions_called=called,
    )


# --- scores and dead letters ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scores:
    all_scores: list[float]
    first_attempt: list[float]
    threshold: float

    @property
    def pass_rate_pct(self) -> float | None:
        return pct(sum(s >= self.threshold for s in self.all_scores), len(self.all_scores))

    def table(self) -> Table:
        rows: list[list[Cell]] = []
        for name, values in (
            ("all attempts", self.all_scores),
            ("first attempt", self.first_attempt),
        ):
            passed = sum(s >= self.threshold for s in values)
            rows.append(
                [
                    name,
                    len(values),
                    mean(values),
                    percentile(values, 50),
                    passed,
                    pct(passed, len(values)),
                ]
            )
        return Table(
            f"Score distribution (threshold {self.threshold:g})",
            ["answers", "n", "mean", "median", f">= {self.threshold:g}", "pass %"],
            rows,
        )


def scores(events: Iterable[dict[str, Any]], threshold: float) -> Scores:
    scored = [e for e in events if e["kind"] == "scored" and e.get("score") is not None]
    return Scores(
        [float(e["score"]) for e in scored],
        [float(e["score"]) for e in scored if int(e["attempt"]) == 1],
        threshold,
    )


@dataclass(frozen=True, slots=True)
class DeadLetters:
    by_reason: list[tuple[str, int, int]]  # reason, count, replayed

    @property
    def total(self) -> int:
        return sum(n for _, n, _ in self.by_reason)

    def table(self) -> Table:
        rows: list[list[Cell]] = [
            [reason, n, pct(n, self.total), replayed] for reason, n, replayed in self.by_reason
        ]
        return Table("Dead letters by reason", ["reason", "count", "%", "replayed"], rows)


def reason_group(reason: str) -> str:
    """Collapse per-message detail: 'retry budget spent: 6 parks (x)' keeps its class."""
    return reason.strip()[:80] or "unknown"


def dead_letters(letters: Sequence[DeadLetter]) -> DeadLetters:
    counts: Counter[str] = Counter()
    replayed: Counter[str] = Counter()
    for d in letters:
        key = reason_group(d.reason)
        counts[key] += 1
        replayed[key] += d.replayed
    return DeadLetters([(r, n, replayed[r]) for r, n in counts.most_common()])
