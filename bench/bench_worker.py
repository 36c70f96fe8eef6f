"""The LLM worker's CPU per call over Kafka, alone: one `python -m qaloop worker` process
(zero-latency simulated LLM), started and idle first; then N question envelopes are published
to its topic at once and the clock and its CPU run until its consumer group has no lag.
No judge or store runs, so the number is the worker's own (consume, decode, prompt, LLM call,
encode, produce, commit), less exposed to the rest of a shared machine than the end-to-end
benchmark (bench_distributed.py), whose worker row it explains.

    eval "$(scripts/infra env)"
    PYTHONPATH=src .venv/bin/python bench/bench_worker.py [--questions 8000] [--rounds 3]

Prints one JSON line per round (CPU ms per message for the worker and the broker, with the
load average) and writes them to --out.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from bench_distributed import envelope_for, question_set, topic_bytes
from benchkit import (
    cpu_delta,
    cpu_snapshot,
    drop_topics,
    machine_state,
    pg_schema,
    stage_env,
    start_stages,
    stop,
    wait_groups_stable,
)

from qaloop.bus.base import Topics
from qaloop.bus.kafka import KafkaBus, KafkaSettings
from qaloop.core.wire import out

ROOT = Path(__file__).resolve().parents[1]


def one_round(args: argparse.Namespace) -> dict[str, Any]:
    prefix = f"benchw{uuid.uuid4().hex[:8]}"
    topics = Topics.with_prefix(prefix)
    bootstrap, n = args.bootstrap, args.questions
    with pg_schema(args.dsn, "bench_worker") as (_, db):
        env = stage_env(db, bootstrap, prefix, args.partitions, llm_concurrency=args.concurrency)
        bus = KafkaBus(KafkaSettings(bootstrap, partitions=args.partitions), topics)
        logs = Path(args.logs)
        logs.mkdir(parents=True, exist_ok=True)
        procs, names = start_stages({"worker": 1}, env, logs, prefix)
        try:
            wait_groups_stable(bootstrap, {f"{prefix}.worker": 1})
            now = time.time()
            messages = [
                out(topics.questions, envelope_for(q, r, now)) for q, r in question_set(n, prefix)
            ]

            async def main() -> tuple[float, dict[str, float], dict[str, float]]:
                await bus.start()
                before = cpu_snapshot(names)
                t0 = time.monotonic()
                for i in range(0, n, 1000):
                    await bus.publish_many(messages[i : i + 1000])
                while sum(bus.lag(f"{prefix}.worker", [topics.questions]).values()) > 0:
                    await asyncio.sleep(0.1)
                    if time.monotonic() - t0 > args.timeout:
                        raise RuntimeError(f"worker not drained after {args.timeout} s")
                elapsed = time.monotonic() - t0
                after = cpu_snapshot(names)
                await bus.close()
                return elapsed, before, after

            state_at_start = machine_state()
            elapsed, before, after = asyncio.run(main())
        finally:
            codes = stop(procs)
            try:
                wire = topic_bytes(bootstrap, topics, n)
            finally:
                drop_topics(bootstrap, topics)
    cpu = cpu_delta(before, after)
    return {
        "questions": n,
        "messages_per_s": round(n / elapsed, 1),
        "worker_cpu_ms_per_message": round(cpu["worker"] * 1000 / n, 3),
        "broker_cpu_ms_per_message": round(cpu["kafka broker"] * 1000 / n, 3),
        "generated_bytes_per_message": wire["generated"]["value_bytes_per_record"],
        "machine_at_start": state_at_start,
        "machine_at_end": machine_state(),
        "exit_codes": codes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=8000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "worker.json"))
    parser.add_argument("--logs", default="/tmp/qaloop-bench-logs")
    parser.add_argument("--bootstrap", default=os.environ.get("QALOOP_KAFKA_BOOTSTRAP"))
    parser.add_argument("--dsn", default=os.environ.get("QALOOP_PG_DSN"))
    args = parser.parse_args()
    if not args.bootstrap or not args.dsn:
        parser.error('run `eval "$(scripts/infra env)"` first (needs Kafka and PostgreSQL)')
    rounds = []
    for _ in range(args.rounds):
        result = one_round(args)
        rounds.append(result)
        print(orjson.dumps(result).decode(), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_bytes(orjson.dumps({"rounds": rounds}, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
