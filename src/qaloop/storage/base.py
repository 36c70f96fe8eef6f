"""The repository interface. Every write is idempotent, so replayed messages never duplicate:

- `accept` inserts a question once (unique question id); a second accept returns the row.
- `apply` projects envelopes: a question row keeps the highest progress seen (a replayed older
  state never overwrites a newer one; the first final state wins), and history events are
  keyed by (question id, seq).
- `record_dead_letters` is keyed by a dedup key.
The tests in tests/contract/test_storage.py run against every implementation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from qaloop.core.model import Envelope, Event, QuestionRecord, progress_key


@dataclass(frozen=True, slots=True)
class DeadLetter:
    dedup_key: str
    reason: str
    source_topic: str
    at: float
    question_id: str | None = None
    raw: bytes | None = None
    replayed: bool = False


class Repository(Protocol):
    def migrate(self) -> None: ...

    def accept(self, envelope: Envelope) -> tuple[bool, QuestionRecord]:
        """Insert a new question (state queued); returns (inserted, the row now stored)."""
        ...

    def accept_many(self, envelopes: Sequence[Envelope]) -> list[tuple[bool, QuestionRecord]]:
        """`accept` for each envelope, in order, in one transaction (group commit)."""
        ...

    def get(self, question_id: str) -> QuestionRecord | None: ...

    def apply(self, envelopes: Sequence[Envelope]) -> None:
        """Project envelopes (states + history) in one transaction."""
        ...

    def add_hits(self, hits: Mapping[str, int]) -> None: ...

    def unfinished(self) -> list[Envelope]:
        """The last envelope of every question not yet validated or failed (for resume)."""
        ...

    def stale(self, older_than_s: float, limit: int = 1000) -> list[Envelope]:
        """Questions accepted more than `older_than_s` ago with nothing recorded since (state
        queued, no event after `accepted`), oldest first: the gateway may have stored them and
        died before publishing them (qaloop.services.recovery)."""
        ...

    def events(self, question_id: str) -> list[Event]: ...

    def record_dead_letters(self, letters: Sequence[DeadLetter]) -> None: ...

    def dead_letters(
        self, limit: int = 100, include_replayed: bool = False
    ) -> list[DeadLetter]: ...

    def mark_replayed(self, dedup_keys: Sequence[str]) -> None: ...

    def state_counts(self) -> dict[str, int]: ...

    def export_questions(self) -> list[dict[str, Any]]: ...

    def export_events(self) -> list[dict[str, Any]]: ...

    def usage_totals(self) -> dict[str, Any]:
        """Spend grouped for qaloop.llm.accounting.summarise: {"groups": [...], "questions": n}."""
        ...

    def export_usage(self) -> list[dict[str, Any]]:
        """Every priced LLM call (qaloop.storage.usage), ordered by question and seq."""
        ...

    def close(self) -> None: ...


def dedupe_batch(envelopes: Sequence[Envelope]) -> list[Envelope]:
    """One envelope per question (the highest progress, the first of equal ones), sorted by
    id: shared by every adapter so a batch never touches the same row twice."""
    best: dict[str, tuple[int, Envelope]] = {}
    for envelope in envelopes:
        progress = progress_key(envelope.state, envelope.attempt)
        seen = best.get(envelope.question_id)
        if seen is None or progress > seen[0]:
            best[envelope.question_id] = (progress, envelope)
    return [best[qid][1] for qid in sorted(best)]
