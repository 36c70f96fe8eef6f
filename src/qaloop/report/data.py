"""The report's inputs: what storage holds (read only through the Repository interface) and,
optionally, the per-request CSV the traffic generator writes.

Requests CSV: one row per request, with a header. Columns are matched by name, case-insensitive:

- send time (epoch or relative seconds): ``sent_s``, ``sent_at``, ``t``, ``time``, ``ts``,
  ``at``, ``started_at``, ``start`` or ``scheduled_s``;
- time to the answer, the first non-empty of: ``time_to_answer_s``, ``latency_s``,
  ``elapsed_s`` (seconds), ``answer_ms``, ``time_to_answer_ms``, ``latency_ms``, ``elapsed_ms``
  (milliseconds) -- so a queued request's wait for its answer (``answer_ms``, as `qaloop
  traffic` writes it) wins over the latency of its 202;
- what happened: ``outcome``, ``source``, ``status`` or ``result``. hit / cache / storage /
  answered / failed (a known failure served at once) count as hits; queued / accepted /
  joined / validated / miss as queued; anything else (error, timeout, HTTP >= 400) as an error.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qaloop.storage.base import DeadLetter, Repository

ALL_DEAD_LETTERS = 10_000_000

_TIME_COLUMNS = ("sent_s", "sent_at", "t", "time", "ts", "at", "started_at", "start", "scheduled_s")
_SECONDS_COLUMNS = ("time_to_answer_s", "latency_s", "elapsed_s")
_MS_COLUMNS = ("answer_ms", "time_to_answer_ms", "latency_ms", "elapsed_ms")
_OUTCOME_COLUMNS = ("outcome", "source", "status", "result")
_HIT = frozenset({"hit", "cache", "storage", "answered", "cached", "failed"})
_QUEUED = frozenset({"queued", "accepted", "joined", "validated", "miss", "coalesced"})

HIT, QUEUED, ERROR = "hit", "queued", "error"


class RequestsFileError(ValueError):
    """The requests CSV lacks a column the report needs."""


@dataclass(frozen=True, slots=True)
class RequestRow:
    sent_at: float  # seconds (epoch or relative)
    latency_s: float
    outcome: str  # HIT, QUEUED or ERROR


@dataclass(slots=True)
class ReportData:
    questions: list[dict[str, Any]]
    events: list[dict[str, Any]]
    dead_letters: list[DeadLetter]
    requests: list[RequestRow] | None = None
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    usage: list[dict[str, Any]] = field(default_factory=list)  # priced LLM calls (spend)


def load(repo: Repository, source: str = "") -> ReportData:
    return ReportData(
        questions=repo.export_questions(),
        events=repo.export_events(),
        dead_letters=repo.dead_letters(limit=ALL_DEAD_LETTERS, include_replayed=True),
        source=source,
        usage=repo.export_usage(),
    )


def classify_outcome(value: str) -> str:
    v = value.strip().lower()
    if v in _HIT:
        return HIT
    if v in _QUEUED:
        return QUEUED
    if v.isdigit():
        code = int(v)
        if code == 200:
            return HIT
        if code == 202:
            return QUEUED
    return ERROR


def _present(header: Sequence[str], names: Iterable[str]) -> list[str]:
    lowered = {h.strip().lower(): h for h in header}
    return [lowered[name] for name in names if name in lowered]


def _latency_s(line: dict[str, str], columns: list[tuple[str, float]]) -> float | None:
    """The first non-empty latency column of the row, in seconds."""
    for col, scale in columns:
        raw = (line.get(col) or "").strip()
        if raw:
            try:
                return float(raw) * scale
            except ValueError:
                return None
    return None


def read_requests(path: str | Path) -> list[RequestRow]:
    with Path(path).open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        t_cols = _present(header, _TIME_COLUMNS)
        lat_cols = [(c, 1.0) for c in _present(header, _SECONDS_COLUMNS)]
        lat_cols += [(c, 0.001) for c in _present(header, _MS_COLUMNS)]
        o_cols = _present(header, _OUTCOME_COLUMNS)
        missing = [
            what
            for what, cols in (("send time", t_cols), ("latency", lat_cols), ("outcome", o_cols))
            if not cols
        ]
        if missing:
            raise RequestsFileError(
                f"{path}: no {', '.join(missing)} column (have: {', '.join(header)}); "
                "see qaloop.report.data for the accepted names"
            )
        rows: list[RequestRow] = []
        for line in reader:
            latency = _latency_s(line, lat_cols)
            try:
                sent = float(line[t_cols[0]])
            except (TypeError, ValueError):
                continue
            if latency is None:
                continue  # a row without numbers (e.g. a client error before sending)
            rows.append(RequestRow(sent, latency, classify_outcome(line[o_cols[0]] or "")))
    return rows
