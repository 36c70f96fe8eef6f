"""PostgreSQL repository (distributed mode): psycopg 3 with a connection pool.

The same idempotent semantics as the SQLite repository (see storage.base):

- questions(question_id): an upsert overwrites a row only with a strictly higher `progress`,
  so a replayed older state never goes backwards and the first final state wins;
- events(question_id, seq): INSERT ... ON CONFLICT DO NOTHING;
- dead_letters(dedup_key): INSERT ... ON CONFLICT DO NOTHING;
- hit counts are added, never set.

`apply()` writes a whole batch in one transaction. Before writing, a batch is reduced to one
envelope per question (the highest progress; the first of equal ones, as SQLite's row-by-row
upsert would keep): PostgreSQL refuses an INSERT ... ON CONFLICT DO UPDATE that touches the same
row twice ("cannot affect row a second time"). Rows are written sorted by key, so concurrent
batches that overlap lock rows in the same order and can't deadlock.

Two write paths (measured in bench/bench_storage.py, see docs/storage.md): "unnest" sends each
table's rows as one binary array per column and merges them with one INSERT ... SELECT FROM
unnest(...) ... ON CONFLICT per table; "executemany" sends one upsert per row in pipeline mode.
The default, `write_mode="auto"`, is unnest: it costs less CPU on both sides at every batch
size measured (bench/bench_store.py --write-mode, batches of 4 to 160 messages).

Schema migrations live in qaloop/storage/migrations/NNNN_*.sql and are applied in order under an
advisory lock, so concurrent starts are safe.

PostgreSQL TEXT can't hold NUL characters: they are replaced by U+FFFD in the text columns (the
stored envelope, a BYTEA, keeps the original bytes).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal, ParamSpec, TypeVar

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout

from qaloop.core import codec
from qaloop.core.model import Envelope, Event, QuestionRecord
from qaloop.core.retry import full_jitter_backoff
from qaloop.storage.base import (
    DeadLetter,
    WrittenHistory,
    dedupe_batch,
    encoded_by_id,
    reset_envelope,
)
from qaloop.storage.pg_arrays import PgArray, adapters, encode_array
from qaloop.storage.sqlite import (
    EVENT_COLUMNS,
    event_from_row,
    event_rows,
    question_row,
    record_from_row,
)
from qaloop.storage.usage import (
    EXPORT_QUERY,
    QUESTIONS_QUERY,
    TOTALS_QUERY,
    USAGE_COLUMNS,
    export_from_rows,
    totals_from_rows,
    usage_rows,
)

log = logging.getLogger(__name__)

WriteMode = Literal["auto", "unnest", "executemany"]

# pg_advisory_lock(key1, key2): key1 is ours ("qalo"), key2 the schema being migrated.
_LOCK_NAMESPACE = 0x71616C6F
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")

_QUESTION_COLUMNS = (
    "question_id, question, reference_answer, state, attempt, first_seen, updated_at, answer, "
    "score, llm_calls, hit_count, finished_at, error_class, error_detail, trace_id"
)
# the order of storage.sqlite.question_row()
_WRITE_COLUMNS = (
    "question_id, question, reference_answer, state, attempt, progress, first_seen, updated_at, "
    "finished_at, answer, score, llm_calls, error_class, error_detail, trace_id, envelope"
)
_EVENT_WRITE_COLUMNS = f"question_id, {EVENT_COLUMNS}"

_ON_CONFLICT_QUESTION = """
ON CONFLICT (question_id) DO UPDATE SET
    state = excluded.state, attempt = excluded.attempt, progress = excluded.progress,
    updated_at = excluded.updated_at, finished_at = excluded.finished_at,
    answer = excluded.answer, score = excluded.score, llm_calls = excluded.llm_calls,
    error_class = excluded.error_class, error_detail = excluded.error_detail,
    envelope = excluded.envelope
