"""Scale-out on this machine: questions/s and pipeline overhead of the distributed mode with 1, 2
and 4 worker processes and 1 and 2 judge processes, measured side by side in one run.

Every configuration runs the real stage processes (`python -m qaloop worker|judge|store|
retrier`) over the real broker and PostgreSQL, with a zero-latency simulated LLM (so what is
measured is the pipeline, not a model), in its own topic prefix and schema:

1. overhead: questions inserted + published one at a time at a steady rate (default 20/s, what
   the gateway does per request) and, for those validated on attempt 1, `finished_at -
   first_seen` in PostgreSQL: everything the pipeline adds between the question's intake and
   its final row (hops, polling, batching, scoring, the store's write);
2. throughput: a burst of questions loaded like the gateway does (insert + publish, 1,000 at a
   time); the clock runs from the first insert until every question is final and no consumer
   group has lag.

The configurations run in rounds, in a different order each round (forward, then reversed),
so a change of the machine's load during the run (other users of a shared machine) spreads
over all of them; the report gives each configuration's median over the rounds and its ratio
to 1 worker / 1 judge measured in the same round. CPU seconds per stage process, broker and
PostgreSQL are recorded, with the load average before and after.

    eval "$(scripts/infra env)"
    .venv/bin/python bench/bench_scaleout.py [--rounds 2] [--questions 6000] [--paced 200]

Writes bench/results/scaleout.json (and prints a table).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_distributed import (
    GROUPS,
    envelope_for,
    load_like_gateway,
    question_set,
    scalar,
    summary_ms,
)
from benchkit import (
    child_env,
    cpu_delta,
    cpu_snapshot,
    drop_topics,
    gate_in,
    gate_line,
    machine_line,
    machine_state,
    per_question_ms,
    pg_schema,
    stage_env,
    start_stages,
    stop,
    wait_groups_stable,
)

from qaloop.bus.base import Topics
from qaloop.bus.kafka import KafkaBus, KafkaSettings
from qaloop.core.wire import out
from qaloop.storage.postgres import PostgresRepository

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = [(w, j) for j in (1, 2) for w in (1, 2, 4)]  # (workers, judges)


async def paced_load(
    repo: PostgresRepository,
    bus: KafkaBus,
    topics: Topics,
    qas: list[tuple[str, str | None]],
    rate: float,
) -> None:
    """One question at a time at `rate`/s: insert its row, publish it (the gateway's path)."""
    started = time.monotonic()
    for i, (q, r) in enumerate(qas):
        delay = started + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        e = envelope_for(q, r, time.time())
        await asyncio.to_thread(repo.apply, [e])
        await bus.publish_many([out(topics.questions, e)])


async def wait_drained(
    bus: KafkaBus, db: str, prefix: str, topics: Topics, expected: int, timeout_s: float
) -> float:
    """Until `expected` rows are final and no group has lag; returns when the last became
    final (sampled every 0.25 s)."""
    started = time.time()
    finished_at: float | None = None
    subscribed = {
        "worker": [topics.questions],
        "judge": [topics.generated],
        "retrier": [topics.delayed],
    }
    while True:
        final = await asyncio.to_thread(
            scalar, db, "SELECT count(*) FROM questions WHERE state IN ('validated', 'failed')"
        )
        if final >= expected and finished_at is None:
            finished_at = time.time()
        if finished_at is not None:
            lags = [
                sum(
                    (
                        await asyncio.to_thread(
                            bus.lag, f"{prefix}.{g}", subscribed.get(g, topics.all())
                        )
                    ).values()
                )
                for g in GROUPS
            ]
            if not any(lags):
                return finished_at
        if time.time() - started > timeout_s:
            raise RuntimeError(f"not drained after {timeout_s} s ({final}/{expected} final)")
        await asyncio.sleep(0.25)


def run_config(args: argparse.Namespace, workers: int, judges: int) -> dict[str, Any]:
    bootstrap, pg = args.bootstrap, args.dsn
    prefix = f"scale{uuid.uuid4().hex[:8]}"
    topics = Topics.with_prefix(prefix)
    logs = Path(args.logs)
    logs.mkdir(parents=True, exist_ok=True)
    with pg_schema(pg, "scale") as (schema, db):
        repo = PostgresRepository(pg, schema=schema, max_size=2)
        env = stage_env(db, bootstrap, prefix, args.partitions, llm_concurrency=args.concurrency)
        bus = KafkaBus(KafkaSettings(bootstrap, partitions=args.partitions), topics)
        asyncio.run(bus.start())  # topics exist before the consumers subscribe
        asyncio.run(bus.close())
        scale = {"worker": workers, "judge": judges, "store": 1, "retrier": 1}
        procs, names = start_stages(scale, env, logs, prefix)
        try:
            wait_groups_stable(bootstrap, {f"{prefix}.{g}": scale[g] for g in GROUPS})
            paced = question_set(args.paced, f"{prefix}-paced")
            burst = question_set(args.questions, f"{prefix}-burst")

            async def main() -> dict[str, Any]:
                await bus.start()
                # 1. overhead at a steady trickle
                t_paced = time.time()
                await paced_load(repo, bus, topics, paced, args.rate)
                await wait_drained(bus, db, prefix, topics, len(paced), args.timeout)
                rows = await asyncio.to_thread(
                    _rows,
                    db,
                    "SELECT finished_at - first_seen FROM questions WHERE state = 'validated' "
                    "AND attempt = 1",
                )
                overhead = summary_ms([r[0] for r in rows])
                paced_s = time.time() - t_paced
                # 2. throughput of a burst
                before = cpu_snapshot(names)
                t0 = time.time()
                load_s = await load_like_gateway(repo, bus, topics, burst)
                finished = await wait_drained(
                    bus, db, prefix, topics, len(paced) + len(burst), args.timeout
                )
                after = cpu_snapshot(names)
                await bus.close()
                elapsed = finished - t0
                cpu_s = cpu_delta(before, after)
                return {
                    "overhead_ms": overhead,
                    "paced_s": round(paced_s, 2),
                    "elapsed_s": round(elapsed, 3),
                    "questions_per_s": round(len(burst) / elapsed, 1),
                    "intake_s": round(load_s, 3),
                    "cpu_s": cpu_s,
                    "cpu_ms_per_question": per_question_ms(cpu_s, len(burst)),
                }

            result = asyncio.run(main())
        finally:
            codes = stop(procs)
            drop_topics(bootstrap, topics)
        states = dict(_rows(db, "SELECT state, count(*) FROM questions GROUP BY 1"))
        repo.close()
    expected = args.paced + args.questions
    if sum(states.values()) != expected or set(states) - {"validated", "failed"}:
        raise RuntimeError(f"{workers}w/{judges}j: {states} (expected {expected} final)")
    return {"workers": workers, "judges": judges, "states": states, "exit_codes": codes, **result}


def _own_cpu_ms(cpu: dict[str, float]) -> float:
    return sum(v for k, v in cpu.items() if k != "machine busy")


def _rows(db: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(db, autocommit=True) as conn:
        return list(conn.execute(query).fetchall())


def summarise(rounds: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    out_rows = []
    for w, j in CONFIGS:
        runs = [r for rnd in rounds for r in rnd if (r["workers"], r["judges"]) == (w, j)]
        ratios = []
        for rnd in rounds:
            base = next(r for r in rnd if (r["workers"], r["judges"]) == (1, 1))
            this = next(r for r in rnd if (r["workers"], r["judges"]) == (w, j))
            ratios.append(this["questions_per_s"] / base["questions_per_s"])
        cpu = {
            k: round(statistics.median(r["cpu_ms_per_question"][k] for r in runs), 3)
            for k in runs[0]["cpu_ms_per_question"]
        }
        # What the pipeline itself spends per question (its processes, the broker, PostgreSQL,
        # the loader) against what the whole machine did meanwhile: on a shared machine the
        # difference is other users' work, and q/s follows the share of the CPU we got.
        own = [_own_cpu_ms(r["cpu_ms_per_question"]) for r in runs]
        share = [
            _own_cpu_ms(r["cpu_ms_per_question"]) / r["cpu_ms_per_question"]["machine busy"]
            for r in runs
        ]
        out_rows.append(
            {
                "workers": w,
                "judges": j,
                "questions_per_s": round(statistics.median(r["questions_per_s"] for r in runs), 1),
                "questions_per_s_runs": [r["questions_per_s"] for r in runs],
                "ratio_to_1w1j": round(statistics.median(ratios), 2),
                "ratio_runs": [round(x, 2) for x in ratios],
                "overhead_p50_ms": statistics.median(r["overhead_ms"]["p50"] for r in runs),
                "overhead_p95_ms": statistics.median(r["overhead_ms"]["p95"] for r in runs),
                "overhead_p99_ms": statistics.median(r["overhead_ms"]["p99"] for r in runs),
                "pipeline_cpu_ms_per_question": round(statistics.median(own), 3),
                "pipeline_share_of_machine_cpu": round(statistics.median(share), 2),
                # 2 cores / CPU per question: the q/s this pipeline would reach with the
                # machine to itself (a model from the measured CPU, not a measurement)
                "cpu_bound_questions_per_s": round(
                    (os.cpu_count() or 1) * 1000 / statistics.median(own)
                ),
                "cpu_ms_per_question": cpu,
            }
        )
    return out_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--questions", type=int, default=6000, help="burst size per config")
    parser.add_argument("--paced", type=int, default=200, help="questions at --rate per config")
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--concurrency", type=int, default=256, help="LLM calls in flight")
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "scaleout.json"))
    parser.add_argument("--logs", default="/tmp/qaloop-bench-logs")
    parser.add_argument("--bootstrap", default=os.environ.get("QALOOP_KAFKA_BOOTSTRAP"))
    parser.add_argument("--dsn", default=os.environ.get("QALOOP_PG_DSN"))
    args = parser.parse_args()
    if not args.bootstrap or not args.dsn:
        parser.error('needs the servers: eval "$(scripts/infra env)" (or --bootstrap/--dsn)')
    if args.rounds < 1 or args.questions < 1 or args.paced < 1 or args.rate <= 0:
        parser.error("--rounds, --questions, --paced and --rate must be positive")

    started = time.time()
    at_start = machine_state()
    gate = gate_in(child_env())
    print(gate_line(gate), flush=True)
    print(f"at start: {machine_line(at_start)}", flush=True)
    rounds: list[list[dict[str, Any]]] = []
    for n in range(args.rounds):
        order = CONFIGS if n % 2 == 0 else list(reversed(CONFIGS))
        results = []
        for w, j in order:
            r = run_config(args, w, j)
            r["machine_after"] = machine_state()
            results.append(r)
            print(
                f"round {n + 1}: {w} worker(s), {j} judge(s): {r['questions_per_s']:>7.1f} q/s, "
                f"overhead p50 {r['overhead_ms']['p50']} ms p95 {r['overhead_ms']['p95']} ms "
                f"({machine_line(r['machine_after'])})",
                flush=True,
            )
        rounds.append(results)
    table = summarise(rounds)
    report = {
        "bench": "scaleout",
        "command": " ".join(["bench/bench_scaleout.py", *sys.argv[1:]]),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "at_start": at_start,
            "at_end": machine_state(),
        },
        "gate": gate,
        "params": {k: v for k, v in vars(args).items() if k not in ("bootstrap", "dsn", "logs")},
        "duration_s": round(time.time() - started, 1),
        "summary": table,
        "rounds": rounds,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    print(
        f"\n{'workers':>7} {'judges':>6} {'q/s':>8} {'x 1w1j':>7} {'p50 ms':>7} {'p95 ms':>7} "
        f"{'cpu ms/q':>8} {'share':>6}"
    )
    for row in table:
        print(
            f"{row['workers']:>7} {row['judges']:>6} {row['questions_per_s']:>8.1f} "
            f"{row['ratio_to_1w1j']:>7.2f} {row['overhead_p50_ms']:>7.1f} "
            f"{row['overhead_p95_ms']:>7.1f} {row['pipeline_cpu_ms_per_question']:>8.3f} "
            f"{row['pipeline_share_of_machine_cpu']:>6.2f}"
        )
    print(f"at end: {machine_line(report['machine']['at_end'])}")
    print(f"\nwrote {args.out} in {report['duration_s']} s")


if __name__ == "__main__":
    main()
