"""SQLite repository: the embedded default. WAL + synchronous=NORMAL: a committed transaction
survives the process being killed (SIGKILL); only an OS crash can lose the last commits."""

from __future__ import annotations

import dataclasses
import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from qaloop.core import codec
from qaloop.core.model import (
    Envelope,
    ErrorClass,
    Event,
    QuestionRecord,
    QuestionState,
    progress_key,
)
from qaloop.storage.base import (
    DeadLetter,
    WrittenHistory,
    dedupe_batch,
    encoded_by_id,
    reset_envelope,
)
from qaloop.storage.usage import (
    EXPORT_QUERY,
    QUESTIONS_QUERY,
    SQLITE_DDL,
    TOTALS_QUERY,
    USAGE_COLUMNS,
    export_from_rows,
    totals_from_rows,
    usage_rows,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS questions (
    question_id TEXT PRIMARY KEY,
    question TEXT NOT NULL,
    reference_answer TEXT,
    state TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    progress INTEGER NOT NULL,
    first_seen REAL NOT NULL,
    updated_at REAL NOT NULL,
    finished_at REAL,
    answer TEXT,
    score REAL,
    llm_calls INTEGER NOT NULL DEFAULT 0,
    hit_count INTEGER NOT NULL DEFAULT 0,
    error_class TEXT,
    error_detail TEXT,
    trace_id TEXT NOT NULL DEFAULT '',
    envelope BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS questions_state ON questions(state);
CREATE TABLE IF NOT EXISTS events (
    question_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    kind TEXT NOT NULL,
    at REAL NOT NULL,
    answer TEXT,
    score REAL,
    latency_ms REAL,
    error_class TEXT,
    detail TEXT,
    decision TEXT,
    wait_s REAL,
    PRIMARY KEY (question_id, seq)
);
CREATE TABLE IF NOT EXISTS dead_letters (
    dedup_key TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    source_topic TEXT NOT NULL,
    at REAL NOT NULL,
    question_id TEXT,
    raw BLOB,
    replayed INTEGER NOT NULL DEFAULT 0
);
"""

_QUESTION_COLUMNS = (
    "question_id, question, reference_answer, state, attempt, first_seen, updated_at, answer, "
    "score, llm_calls, hit_count, finished_at, error_class, error_detail, trace_id"
)

_UPSERT = """
INSERT INTO questions (question_id, question, reference_answer, state, attempt, progress,
    first_seen, updated_at, finished_at, answer, score, llm_calls, error_class, error_detail,
    trace_id, envelope)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(question_id) DO UPDATE SET
    state = excluded.state, attempt = excluded.attempt, progress = excluded.progress,
    updated_at = excluded.updated_at, finished_at = excluded.finished_at,
    answer = excluded.answer, score = excluded.score, llm_calls = excluded.llm_calls,
    error_class = excluded.error_class, error_detail = excluded.error_detail,
    envelope = excluded.envelope
WHERE excluded.progress > questions.progress AND excluded.trace_id = questions.trace_id
"""
# The trace id condition: a reset (reset_failed) starts a new run with a new trace id; a late
# message of the old run must not overwrite it, whatever its progress.

_INSERT_NEW = _UPSERT.split("ON CONFLICT")[0] + "ON CONFLICT(question_id) DO NOTHING"

# Overwrites every projected column of a failed row (question_row() order, minus id/question).
_RESET = """
UPDATE questions SET reference_answer = ?, state = ?, attempt = ?, progress = ?, first_seen = ?,
    updated_at = ?, finished_at = ?, answer = ?, score = ?, llm_calls = ?, error_class = ?,
    error_detail = ?, trace_id = ?, envelope = ?
WHERE question_id = ?
"""

_EVENT_INSERT = """
INSERT OR IGNORE INTO events (question_id, seq, attempt, kind, at, answer, score, latency_ms,
    error_class, detail, decision, wait_s) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""


_USAGE_INSERT = f"INSERT OR IGNORE INTO llm_usage ({USAGE_COLUMNS}) VALUES ({', '.join('?' * 13)})"


def question_row(envelope: Envelope, now: float, encoded: bytes | None = None) -> tuple[Any, ...]:
    """The values a projected envelope writes (shared with the PostgreSQL adapter); `encoded`:
    the envelope's bytes as received, stored as they are (encoding again costs ~10 µs)."""
    final = envelope.state.is_final
    finished_at = (envelope.history[-1].at if envelope.history else now) if final else None
    return (
        envelope.question_id,
        envelope.question,
        envelope.reference_answer,
        envelope.state.value,
        envelope.attempt,
        progress_key(envelope.state, envelope.attempt),
        envelope.first_seen,
        now,
        finished_at,
        envelope.answer,
        envelope.score,
        envelope.llm_calls,
        None if envelope.error_class is None else envelope.error_class.value,
        envelope.error_detail,
        envelope.trace_id,
        codec.encode(envelope) if encoded is None else encoded,
    )


def event_rows(envelope: Envelope, start: int = 0) -> list[tuple[Any, ...]]:
    """Rows of the history's events from seq `start` on (see storage.base.WrittenHistory)."""
    history = envelope.history if start <= 0 else envelope.history[start:]
    return [
        (
            envelope.question_id,
            e.seq,
            e.attempt,
            e.kind.value,
            e.at,
            e.answer,
            e.score,
            e.latency_ms,
            None if e.error_class is None else e.error_class.value,
            e.detail,
            e.decision,
            e.wait_s,
        )
        for e in history
    ]


def record_from_row(row: Sequence[Any]) -> QuestionRecord:
    (
        qid,
        question,
        reference,
        state,
        attempt,
        first_seen,
        updated_at,
        answer,
        score,
        llm_calls,
        hit_count,
        finished_at,
        error_class,
        error_detail,
        trace_id,
    ) = row
    return QuestionRecord(
        question_id=qid,
        question=question,
        reference_answer=reference,
        state=QuestionState(state),
        attempt=int(attempt),
        first_seen=float(first_seen),
        updated_at=float(updated_at),
        answer=answer,
        score=None if score is None else float(score),
        llm_calls=int(llm_calls),
        hit_count=int(hit_count),
        finished_at=None if finished_at is None else float(finished_at),
        error_class=None if error_class is None else ErrorClass(error_class),
        error_detail=error_detail,
        trace_id=trace_id or "",
    )


def event_from_row(row: Sequence[Any]) -> Event:
    seq, attempt, kind, at, answer, score, latency_ms, error_class, detail, decision, wait_s = row
    return Event.from_dict(
        {
            "seq": seq,
            "attempt": attempt,
            "kind": kind,
            "at": at,
            "answer": answer,
            "score": score,
            "latency_ms": latency_ms,
            "error_class": error_class,
            "detail": detail,
            "decision": decision,
            "wait_s": wait_s,
        }
    )


EVENT_COLUMNS = (
    "seq, attempt, kind, at, answer, score, latency_ms, error_class, detail, decision, wait_s"
)


class DatabaseLocked(RuntimeError):
    """Another process holds the embedded database (a second `qaloop serve` on it)."""


class DatabaseLock:
    """An exclusive lock on an embedded database, held for the life of the process that runs
    every stage on it: two embedded pipelines on one file would both resume and re-run the
    same unfinished questions (paying the LLM twice). `flock` on `<db>.lock` (beside the file:
    SQLite's own fcntl locks on the database are per-transaction); the kernel drops it when
    the process dies, so a SIGKILL leaves no stale lock."""

    def __init__(self, db_path: str) -> None:
        self.path = f"{db_path}.lock"
        self._fd: int | None = None

    def acquire(self) -> DatabaseLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = _read_pid(self.path)
            raise DatabaseLocked(
                f"database {self.path[: -len('.lock')]} is in use by another qaloop process"
                + (f" (pid {holder})" if holder else "")
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def _read_pid(path: str) -> str:
    try:
        with open(path, encoding="ascii") as fh:
            return fh.read().strip()
    except OSError:
        return ""


class SQLiteRepository:
    def __init__(self, path: str = ":memory:") -> None:
        self.path = path
        # One connection shared by threads, serialised by a lock: SQLite has one writer anyway.
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._written = WrittenHistory()
        with self._lock:
            self._conn.execute("PRAGMA busy_timeout=5000")
            self._enable_wal()
            self._conn.execute("PRAGMA synchronous=NORMAL")
        self.migrate()

    def _enable_wal(self) -> None:
        # Switching a new file to WAL needs an exclusive lock and SQLite answers "database is
        # locked" at once, without the busy handler, while another connection opens it too.
        for attempt in range(100):
            try:
                self._conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == 99:
                    raise
                time.sleep(0.01 * (1 + attempt % 10))

    def migrate(self) -> None:
        with self._lock:
            self._conn.executescript(SCHEMA + SQLITE_DDL)

    def accept(self, envelope: Envelope) -> tuple[bool, QuestionRecord]:
        return self.accept_many([envelope])[0]

    def accept_many(
        self, envelopes: Sequence[Envelope], *, wait_for_disk: bool = True
    ) -> list[tuple[bool, QuestionRecord]]:
        # wait_for_disk is ignored: an embedded pipeline has no other durable copy.
        now = time.time()
        ids = list(dict.fromkeys(e.question_id for e in envelopes))
        with self._lock:
            # IMMEDIATE: take the write lock first, so no other process can insert one of
            # these ids between our look-up and our insert.
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                existing = self._rows_by_id(ids)
                new: dict[str, Envelope] = {}
                for envelope in envelopes:
                    if envelope.question_id not in existing:
                        new.setdefault(envelope.question_id, envelope)
                self._conn.executemany(_INSERT_NEW, [question_row(e, now) for e in new.values()])
                self._conn.executemany(
                    _EVENT_INSERT, [row for e in new.values() for row in event_rows(e)]
                )
                existing.update(self._rows_by_id(list(new)))
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        results: list[tuple[bool, QuestionRecord]] = []
        for envelope in envelopes:
            # Only the first of duplicate envelopes in one batch counts as inserted.
            inserted = new.pop(envelope.question_id, None) is envelope
            results.append((inserted, record_from_row(existing[envelope.question_id])))
        return results

    def _rows_by_id(self, ids: list[str]) -> dict[str, Sequence[Any]]:
        rows: dict[str, Sequence[Any]] = {}
        for begin in range(0, len(ids), 500):  # stay under SQLite's bound-parameter limit
            chunk = ids[begin : begin + 500]
            marks = ",".join("?" * len(chunk))
            for row in self._conn.execute(
                f"SELECT {_QUESTION_COLUMNS} FROM questions WHERE question_id IN ({marks})", chunk
            ):
                rows[row[0]] = row
        return rows

    def get(self, question_id: str) -> QuestionRecord | None:
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_QUESTION_COLUMNS} FROM questions WHERE question_id = ?", (question_id,)
            ).fetchone()
        return None if row is None else record_from_row(row)

    def apply(
        self, envelopes: Sequence[Envelope], encoded: Sequence[bytes | None] | None = None
    ) -> None:
        if not envelopes:
            return
        now = time.time()
        raw = encoded_by_id(envelopes, encoded)
        # One row per question per batch, and each event once: a question that crossed three
        # topics since the last batch is one upsert, not three.
        questions = [question_row(e, now, raw.get(id(e))) for e in dedupe_batch(envelopes)]
        mark = self._written.mark
        events: dict[tuple[str, int], tuple[Any, ...]] = {}
        for envelope in envelopes:
            for row in event_rows(envelope, mark(envelope.question_id)):
                events.setdefault((row[0], row[1]), row)
        usage = usage_rows(envelopes, mark)
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                self._conn.executemany(_UPSERT, questions)
                self._conn.executemany(_EVENT_INSERT, list(events.values()))
                if usage:
                    self._conn.executemany(_USAGE_INSERT, usage)
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        self._written.committed(envelopes)

    def add_hits(self, hits: Mapping[str, int]) -> None:
        if not hits:
            return
        with self._lock:
            self._conn.executemany(
                "UPDATE questions SET hit_count = hit_count + ? WHERE question_id = ?",
                [(n, qid) for qid, n in hits.items()],
            )

    def unfinished(self) -> list[Envelope]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT envelope FROM questions WHERE state NOT IN ('validated', 'failed')"
            ).fetchall()
        return [codec.decode(r[0]) for r in rows]

    def stale(self, older_than_s: float, limit: int = 1000) -> list[Envelope]:
        cutoff = time.time() - older_than_s
        with self._lock:
            rows = self._conn.execute(
                "SELECT q.envelope FROM questions q WHERE q.state = 'queued' "
                "AND q.updated_at < ? AND NOT EXISTS (SELECT 1 FROM events e "
                "WHERE e.question_id = q.question_id AND e.seq > 0) "
                "ORDER BY q.updated_at LIMIT ?",
                (cutoff, limit),
            ).fetchall()
        return [codec.decode(r[0]) for r in rows]

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
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                row = self._conn.execute(
                    "SELECT envelope FROM questions WHERE question_id = ? AND state = 'failed'",
                    (question_id,),
                ).fetchone()
                if row is None:
                    self._conn.execute("ROLLBACK")
                    return None
                new = reset_envelope(
                    codec.decode(row[0]),
                    at=at,
                    trace_id=trace_id,
                    reference_answer=reference_answer,
                    by=by,
                    caller=caller,
                )
                values = question_row(new, at)
                self._conn.execute(_RESET, (*values[2:], question_id))
                self._conn.executemany(_EVENT_INSERT, event_rows(new))
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return new

    def events(self, question_id: str) -> list[Event]:
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {EVENT_COLUMNS} FROM events WHERE question_id = ? ORDER BY seq",
                (question_id,),
            ).fetchall()
        return [event_from_row(r) for r in rows]

    def record_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        with self._lock:
            self._conn.executemany(
                "INSERT OR IGNORE INTO dead_letters (dedup_key, reason, source_topic, at, "
                "question_id, raw) VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (d.dedup_key, d.reason, d.source_topic, d.at, d.question_id, d.raw)
                    for d in letters
                ],
            )

    def dead_letters(self, limit: int = 100, include_replayed: bool = False) -> list[DeadLetter]:
        where = "" if include_replayed else "WHERE replayed = 0"
        with self._lock:
            rows = self._conn.execute(
                "SELECT dedup_key, reason, source_topic, at, question_id, raw, replayed "
                f"FROM dead_letters {where} ORDER BY at LIMIT ?",
                (limit,),
            ).fetchall()
        return [DeadLetter(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6])) for r in rows]

    def dead_letters_by_key(self, dedup_keys: Sequence[str]) -> list[DeadLetter]:
        keys = sorted(set(dedup_keys))
        rows: list[Sequence[Any]] = []
        with self._lock:
            for start in range(0, len(keys), 500):  # SQLite's bound-parameter limit
                chunk = keys[start : start + 500]
                rows += self._conn.execute(
                    "SELECT dedup_key, reason, source_topic, at, question_id, raw, replayed "
                    f"FROM dead_letters WHERE dedup_key IN ({', '.join('?' * len(chunk))})",
                    chunk,
                ).fetchall()
        rows.sort(key=lambda r: (r[3], r[0]))
        return [DeadLetter(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6])) for r in rows]

    def mark_replayed(self, dedup_keys: Sequence[str]) -> None:
        with self._lock:
            self._conn.executemany(
                "UPDATE dead_letters SET replayed = 1 WHERE dedup_key = ?",
                [(k,) for k in dedup_keys],
            )

    def state_counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT state, COUNT(*) FROM questions GROUP BY state"
            ).fetchall()
        return {state: int(n) for state, n in rows}

    def export_questions(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._conn.execute(f"SELECT {_QUESTION_COLUMNS} FROM questions").fetchall()
        return [_asdict(record_from_row(r)) for r in rows]

    def export_events(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._conn.execute(
                f"SELECT question_id, {EVENT_COLUMNS} FROM events ORDER BY question_id, seq"
            ).fetchall()
        return [{"question_id": r[0], **event_from_row(r[1:]).to_dict()} for r in rows]

    def usage_totals(self) -> dict[str, Any]:
        with self._lock:
            rows = self._conn.execute(TOTALS_QUERY).fetchall()
            questions = self._conn.execute(QUESTIONS_QUERY).fetchone()[0]
        return totals_from_rows(rows, questions)

    def export_usage(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._conn.execute(EXPORT_QUERY).fetchall()
        return export_from_rows(rows)

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _asdict(record: QuestionRecord) -> dict[str, Any]:
    data = dataclasses.asdict(record)
    data["state"] = record.state.value
    data["error_class"] = None if record.error_class is None else record.error_class.value
    return data