WHERE excluded.progress > questions.progress AND excluded.trace_id = questions.trace_id
"""
# The trace id condition: see storage.base.reset_envelope (a reset starts a new run).

_USAGE_INSERT = (
    f"INSERT INTO llm_usage ({USAGE_COLUMNS}) VALUES ({', '.join(['%s'] * 13)}) "
    "ON CONFLICT (question_id, seq) DO NOTHING"
)
_VALUES_16 = ", ".join(["%s"] * 16)
_VALUES_12 = ", ".join(["%s"] * 12)
_UPSERT = f"INSERT INTO questions ({_WRITE_COLUMNS}) VALUES ({_VALUES_16}) {_ON_CONFLICT_QUESTION}"
_EVENT_INSERT = (
    f"INSERT INTO events ({_EVENT_WRITE_COLUMNS}) VALUES ({_VALUES_12}) "
    "ON CONFLICT (question_id, seq) DO NOTHING"
)

# every connection's adapters: psycopg's and the arrays of the set-based writes
_ADAPTERS = adapters()
_QUESTION_TYPES = [
    "text", "text", "text", "text", "int4", "int4", "float8", "float8",
    "float8", "text", "float8", "int4", "text", "text", "text", "bytea",
]  # fmt: skip
_EVENT_TYPES = [
    "text", "int4", "int4", "text", "float8", "text",
    "float8", "float8", "text", "text", "text", "float8",
]  # fmt: skip
_USAGE_TYPES = [
    "text", "int4", "int4", "float8", "text", "text", "text",
    "text", "int4", "int4", "int4", "bool", "float8",
]  # fmt: skip


def _unnest_insert(table: str, columns: str, types: Sequence[str], rest: str) -> str:
    """INSERT INTO table SELECT ... FROM unnest(one binary array parameter per column)."""
    arrays = ", ".join(f"%b::{t}[]" for t in types)
    return (
        f"INSERT INTO {table} ({columns}) SELECT {columns} "
        f"FROM unnest({arrays}) AS s({columns}) {rest}"
    )


# The NOT EXISTS leaves out the rows the upsert's WHERE would refuse anyway (the negation of
# that WHERE against the committed row: the gateway already stored every question's first
# message; replays): ON CONFLICT DO UPDATE locks the existing row before it checks its WHERE,
# a WAL record and a dirtied page for nothing. Safe under concurrency: within a run a committed
# progress only grows, a trace id only changes by a reset to a new one (refused either way),
# and a row another batch is still writing isn't seen here, so the upsert waits and checks it.
_MERGE_QUESTIONS = _unnest_insert(
    "questions",
    _WRITE_COLUMNS,
    _QUESTION_TYPES,
    "WHERE NOT EXISTS (SELECT 1 FROM questions q WHERE q.question_id = s.question_id "
    "AND (q.progress >= s.progress OR q.trace_id <> s.trace_id)) "
    f"ORDER BY question_id {_ON_CONFLICT_QUESTION}",
)
# accept: new questions only
_INSERT_NEW = _unnest_insert(
    "questions",
    _WRITE_COLUMNS,
    _QUESTION_TYPES,
    "ORDER BY question_id ON CONFLICT (question_id) DO NOTHING RETURNING question_id",
)
_MERGE_EVENTS = _unnest_insert(
    "events",
    _EVENT_WRITE_COLUMNS,
    _EVENT_TYPES,
    "ORDER BY question_id, seq ON CONFLICT (question_id, seq) DO NOTHING",
)
_MERGE_USAGE = _unnest_insert(
    "llm_usage",
    USAGE_COLUMNS,
    _USAGE_TYPES,
    "ORDER BY question_id, seq ON CONFLICT (question_id, seq) DO NOTHING",
)


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations() -> list[Migration]:
    """The migration files shipped in the package, in version order."""
    found: list[Migration] = []
    for entry in resources.files("qaloop.storage").joinpath("migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match is None:
            continue
        found.append(Migration(int(match.group(1)), entry.name, entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions: {[m.name for m in found]}")
    return found


def _clean(value: Any) -> Any:
    if isinstance(value, str) and "\x00" in value:
        return value.replace("\x00", "\ufffd")
    return value


def _clean_row(row: tuple[Any, ...]) -> tuple[Any, ...]:
    if any(isinstance(v, str) and "\x00" in v for v in row):
        return tuple(_clean(v) for v in row)
    return row


def _clean_event_row(row: tuple[Any, ...]) -> tuple[Any, ...]:
    # free text of an event row (storage.sqlite.event_rows): question_id, answer, detail,
    # decision; the rest are numbers and enum values
    for i in (0, 5, 9, 10):
        value = row[i]
        if value and "\x00" in value:
            return _clean_row(row)
    return row


def _clean_question_row(row: tuple[Any, ...]) -> tuple[Any, ...]:
    # every text column is also in the envelope (last column), where JSON writes NUL as
    # \u0000 (and a binary encoding as the byte itself): a bytes search, not a look at every
    # column
    raw = row[-1]
    return _clean_row(row) if b"\\u0000" in raw or b"\x00" in raw else row


def batch_rows(
    envelopes: Sequence[Envelope],
    now: float,
    encoded: Sequence[bytes | None] | None = None,
    mark: Callable[[str], int] | None = None,
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Question rows (deduplicated, sorted) and event rows (every envelope's history from
    `mark(question_id)` on -- storage.base.WrittenHistory; the first of each (question_id, seq)
    kept, sorted) for one batch."""
    raw = encoded_by_id(envelopes, encoded)
    questions = [
        _clean_question_row(question_row(e, now, raw.get(id(e)))) for e in dedupe_batch(envelopes)
    ]
    events: dict[tuple[str, int], tuple[Any, ...]] = {}
    for envelope in envelopes:
        start = 0 if mark is None else mark(envelope.question_id)
        for row in event_rows(envelope, start):
            events.setdefault((row[0], row[1]), row)
    return questions, [_clean_event_row(events[key]) for key in sorted(events)]


