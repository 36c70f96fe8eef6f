"""The store's CPU per question, alone: a recorded-like message stream replayed through
`Store.handle_batch` into PostgreSQL, with the store's own CPU (this process, every thread) and
its PostgreSQL sessions' CPU measured, and nothing else running in the pipeline.

The stream: the questions of a real embedded run (`qaloop demo`'s SQLite file, `--db`), each
final envelope cut back along its history into the messages the store gets in distributed
mode -- queued (accepted, and again before each regeneration), scoring (each answer), the final
state -- copied under new ids up to `--questions`, and interleaved as a pipeline with
`--in-flight` questions moving at once delivers them, in batches of `--batch`. Every question is
accepted first, as the gateway does (not measured). Same stream for any version of the code:

    eval "$(scripts/infra env)"
    PYTHONPATH=src .venv/bin/python -m qaloop demo --db sqlite:////tmp/demo.db
    PYTHONPATH=src .venv/bin/python bench/bench_store.py --db /tmp/demo.db [--questions 5000]

Prints (and writes with --out) JSON: store and PostgreSQL CPU ms per question, messages, the
server's WAL per question (pg_stat_wal: every session's, so the store's alone only on a server
nothing else writes to), and
a digest of every stored row (`rows_sha256`: questions without `updated_at`, which is the
clock, events, usage), equal across versions of the code that store the same rows.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import resource
import sqlite3
import sys
import time
import uuid
from typing import Any

import orjson
import psycopg
from benchkit import _proc_cpu_s, machine_state, pg_schema

from qaloop.bus.base import Message, Topics
from qaloop.core import codec, wire
from qaloop.core.model import Envelope, EventKind, QuestionState
from qaloop.services.store import Store
from qaloop.storage.postgres import PostgresRepository


def messages_of(final: Envelope, topics: Topics) -> list[tuple[str, Envelope]]:
    """The (topic, envelope) records the store sees for one question, in order."""
    out: list[tuple[str, Envelope]] = []
    history = final.history
    for k, event in enumerate(history[:-1]):
        prefix = history[: k + 1]
        if event.kind is EventKind.ACCEPTED:
            state, attempt, topic = QuestionState.QUEUED, event.attempt, topics.questions
        elif event.kind is EventKind.GENERATED:
            state, attempt, topic = QuestionState.SCORING, event.attempt, topics.generated
        elif event.kind is EventKind.SCORED and event.decision == "retry":
            state, attempt, topic = QuestionState.QUEUED, event.attempt + 1, topics.questions
        else:
            continue
        env = final.evolve(
            state=state,
            attempt=attempt,
            history=prefix,
            answer=event.answer if state is QuestionState.SCORING else None,
            score=None,
            error_class=None,
            error_detail=None,
        )
        out.append((topic, env))
    out.append((topics.validated, final))
    return out


def build_stream(
    finals: list[Envelope], n: int, in_flight: int, topics: Topics
) -> tuple[list[Envelope], list[Message]]:
    accepted: list[Envelope] = []
    placed: list[tuple[float, int, Message]] = []
    for i in range(n):
        base = finals[i % len(finals)]
        qid = f"{i:08d}{base.question_id[8:]}"
        records = messages_of(base.evolve(question_id=qid), topics)
        accepted.append(records[0][1])
        for k, (topic, env) in enumerate(records):
            msg = Message(topic, 0, 0, qid, codec.encode(env), wire.envelope_headers(env))
            # question i's k-th record comes k * in_flight / 2 questions later in the stream
            placed.append((i + k * in_flight / 2, len(placed), msg))
    placed.sort()
    return accepted, [m for _, _, m in placed]


# every column of the tables the report and the API read, but questions.updated_at (the clock)
_DIGEST_QUERIES = (
    "SELECT question_id, question, reference_answer, state, attempt, progress, first_seen, "
    "finished_at, answer, score, llm_calls, hit_count, error_class, error_detail, trace_id, "
    "envelope FROM questions ORDER BY question_id",
    "SELECT * FROM events ORDER BY question_id, seq",
    "SELECT * FROM llm_usage ORDER BY question_id, seq",
)


def rows_digest(conn: psycopg.Connection[Any]) -> str:
    digest = hashlib.sha256()
    for query in _DIGEST_QUERIES:
        for row in conn.execute(query):
            digest.update(
                repr(tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)).encode()
            )
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", required=True, help="SQLite file of an embedded run (demo)")
    parser.add_argument("--questions", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=160, help="messages per consumed batch")
    parser.add_argument("--in-flight", type=int, default=300)
    parser.add_argument("--write-mode", default="auto", help="PostgresRepository write_mode")
    parser.add_argument("--dsn", default=os.environ.get("QALOOP_PG_DSN"))
    parser.add_argument("--out")
    args = parser.parse_args()
    if not args.dsn:
        parser.error('no PostgreSQL: eval "$(scripts/infra env)" or --dsn')
    with sqlite3.connect(args.db) as conn:
        finals = [codec.decode(bytes(r[0])) for r in conn.execute("SELECT envelope FROM questions")]
    finals = [f for f in finals if f.state.is_final]
    topics = Topics()
    accepted, stream = build_stream(finals, args.questions, args.in_flight, topics)
    app = f"benchstore-{uuid.uuid4().hex[:8]}"
    with pg_schema(args.dsn, "bench_store") as (schema, _db):
        gateway = PostgresRepository(args.dsn, schema=schema)
        for begin in range(0, len(accepted), 1000):
            gateway.accept_many(accepted[begin : begin + 1000])
        os.environ["PGAPPNAME"] = app  # the store's sessions, found by name below
        repo = PostgresRepository(args.dsn, schema=schema, write_mode=args.write_mode)
        store = Store(repo, topics)
        machine_before = machine_state()

        def sessions_cpu() -> float:
            with psycopg.connect(args.dsn, autocommit=True) as c:
                pids = c.execute(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (app,)
                ).fetchall()
            return sum(_proc_cpu_s(int(p)) for (p,) in pids)

        def server_wal() -> tuple[int, int, int]:
            with psycopg.connect(args.dsn, autocommit=True) as c:
                row = c.execute(
                    "SELECT wal_records, wal_fpi, wal_bytes FROM pg_stat_wal"
                ).fetchone()
            return (0, 0, 0) if row is None else (int(row[0]), int(row[1]), int(row[2]))

        async def replay() -> None:
            for begin in range(0, len(stream), args.batch):
                await store.handle_batch(stream[begin : begin + args.batch])

        pg0, wal0 = sessions_cpu(), server_wal()
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        asyncio.run(replay())
        wall = time.perf_counter() - t0
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        pg1, wal1 = sessions_cpu(), server_wal()
        with psycopg.connect(_db, autocommit=True) as c:
            states = dict(c.execute("SELECT state, count(*) FROM questions GROUP BY 1").fetchall())
            events = c.execute("SELECT count(*) FROM events").fetchone()
            digest = rows_digest(c)
        repo.close()
        gateway.close()
    store_s = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    n = args.questions
    result: dict[str, Any] = {
        "command": "python bench/bench_store.py " + " ".join(sys.argv[1:]),
        "questions": n,
        "messages": len(stream),
        "batch": args.batch,
        "wall_s": round(wall, 3),
        "cpu_ms_per_question": {
            "store": round(store_s * 1000 / n, 3),
            "postgresql: store": round((pg1 - pg0) * 1000 / n, 3),
        },
        # the whole server's WAL while the stream was replayed: the store's alone only when
        # nothing else writes to that server
        "server_wal_per_question": {
            "records": round((wal1[0] - wal0[0]) / n, 2),
            "full_page_images": round((wal1[1] - wal0[1]) / n, 3),
            "bytes": round((wal1[2] - wal0[2]) / n),
        },
        "states": states,
        "event_rows": events[0] if events else 0,
        "rows_sha256": digest,
        "machine_at_start": machine_before,
        "machine_at_end": machine_state(),
    }
    text = orjson.dumps(result, option=orjson.OPT_INDENT_2).decode()
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
