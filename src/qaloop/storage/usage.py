"""The `llm_usage` table, shared by both repositories: one row per priced LLM call, keyed by
(question id, event seq) like the events table, so a replayed envelope never counts a call
twice. Rows come from the history events that carry a `Usage` (qaloop.llm.accounting)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from qaloop.core.model import Envelope

USAGE_COLUMNS = (
    "question_id, seq, attempt, at, purpose, provider, model, lane, input_tokens, "
    "output_tokens, cached_tokens, estimated, cost_usd"
)

SQLITE_DDL = """
CREATE TABLE IF NOT EXISTS llm_usage (
    question_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    at REAL NOT NULL,
    purpose TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    lane TEXT NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cached_tokens INTEGER NOT NULL,
    estimated INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    PRIMARY KEY (question_id, seq)
);
"""

# GROUP BY what the summary needs (qaloop.llm.accounting.summarise): a handful of rows.
TOTALS_QUERY = (
    "SELECT purpose, attempt > 1, lane, estimated, COUNT(*), SUM(input_tokens), "
    "SUM(output_tokens), SUM(cached_tokens), SUM(cost_usd) FROM llm_usage "
    "GROUP BY purpose, attempt > 1, lane, estimated"
)
QUESTIONS_QUERY = "SELECT COUNT(DISTINCT question_id) FROM llm_usage"
EXPORT_QUERY = f"SELECT {USAGE_COLUMNS} FROM llm_usage ORDER BY question_id, seq"

_TOTAL_KEYS = (
    "purpose",
    "regeneration",
    "lane",
    "estimated",
    "calls",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "cost_usd",
)
_EXPORT_KEYS = tuple(c.strip() for c in USAGE_COLUMNS.split(","))


def usage_rows(
    envelopes: Sequence[Envelope], marks: Callable[[str], int] | None = None
) -> list[tuple[Any, ...]]:
    """One row per (question, seq) with usage; the first of duplicates wins. `marks`: per
    question, the seq below which rows are known stored (storage.base.WrittenHistory)."""
    rows: dict[tuple[str, int], tuple[Any, ...]] = {}
    for envelope in envelopes:
        start = 0 if marks is None else marks(envelope.question_id)
        for e in envelope.history[start:] if start else envelope.history:
            u = e.usage
            if u is None or (envelope.question_id, e.seq) in rows:
                continue
            rows[(envelope.question_id, e.seq)] = (
                envelope.question_id,
                e.seq,
                e.attempt,
                e.at,
                u.purpose,
                u.provider,
                u.model,
                u.lane,
                u.input_tokens,
                u.output_tokens,
                u.cached_tokens,
                u.estimated,
                u.cost_usd,
            )
    return [rows[k] for k in sorted(rows)]


def totals_from_rows(rows: Sequence[Sequence[Any]], questions: int) -> dict[str, Any]:
    groups = [dict(zip(_TOTAL_KEYS, r, strict=True)) for r in rows]
    for g in groups:
        g["regeneration"] = bool(g["regeneration"])
        g["estimated"] = bool(g["estimated"])
    return {"groups": groups, "questions": int(questions)}


def export_from_rows(rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    out = [dict(zip(_EXPORT_KEYS, r, strict=True)) for r in rows]
    for row in out:
        row["estimated"] = bool(row["estimated"])
    return out