_P = ParamSpec("_P")
_R = TypeVar("_R")
# Errors after which PostgreSQL has rolled the whole transaction back: running it again is
# safe for every write here (they are idempotent, or nothing of them was applied).
_TRANSIENT = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)
_TRANSIENT_TRIES = 3
_jitter = random.Random()


def _retry_transient(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run a write transaction again (up to 3 tries in all) when PostgreSQL aborted it as a
    deadlock victim or a serialization failure, instead of failing a whole batch."""

    @functools.wraps(method)
    def retrying(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        for try_no in range(1, _TRANSIENT_TRIES):
            try:
                return method(*args, **kwargs)
            except _TRANSIENT as exc:
                log.warning("%s: %s, trying again", method.__name__, type(exc).__name__)
                time.sleep(full_jitter_backoff(try_no, 0.01, 0.1, _jitter))
        return method(*args, **kwargs)  # the last try: its error goes to the caller

    return retrying


def _columns(rows: list[tuple[Any, ...]], types: Sequence[str]) -> list[PgArray]:
    """The rows as one binary array per column, for unnest."""
    return [encode_array(c, t) for c, t in zip(zip(*rows, strict=True), types, strict=True)]


class PostgresRepository:
    """The Repository protocol over PostgreSQL. Thread-safe: every call borrows a pooled
    connection for one transaction."""

    def __init__(
        self,
        dsn: str,
        *,
        schema: str | None = None,
        min_size: int = 1,
        max_size: int = 4,
        write_mode: WriteMode = "auto",
        connect_timeout: float = 30.0,
        migrate: bool = True,
    ) -> None:
        if write_mode not in ("auto", "unnest", "executemany"):
            raise ValueError(f"unknown write_mode {write_mode!r}")
        self.write_mode: WriteMode = write_mode
        self._written = WrittenHistory()
        self.schema = schema
        kwargs: dict[str, Any] = {"context": _ADAPTERS}
        if schema is not None:
            kwargs["options"] = f"-c search_path={_quote_ident(schema)}"
        self._kwargs = kwargs
        self._dsn = dsn
        self._pool: ConnectionPool[psycopg.Connection[tuple[Any, ...]]] = ConnectionPool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            kwargs=kwargs,
            open=False,
            name="qaloop-storage",
        )
        try:
            self._pool.open(wait=True, timeout=connect_timeout)
            if migrate:
                self.migrate()
        except PoolTimeout as exc:
            self._pool.close()  # no reconnecting background workers left behind
            raise ConnectionError(
                f"PostgreSQL at {describe_dsn(dsn)} not reachable within {connect_timeout:g} s"
            ) from exc
        except BaseException:
            self._pool.close()
            raise

    @contextmanager
    def _tx(self) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        """A pooled connection inside one transaction (committed on success)."""
        with self._pool.connection() as conn, conn.transaction():
            yield conn

    # -- migrations -------------------------------------------------------------------------

    def migrate(self) -> None:
        """Apply the pending migrations in order, each in its own transaction, holding a
        session advisory lock for this schema so concurrent starts apply each file once."""
        migrations = load_migrations()
        with psycopg.connect(self._dsn, autocommit=True, **self._kwargs) as conn:
            # the schema may not exist yet (current_schema() is then NULL): key on its name
            lock_sql = "hashtext(coalesce(%s, current_schema(), 'public')))"
            lock_args = (_LOCK_NAMESPACE, self.schema)
            conn.execute("SELECT pg_advisory_lock(%s, " + lock_sql, lock_args)
            try:
                if self.schema is not None:
                    conn.execute(
                        sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                            sql.Identifier(self.schema)
                        )
                    )
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " version INTEGER PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL,"
                    " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
                )
                applied = {
                    int(v): (str(n), str(c))
                    for v, n, c in conn.execute(
                        "SELECT version, name, checksum FROM schema_migrations"
                    ).fetchall()
                }
                for migration in migrations:
                    done = applied.get(migration.version)
                    if done is not None:
                        if done[1] != migration.checksum:
                            log.warning(
                                "migration %s changed after it was applied (as %s); "
                                "add a new migration instead of editing an applied one",
                                migration.name,
                                done[0],
                            )
                        continue
                    with conn.transaction():
                        conn.execute(migration.sql)  # type: ignore[arg-type]  # trusted file
                        conn.execute(
                            "INSERT INTO schema_migrations (version, name, checksum) "
                            "VALUES (%s, %s, %s)",
                            (migration.version, migration.name, migration.checksum),
                        )
                    log.info("applied migration %s", migration.name)
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s, " + lock_sql, lock_args)

    def applied_migrations(self) -> list[int]:
        with self._tx() as conn:
            rows = conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
        return [int(r[0]) for r in rows]

    # -- questions --------------------------------------------------------------------------

    def accept(self, envelope: Envelope) -> tuple[bool, QuestionRecord]:
        return self.accept_many([envelope])[0]

    @_retry_transient
    def accept_many(
        self, envelopes: Sequence[Envelope], *, wait_for_disk: bool = True
    ) -> list[tuple[bool, QuestionRecord]]:
        """Set-based: one INSERT of every new row (sorted by id, so concurrent group commits
        lock in one order), one of their events, the stored rows back in one SELECT. Of several
        envelopes of one question, only the first is inserted and reported as inserted."""
        if not envelopes:
            return []
        now = time.time()
        first: dict[str, Envelope] = {}
        for envelope in envelopes:
            first.setdefault(envelope.question_id, envelope)
        ids = sorted(first)
        rows = [_clean_question_row(question_row(first[qid], now)) for qid in ids]
        with self._tx() as conn, conn.cursor() as cur:
            if not wait_for_disk:
                # This transaction only: its commit returns once in the WAL buffers (the WAL
                # writer flushes it within 3 x wal_writer_delay). The store's writes still wait.
                cur.execute("SET LOCAL synchronous_commit = off")
            cur.execute(_INSERT_NEW, _columns(rows, _QUESTION_TYPES))
            inserted = {r[0] for r in cur.fetchall()}
            events = [
                _clean_event_row(r)
                for qid in ids
                if qid in inserted
                for r in event_rows(first[qid])
            ]
            if events:
                cur.execute(_MERGE_EVENTS, _columns(events, _EVENT_TYPES))
            stored = {
                r[0]: record_from_row(r)
                for r in cur.execute(
                    f"SELECT {_QUESTION_COLUMNS} FROM questions WHERE question_id = ANY(%s)",
                    (ids,),
                ).fetchall()
            }
        results: list[tuple[bool, QuestionRecord]] = []
        for envelope in envelopes:
            qid = envelope.question_id
            is_new = qid in inserted and first[qid] is envelope
            if is_new:
                inserted.discard(qid)  # the same envelope object twice: only once inserted
            results.append((is_new, stored[qid]))
        return results

    def get(self, question_id: str) -> QuestionRecord | None:
        with self._tx() as conn:
            row = conn.execute(
                f"SELECT {_QUESTION_COLUMNS} FROM questions WHERE question_id = %s",
                (question_id,),
            ).fetchone()
        return None if row is None else record_from_row(row)

    @_retry_transient
    def apply(
        self, envelopes: Sequence[Envelope], encoded: Sequence[bytes | None] | None = None
    ) -> None:
        if not envelopes:
            return
        mark = self._written.mark
        questions, events = batch_rows(envelopes, time.time(), encoded, mark)
        usage = [_clean_row(r) for r in usage_rows(envelopes, mark)]
        with self._tx() as conn:
            if self.write_mode != "executemany":
                self._apply_unnest(conn, questions, events, usage)
            else:
                self._apply_executemany(conn, questions, events, usage)
        self._written.committed(envelopes)

    @staticmethod
    def _apply_executemany(
        conn: psycopg.Connection[Any],
        questions: list[tuple[Any, ...]],
        events: list[tuple[Any, ...]],
        usage: list[tuple[Any, ...]],
    ) -> None:
        with conn.cursor() as cur:  # executemany runs in pipeline mode (libpq >= 14)
            cur.executemany(_UPSERT, questions)
            if events:
                cur.executemany(_EVENT_INSERT, events)
            if usage:
                cur.executemany(_USAGE_INSERT, usage)

    @staticmethod
    def _apply_unnest(
        conn: psycopg.Connection[Any],
        questions: list[tuple[Any, ...]],
        events: list[tuple[Any, ...]],
        usage: list[tuple[Any, ...]],
    ) -> None:
        # One statement per table and no staging: the COPY path it replaced wrote every row
        # into a temporary table first, and each commit truncated those (ON COMMIT DELETE
        # ROWS): ~40 % of the store's PostgreSQL CPU per question (docs/storage.md).
        with conn.cursor() as cur:
            for rows, merge, types in (
                (questions, _MERGE_QUESTIONS, _QUESTION_TYPES),
                (events, _MERGE_EVENTS, _EVENT_TYPES),
                (usage, _MERGE_USAGE, _USAGE_TYPES),
            ):
                if rows:
                    cur.execute(merge, _columns(rows, types))

    @_retry_transient
    def add_hits(self, hits: Mapping[str, int]) -> None:
        if not hits:
            return
        ids = sorted(hits)
        with self._tx() as conn:
            # Lock the rows in id order first, as every other multi-row write here does: an
            # UPDATE ... FROM locks them in whatever order its join produces (heap order), and
            # against a concurrent batch upsert that order deadlocks (seen in CI).
            conn.execute(
                "SELECT 1 FROM questions WHERE question_id = ANY(%s) "
                "ORDER BY question_id FOR UPDATE",
                (ids,),
            )
            conn.execute(
                "UPDATE questions SET hit_count = questions.hit_count + h.n "
                "FROM unnest(%s::text[], %s::bigint[]) AS h(question_id, n) "
                "WHERE questions.question_id = h.question_id",
                (ids, [int(hits[q]) for q in ids]),
            )

    @_retry_transient
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
        with self._tx() as conn:
            row = conn.execute(
                "SELECT envelope FROM questions WHERE question_id = %s AND state = 'failed' "
                "FOR UPDATE",
                (question_id,),
            ).fetchone()
            if row is None:
                return None
            new = reset_envelope(
                codec.decode(bytes(row[0])),
                at=at,
                trace_id=trace_id,
                reference_answer=reference_answer,
                by=by,
                caller=caller,
            )
            values = _clean_question_row(question_row(new, at))
            conn.execute(
                "UPDATE questions SET reference_answer = %s, state = %s, attempt = %s, "
                "progress = %s, first_seen = %s, updated_at = %s, finished_at = %s, answer = %s, "
                "score = %s, llm_calls = %s, error_class = %s, error_detail = %s, trace_id = %s, "
                "envelope = %s WHERE question_id = %s",
                (*values[2:], question_id),
            )
            with conn.cursor() as cur:
                cur.executemany(_EVENT_INSERT, [_clean_event_row(r) for r in event_rows(new)])
        return new

    def unfinished(self) -> list[Envelope]:
        with self._tx() as conn:
            rows = conn.execute(
                # finished_at IS NULL is the same condition, and what the index is on (0003)
                "SELECT envelope FROM questions WHERE finished_at IS NULL "
                "AND state NOT IN ('validated', 'failed') "
                "ORDER BY first_seen, question_id"
            ).fetchall()
        return [codec.decode(bytes(r[0])) for r in rows]

    def stale(self, older_than_s: float, limit: int = 1000) -> list[Envelope]:
        """Repository.stale: accepted more than `older_than_s` ago and nothing recorded since (still
        queued, no event after `accepted`), oldest first."""
        cutoff = time.time() - older_than_s
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT q.envelope FROM questions q WHERE q.state = 'queued' "
                "AND q.finished_at IS NULL AND q.updated_at < %s "
                "AND NOT EXISTS (SELECT 1 FROM events e "
                "WHERE e.question_id = q.question_id AND e.seq > 0) "
                "ORDER BY q.updated_at, q.question_id LIMIT %s",
                (cutoff, limit),
            ).fetchall()
        return [codec.decode(bytes(r[0])) for r in rows]

    def events(self, question_id: str) -> list[Event]:
        with self._tx() as conn:
            rows = conn.execute(
                f"SELECT {EVENT_COLUMNS} FROM events WHERE question_id = %s ORDER BY seq",
                (question_id,),
            ).fetchall()
        return [event_from_row(r) for r in rows]

    # -- dead letters -----------------------------------------------------------------------

    @_retry_transient
    def record_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        if not letters:
            return
        rows = sorted(
            {
                d.dedup_key: (
                    d.dedup_key,
                    _clean(d.reason),
                    _clean(d.source_topic),
                    d.at,
                    _clean(d.question_id),
                    d.raw,
                )
                for d in reversed(letters)  # the first of a duplicated key wins
            }.values()
        )
        with self._tx() as conn, conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO dead_letters (dedup_key, reason, source_topic, at, question_id, raw) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (dedup_key) DO NOTHING",
                rows,
            )

    def dead_letters(self, limit: int = 100, include_replayed: bool = False) -> list[DeadLetter]:
        where = "" if include_replayed else "WHERE NOT replayed"
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT dedup_key, reason, source_topic, at, question_id, raw, replayed "
                f"FROM dead_letters {where} ORDER BY at, dedup_key LIMIT %s",
                (limit,),
            ).fetchall()
        return [_letter(r) for r in rows]

    def dead_letters_by_key(self, dedup_keys: Sequence[str]) -> list[DeadLetter]:
        if not dedup_keys:
            return []
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT dedup_key, reason, source_topic, at, question_id, raw, replayed "
                "FROM dead_letters WHERE dedup_key = ANY(%s) ORDER BY at, dedup_key",
                (sorted(set(dedup_keys)),),
            ).fetchall()
        return [_letter(r) for r in rows]

    def mark_replayed(self, dedup_keys: Sequence[str]) -> None:
        if not dedup_keys:
            return
        with self._tx() as conn:
            conn.execute(
                "UPDATE dead_letters SET replayed = TRUE WHERE dedup_key = ANY(%s)",
                (sorted(set(dedup_keys)),),
            )

    # -- reports ----------------------------------------------------------------------------

    def state_counts(self) -> dict[str, int]:
        with self._tx() as conn:
            rows = conn.execute("SELECT state, COUNT(*) FROM questions GROUP BY state").fetchall()
        return {str(state): int(n) for state, n in rows}

    def export_questions(self) -> list[dict[str, Any]]:
        with self._tx() as conn:
            rows = conn.execute(
                f"SELECT {_QUESTION_COLUMNS} FROM questions ORDER BY question_id"
            ).fetchall()
        return [record_to_dict(record_from_row(r)) for r in rows]

    def export_events(self) -> list[dict[str, Any]]:
        with self._tx() as conn:
            rows = conn.execute(
                f"SELECT question_id, {EVENT_COLUMNS} FROM events ORDER BY question_id, seq"
            ).fetchall()
        return [{"question_id": r[0], **event_from_row(r[1:]).to_dict()} for r in rows]

    def usage_totals(self) -> dict[str, Any]:
        with self._tx() as conn:
            rows = conn.execute(TOTALS_QUERY).fetchall()
            questions = conn.execute(QUESTIONS_QUERY).fetchone()
        return totals_from_rows(rows, questions[0] if questions else 0)

    def export_usage(self) -> list[dict[str, Any]]:
        with self._tx() as conn:
            rows = conn.execute(EXPORT_QUERY).fetchall()
        return export_from_rows(rows)

    def close(self) -> None:
        self._pool.close()


def describe_dsn(dsn: str) -> str:
    """host:port/dbname of a DSN, for messages (never the password)."""
    try:
        info = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<invalid DSN>"
    host = info.get("host") or info.get("hostaddr") or "localhost"
    return f"{host}:{info.get('port') or 5432}/{info.get('dbname') or ''}"


def record_to_dict(record: QuestionRecord) -> dict[str, Any]:
    data = dataclasses.asdict(record)
    data["state"] = record.state.value
    data["error_class"] = None if record.error_class is None else record.error_class.value
    return data


def _quote_ident(name: str) -> str:
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
        raise ValueError(f"invalid schema name {name!r} (lower-case letters, digits and _ only)")
    return name


def _letter(r: Sequence[Any]) -> DeadLetter:
    return DeadLetter(
        r[0], r[1], r[2], float(r[3]), r[4], None if r[5] is None else bytes(r[5]), bool(r[6])
    )
