"""The report's inputs: what storage holds (read only through the Repository interface) and,
optionally, the per-request CSV the traffic generator writes.

Requests CSV: one row per request, with a header. Columns are matched by name, case-insensitive:

- send time (epoch or relative seconds): ``sent_at``, ``t``, ``time``, ``ts``, ``at``,
  ``started_at`` or ``start``;
- time to the answer: ``time_to_answer_s``, ``latency_s`` or ``elapsed_s`` (seconds), or
  ``time_to_answer_ms``, ``latency_ms`` or ``elapsed_ms`` (milliseconds);
- what happened: ``outcome``, ``source``, ``status`` or ``result``. A value of hit / cache /
  storage / answered counts as a hit; queued / accepted / joined / validated / failed / miss as a
  queued question; anything else (error, timeout, an HTTP status >= 400) as an error.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qaloop.storage.base import DeadLetter, Repository

ALL_DEAD_LETTERS = 10_000_000

_TIME_COLUMNS = ("sent_at", "t", "time", "ts", "at", "started_at", "start")
_SECONDS_COLUMNS = ("time_to_answer_s", "latency_s", "elapsed_s")
_MS_COLUMNS = ("time_to_answer_ms", "latency_ms", "elapsed_ms")
_OUTCOME_COLUMNS = ("outcome", "source", "status", "result")
_HIT = frozenset({"hit", "cache", "storage", "answered", "cached"})
_QUEUED = frozenset({"queued", "accepted", "joined", "validated", "failed", "miss", "coalesced"})

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


def load(repo: Repository, source: str = "") -> ReportData:
    return ReportData(
        questions=repo.export_questions(),
        events=repo.export_events(),
        dead_letters=repo.dead_letters(limit=ALL_DEAD_LETTERS, include_replayed=True),
        source=source,
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


def _pick(header: Sequence[str], names: Iterable[str]) -> str | None:
    lowered = {h.strip().lower(): h for h in header}
    for name in names:
        if name in lowered:
            return lowered[name]
    return None


def read_requests(path: str | Path) -> list[RequestRow]:
    with Path(path).open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        t_col = _pick(header, _TIME_COLUMNS)
        s_col = _pick(header, _SECONDS_COLUMNS)
        ms_col = None if s_col else _pick(header, _MS_COLUMNS)
        o_col = _pick(header, _OUTCOME_COLUMNS)
        missing = [
            what
            for what, col in (
                ("send time", t_col),
                ("latency", s_col or ms_col),
                ("outcome", o_col),
            )
            if col is None
        ]
        if missing:
            raise RequestsFileError(
                f"{path}: no {', '.join(missing)} column (have: {', '.join(header)}); "
                "see qaloop.report.data for the accepted names"
            )
        assert t_col is not None and o_col is not None
        rows: list[RequestRow] = []
        for line in reader:
            try:
                sent = float(line[t_col])
                raw = float(line[s_col] if s_col else line[ms_col or ""])
            except (TypeError, ValueError):
                continue  # a row without numbers (e.g. a client error before sending)
            latency = raw if s_col else raw / 1000.0
            rows.append(RequestRow(sent, latency, classify_outcome(line[o_col] or "")))
    return rows
