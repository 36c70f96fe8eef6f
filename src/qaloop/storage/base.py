"""The repository interface. Every write is idempotent, so replayed messages never duplicate:

- `accept` inserts a question once (unique question id); a second accept returns the row.
- `apply` projects envelopes: a question row keeps the highest progress seen (a replayed older
  state never overwrites a newer one; the first final state wins), and history events are
  keyed by (question id, seq).
- `record_dead_letters` is keyed by a dedup key.
The tests in tests/contract/test_storage.py run against every implementation.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from qaloop.core.model import (
    Envelope,
    Event,
    EventKind,
    QuestionRecord,
    QuestionState,
    progress_key,
)


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

    def accept_many(
        self, envelopes: Sequence[Envelope], *, wait_for_disk: bool = True
    ) -> list[tuple[bool, QuestionRecord]]:
        """`accept` for each envelope, in order, in one transaction (group commit).
        `wait_for_disk=False`: the commit may return before it is on disk (an OS crash can
        lose it) -- for callers whose durable copy is elsewhere (a replicated publish)."""
        ...

    def get(self, question_id: str) -> QuestionRecord | None: ...

    def apply(
        self, envelopes: Sequence[Envelope], encoded: Sequence[bytes | None] | None = None
    ) -> None:
        """Project envelopes (states + history) in one transaction. `encoded`, if given, holds
        each envelope's bytes as received (what `codec.decode` read it from), stored as the
        `envelope` column instead of encoding it again (None: encode that one)."""
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

    def dead_letters_by_key(self, dedup_keys: Sequence[str]) -> list[DeadLetter]:
        """The letters with these keys, replayed or not, oldest first (unknown keys: none)."""
        ...

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


@runtime_checkable
class Resettable(Protocol):
    """Optional: re-ask a failed question (qaloop.gateway: `retry_failed`, the admin reset)."""

    def reset_failed(
        self,
        question_id: str,
        *,
        at: float,
        trace_id: str,
        reference_answer: str | None,
        by: str,
        caller: str | None = None,
    ) -> Envelope | None:
        """In one transaction: if the question is failed, replace its row by a new run
        (`reset_envelope`) and return it; else None (not failed, or unknown)."""
        ...


def reset_envelope(
    old: Envelope,
    *,
    at: float,
    trace_id: str,
    reference_answer: str | None,
    by: str,
    caller: str | None = None,
) -> Envelope:
    """A new run of a failed question: attempt 1, state queued, no answer, a new trace id.
    The history goes on (a `reset` event), so event keys (question id, seq) never collide.
    The store applies an envelope only if its trace id is the row's (storage.sqlite _UPSERT):
    a late message of the old run can never overwrite the new one."""
    fresh = old.evolve(
        state=QuestionState.QUEUED,
        attempt=1,
        trace_id=trace_id,
        first_seen=at,
        reference_answer=reference_answer,
        answer=None,
        score=None,
        best_answer=None,
        best_score=None,
        best_attempt=None,
        error_class=None,
        error_detail=None,
        due_at=None,
        llm_calls=0,
        tries_in_attempt=0,
        feedback=None,  # the judge's feedback and experiment arm belong to the old run
        arm=None,
        caller=caller if caller is not None else old.caller,  # who pays for the new run
    )
    return fresh.with_event(EventKind.RESET, at, detail=f"reset by {by}"[:300])


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


def encoded_by_id(
    envelopes: Sequence[Envelope], encoded: Sequence[bytes | None] | None
) -> dict[int, bytes]:
    """`apply`'s `encoded` argument by envelope identity (dedupe_batch keeps the objects)."""
    if encoded is None:
        return {}
    if len(encoded) != len(envelopes):
        raise ValueError(f"{len(encoded)} encoded envelopes for {len(envelopes)} envelopes")
    return {id(e): r for e, r in zip(envelopes, encoded, strict=True) if r is not None}


class WrittenHistory:
    """How many leading events of each question's history this repository has committed.

    Events are insert-only, keyed (question id, seq), and seq is the event's index in the
    history; so once a batch holding an envelope with n events has committed, events 0..n-1 of
    that question are in the table, and a later envelope's events below n (and their usage
    rows) need not be sent again: the insert would do nothing. Every envelope carries its whole
    history, so without this a question's k-th state re-sends k events. Only ever raised, only
    after a commit; bounded (the oldest entries go first), and an unknown question sends its
    whole history, as before. Thread-safe."""

    def __init__(self, capacity: int = 200_000) -> None:
        self.capacity = capacity
        self._marks: dict[str, int] = {}
        self._lock = threading.Lock()

    def mark(self, question_id: str) -> int:
        return self._marks.get(question_id, 0)

    def committed(self, envelopes: Iterable[Envelope]) -> None:
        marks = self._marks
        with self._lock:
            for envelope in envelopes:
                qid, n = envelope.question_id, len(envelope.history)
                if n > marks.get(qid, 0):
                    marks.pop(qid, None)  # re-inserted last: dict order is recency
                    marks[qid] = n
            while len(marks) > self.capacity:
                del marks[next(iter(marks))]
