"""Storage benchmark (issue 3): rows/s through the repository's apply(), the call the store
consumer makes once per batch, on SQLite and PostgreSQL.

    .venv/bin/python bench/bench_storage.py            # QALOOP_PG_DSN for PostgreSQL
    .venv/bin/python bench/bench_storage.py --quick    # smaller counts, for a smoke run

Envelopes are realistic (~1 KB encoded: a question, a reference answer, an LLM answer and a
three-event history). Two workloads:

- insert:    every envelope is a new question (final state), as when validated answers arrive;
- lifecycle: every question arrives four times (queued, generating, scoring, validated), in
             pipeline order, so batches mostly update rows that exist, and repeat questions.

Each is written with apply() in batches of 1, 100 and 1000, and by a row-by-row baseline that
autocommits one statement per row (the question upsert, then one insert per history event), as a
naive consumer would. PostgreSQL runs both write paths of PostgresRepository (column arrays
through INSERT ... SELECT FROM unnest ... ON CONFLICT, and executemany in pipeline mode). Every
run starts on an empty store (a fresh SQLite file, a fresh PostgreSQL schema). Raw results:
bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qaloop.core import codec
from qaloop.core.model import Envelope, EventKind, QuestionState
from qaloop.storage.base import Repository
from qaloop.storage.sqlite import SQLiteRepository, event_rows, question_row

LAG = 100  # a question's next state arrives ~4 x LAG envelopes later (pipeline lag)
RESULTS = Path(__file__).resolve().parent / "results"
_VOCABULARY = (
    "the a of water light energy because when people usually system answer question sky blue "
    "reason scattering molecules wavelength shorter longer atmosphere sunlight color red eye "
    "perceive human brain simple explanation example years research science works different"
)
WORDS = _VOCABULARY.split()


def _text(rng: int, n_words: int) -> str:
    out, x = [], rng
    for _ in range(n_words):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        out.append(WORDS[x % len(WORDS)])
    return " ".join(out)


def lifecycle(i: int, t0: float) -> list[Envelope]:
    """The four envelopes a question produces on its way to validated (~1 KB each at the end)."""
    qid = f"bench-{i:08d}-{uuid.uuid4().hex[:8]}"
    q = Envelope(
        question_id=qid,
        question=_text(i, 18) + "?",
        reference_answer=_text(i + 7, 26),
        trace_id=uuid.uuid4().hex,
        first_seen=t0,
    ).with_event(EventKind.ACCEPTED, t0)
    g = q.evolve(state=QuestionState.GENERATING, tries_in_attempt=1)
    answer = _text(i + 13, 26)
    s = g.evolve(state=QuestionState.SCORING, answer=answer, llm_calls=1).with_event(
        EventKind.GENERATED, t0 + 0.8, answer=answer, latency_ms=812.5
    )
    v = s.evolve(state=QuestionState.VALIDATED, score=0.74).with_event(
        EventKind.SCORED, t0 + 0.9, score=0.74, decision="validated"
    )
    return [q, g, s, v]


def workload(kind: str, n_rows: int) -> list[Envelope]:
    t0 = time.time()
    if kind == "insert":
        return [lifecycle(i, t0)[-1] for i in range(n_rows)]
    # pipeline order: question i's k-th state arrives while later questions enter behind it
    lives = [lifecycle(i, t0) for i in range((n_rows + 3) // 4)]
    stream: list[Envelope] = []
    for step in range(len(lives) + 3 * LAG):
        for k in range(4):
            i = step - k * LAG
            if 0 <= i < len(lives):
                stream.append(lives[i][k])
    return stream[:n_rows]


# -- backends ---------------------------------------------------------------------------------


@dataclass
class Store:
    name: str
    repo: Repository
    row_by_row: Callable[[Sequence[Envelope]], None]
    cleanup: Callable[[], None]


def open_sqlite(tmp: Path) -> Store:
    path = tmp / f"bench-{uuid.uuid4().hex[:8]}.db"
    repo = SQLiteRepository(str(path))
    from qaloop.storage import sqlite as sq

    conn = sqlite3.connect(path, isolation_level=None)  # autocommit: one commit per statement
    conn.execute("PRAGMA synchronous=NORMAL")

    def row_by_row(envelopes: Sequence[Envelope]) -> None:
        for e in envelopes:
            now = time.time()
            conn.execute(sq._UPSERT, question_row(e, now))
            for row in event_rows(e):
                conn.execute(sq._EVENT_INSERT, row)

    def cleanup() -> None:
        conn.close()
        repo.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)

    return Store("sqlite", repo, row_by_row, cleanup)


def open_postgres(dsn: str, write_mode: str) -> Store:
    import psycopg

    from qaloop.storage import postgres as pg

    schema = f"qaloop_bench_{uuid.uuid4().hex[:12]}"
    repo = pg.PostgresRepository(dsn, schema=schema, write_mode=write_mode)  # type: ignore[arg-type]
    conn = psycopg.connect(dsn, autocommit=True, options=f"-c search_path={schema}")

    def row_by_row(envelopes: Sequence[Envelope]) -> None:
        for e in envelopes:
            conn.execute(pg._UPSERT, question_row(e, time.time()))
            for row in event_rows(e):
                conn.execute(pg._EVENT_INSERT, row)

    def cleanup() -> None:
        conn.close()
        repo.close()
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")

    return Store(f"postgres-{write_mode}", repo, row_by_row, cleanup)


# -- runs --------------------------------------------------------------------------------------


def run_one(store: Store, envelopes: list[Envelope], batch: int | None) -> dict[str, Any]:
    """batch None = the row-by-row autocommit baseline."""
    # the Python share: encoding every envelope once (apply() encodes the ones it writes)
    t = time.perf_counter()
    for e in envelopes:
        codec.encode(e)
    encode_s = time.perf_counter() - t
    start = time.perf_counter()
    if batch is None:
        store.row_by_row(envelopes)
    else:
        for i in range(0, len(envelopes), batch):
            store.repo.apply(envelopes[i : i + batch])
    elapsed = time.perf_counter() - start
    counts = store.repo.state_counts()
    events = len(store.repo.export_events())
    return {
        "rows": len(envelopes),
        "seconds": round(elapsed, 4),
        "rows_per_s": round(len(envelopes) / elapsed, 1),
        "encode_s_all_envelopes": round(encode_s, 4),
        "event_rows_written": events,
        "questions_stored": sum(counts.values()),
        "states": counts,
    }


def machine(dsn: str | None) -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
        "sqlite_settings": "WAL, synchronous=NORMAL",
        "loadavg_1_5_15": list(os.getloadavg()),
    }
    if dsn:
        import psycopg

        with psycopg.connect(dsn) as conn:
            row = conn.execute("SELECT version()").fetchone()
            info["postgres"] = row[0] if row else "?"
            settings = {}
            for name in ("fsync", "synchronous_commit", "shared_buffers"):
                value = conn.execute(f"SHOW {name}").fetchone()
                settings[name] = value[0] if value else "?"
            info["postgres_settings"] = settings
        info["psycopg"] = psycopg.__version__
        info["libpq"] = psycopg.pq.version()
        info["postgres_connection"] = "TCP 127.0.0.1 (same machine)"
    return info


def ab_rounds(dsn: str, rounds: int, rows: int) -> list[dict[str, Any]]:
    """unnest vs executemany, interleaved round by round on the same envelopes, so that the load
    of a shared machine hits both alike; median and best rows/s per cell."""
    cells: dict[tuple[str, int, str], list[float]] = {}
    for _ in range(rounds):
        for kind in ("insert", "lifecycle"):
            envelopes = workload(kind, rows)
            for batch in (10, 100, 1000):
                for mode in ("unnest", "executemany"):
                    store = open_postgres(dsn, mode)
                    try:
                        rate = run_one(store, envelopes, batch)["rows_per_s"]
                    finally:
                        store.cleanup()
                    cells.setdefault((kind, batch, mode), []).append(rate)
    out = []
    for (kind, batch, mode), rates in cells.items():
        rates.sort()
        out.append(
            {
                "workload": kind,
                "batch": batch,
                "mode": mode,
                "rows": rows,
                "rounds": len(rates),
                "median_rows_per_s": rates[len(rates) // 2],
                "best_rows_per_s": rates[-1],
            }
        )
        print(
            f"A/B {kind:9s} batch {batch:5d} {mode:12s} median {rates[len(rates) // 2]:>9,.0f} "
            f"best {rates[-1]:>9,.0f} rows/s",
            flush=True,
        )
    return out


def markdown_table(results: list[dict[str, Any]]) -> str:
    """rows/s per (backend, mode) for both workloads, as a Markdown table."""
    cells: dict[tuple[str, str], dict[str, float]] = {}
    for r in results:
        cells.setdefault((r["backend"], r["mode"]), {})[r["workload"]] = r["rows_per_s"]
    lines = [
        "| backend | how | insert rows/s | lifecycle rows/s |",
        "|---|---|---:|---:|",
    ]
    for (backend, mode), values in cells.items():
        ins, life = values.get("insert"), values.get("lifecycle")
        lines.append(
            f"| {backend} | {mode} | {'-' if ins is None else f'{ins:,.0f}'} "
            f"| {'-' if life is None else f'{life:,.0f}'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pg-dsn", default=os.environ.get("QALOOP_PG_DSN"))
    parser.add_argument("--rows", type=int, default=20_000, help="rows for batched runs")
    parser.add_argument(
        "--slow-rows", type=int, default=3_000, help="rows for batch 1 and row-by-row runs"
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per cell (best is kept)")
    parser.add_argument(
        "--ab-rounds",
        type=int,
        default=5,
        help="interleaved rounds of unnest vs executemany (PostgreSQL; 0 = skip)",
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.slow_rows, args.repeat = 2_000, 300, 1

    sample = lifecycle(0, time.time())[-1]
    envelope_bytes = len(codec.encode(sample))
    print(f"envelope size: {envelope_bytes} bytes encoded, {len(sample.history)} events")
    backends: list[tuple[str, Callable[[], Store]]] = []
    tmp = Path(tempfile.mkdtemp(prefix="qaloop-bench-"))
    backends.append(("sqlite", lambda: open_sqlite(tmp)))
    if args.pg_dsn:
        dsn = args.pg_dsn
        backends.append(("postgres-unnest", lambda: open_postgres(dsn, "unnest")))
        backends.append(("postgres-executemany", lambda: open_postgres(dsn, "executemany")))
    else:
        print("QALOOP_PG_DSN / --pg-dsn not set: PostgreSQL skipped", file=sys.stderr)

    load_before = list(os.getloadavg())
    results: list[dict[str, Any]] = []
    for kind in ("insert", "lifecycle"):
        for backend, opener in backends:
            for batch in (None, 1, 100, 1000):
                if batch is None and backend == "postgres-executemany":
                    continue  # the baseline doesn't depend on the repository's write path
                n = args.slow_rows if batch in (None, 1) else args.rows
                best: dict[str, Any] | None = None
                for _ in range(args.repeat):
                    envelopes = workload(kind, n)
                    store = opener()
                    try:
                        result = run_one(store, envelopes, batch)
                    finally:
                        store.cleanup()
                    if best is None or result["rows_per_s"] > best["rows_per_s"]:
                        best = result
                assert best is not None
                label = "row-by-row autocommit" if batch is None else f"apply, batch {batch}"
                name = "postgres" if batch is None and backend.startswith("postgres") else backend
                row = {"workload": kind, "backend": name, "mode": label, "batch": batch, **best}
                results.append(row)
                print(
                    f"{kind:9s} {name:22s} {label:22s} {best['rows_per_s']:>10,.0f} rows/s "
                    f"({best['rows']} rows, {best['seconds']:.2f} s)",
                    flush=True,
                )
    ab = ab_rounds(args.pg_dsn, args.ab_rounds, args.rows // 2) if args.pg_dsn else []
    report = {
        "benchmark": "storage apply() rows/s (issue 3)",
        "command": "python bench/bench_storage.py " + " ".join(argv or sys.argv[1:]),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(args.pg_dsn),
        "loadavg_before": load_before,
        "envelope_bytes": envelope_bytes,
        "params": {"rows": args.rows, "slow_rows": args.slow_rows, "repeat": args.repeat},
        "results": results,
        "ab_unnest_vs_executemany": ab,
    }
    out = args.out or RESULTS / f"storage-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    print(markdown_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
