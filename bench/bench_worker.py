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

`--in-process` needs no Kafka: the worker stage as `python -m qaloop worker` builds it
(Wiring.worker over make_provider: ConcurrentRunner, Worker, ProtectedProvider, simulated LLM)
runs over an in-memory consumer and bus on a fixed question set (fixed trace ids and clock), so
its CPU (time.process_time) is decode + handle + encode + the runner's batching alone. Each
measurement is a fresh process; with `--base SRC` (another build's `src`, e.g. a `git archive`
of main) the two builds alternate, and each run prints a digest of every published record
(the events' measured `latency_ms` left out), so before and after are shown to publish the
same bytes; a run's CPU is the least of `--repeats` sets of new questions (the least disturbed
by the rest of a shared machine). `--errors` turns on simulated 503/429/400s (tiny backoff)
to check the retry paths' outputs too; `--profile` prints a cProfile of one run of this build.

    PYTHONPATH=src .venv/bin/python bench/bench_worker.py --in-process --base /tmp/base/src \
        --questions 256 --repeats 30 --rounds 10

Many short sets: on the shared VM a set's CPU varied ±25 % over seconds, and one process's
least of 30 sets of 256 within ~2 %; what is left is a shift between processes, which the
pairs (and the summary's median of per-pair ratios) absorb.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import sys
import time
import uuid
from collections import Counter
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
    run_build,
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


# ---------------------------------------------------------------- in-process (no Kafka)

IN_PROCESS_NOW = 1_780_000_000.0  # the fixed clock of the in-process runs (repeatable bytes)


class _ListConsumer:
    """Hands out a fixed list of messages as a Kafka consumer would (up to max_records per
    poll), then sets `stop`; remembers what was committed."""

    def __init__(self, messages: list[Any], stop: asyncio.Event) -> None:
        self.messages, self.stop, self.at, self.committed = messages, stop, 0, 0

    async def poll(self, max_records: int, timeout_s: float) -> list[Any]:
        batch = self.messages[self.at : self.at + max_records]
        self.at += len(batch)
        if not batch:
            self.stop.set()
            await asyncio.sleep(0)
        return batch

    async def commit(self, messages: Any) -> None:
        self.committed += len(messages)

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    async def close(self) -> None: ...


class _ListBus:
    def __init__(self, topics: Topics) -> None:
        self.topics = topics
        self.published: list[Any] = []
        self.consumers: list[_ListConsumer] = []

    async def start(self) -> None: ...

    async def publish_many(self, messages: Any) -> None:
        self.published.extend(messages)

    def consumer(self, group: str, topics: Any) -> _ListConsumer:
        return self.consumers.pop(0)

    async def close(self) -> None: ...


def _question_messages(n: int, tag: str, topic: str) -> list[Any]:
    from qaloop.bus.base import Message
    from qaloop.core.ids import question_id
    from qaloop.core.model import Envelope, EventKind

    found = []
    for i, (q, r) in enumerate(question_set(n, tag)):
        env = Envelope(
            question_id=question_id(q),
            question=q,
            reference_answer=r,
            trace_id=hashlib.blake2b(f"{tag}:{i}".encode(), digest_size=16).hexdigest(),
            first_seen=IN_PROCESS_NOW,
        ).with_event(EventKind.ACCEPTED, IN_PROCESS_NOW)
        o = out(topic, env)
        found.append(Message(topic, i % 6, i // 6, o.key, o.value, o.headers))
    return found


def _drop_latency(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_latency(v) for k, v in value.items() if k != "latency_ms"}
    if isinstance(value, list):
        return [_drop_latency(v) for v in value]
    return value


def records_digest(records: list[Any]) -> str:
    """sha256 of every record (topic, key, headers, body), in key order; `latency_ms` (a
    perf_counter reading) is the one field left out of the bodies."""
    digest = hashlib.sha256()
    rows = []
    for r in records:
        body = _drop_latency(orjson.loads(r.value)) if r.value else None
        rows.append((r.topic, r.key, sorted(r.headers.items()), body))
    for row in sorted(rows, key=lambda x: (x[0], x[1])):
        digest.update(orjson.dumps(row, option=orjson.OPT_SORT_KEYS) + b"\n")
    return digest.hexdigest()


def in_process_child(args: argparse.Namespace) -> dict[str, Any]:
    """One measured run in this process: a warm-up set, then the measured set."""
    from qaloop.llm.factory import make_provider
    from qaloop.observability.metrics import Metrics
    from qaloop.settings import Settings
    from qaloop.wiring import Wiring

    update: dict[str, Any] = {"llm": "simulated", "llm_concurrency": args.concurrency}
    if args.errors:
        update |= {
            "sim_overload_rate": 0.1,
            "sim_quota_rate": 0.05,
            "sim_permanent_rate": 0.02,
            "backoff_base_s": 0.0002,
            "backoff_cap_s": 0.001,
        }
    settings = Settings(**update)

    import cProfile
    import pstats

    async def one(
        tag: str, n: int, profiler: cProfile.Profile | None = None
    ) -> tuple[float, list[Any], int]:
        wiring = Wiring(settings, shared_bus=False, clock=lambda: IN_PROCESS_NOW)
        stop = asyncio.Event()
        bus = _ListBus(wiring.topics)
        consumer = _ListConsumer(_question_messages(n, tag, wiring.topics.questions), stop)
        bus.consumers.append(consumer)
        stage = wiring.worker(bus, make_provider(settings), Metrics())  # type: ignore[arg-type]
        if profiler is not None:
            profiler.enable()
        t0 = time.process_time()
        await stage.runner.run(stop)
        cpu = time.process_time() - t0
        if profiler is not None:
            profiler.disable()
        return cpu, bus.published, consumer.committed

    async def both() -> dict[str, Any]:
        await one("warm", args.warmup)
        profiler = cProfile.Profile() if args.profile else None
        cpu, published, committed = await one("bench", args.questions, profiler)
        profile: dict[str, Any] = {}
        if profiler is not None:
            stats = pstats.Stats(profiler, stream=sys.stderr)
            stats.sort_stats("tottime").print_stats(35)
            # Python calls per answer: no noise, unlike a shared machine's CPU time
            calls: int = stats.total_calls  # type: ignore[attr-defined]
            profile = {"calls_per_answer": round(calls / args.questions, 1)}
        # More sets of new questions: the least CPU of them is the least disturbed by the
        # other processes of a shared machine (the digest is the first set's).
        cpus = [cpu] + [
            (await one(f"bench{i}", args.questions))[0] for i in range(args.repeats - 1)
        ]
        return {
            "questions": args.questions,
            "cpu_ms_per_answer": round(min(cpus) * 1000 / args.questions, 4),
            "cpu_ms_per_answer_sets": [round(c * 1000 / args.questions, 4) for c in cpus],
            "records": len(published),
            "committed": committed,
            "digest": records_digest(published),
            "by_topic": dict(sorted(Counter(r.topic for r in published).items())),
            **profile,
        }

    return asyncio.run(both())


def in_process(args: argparse.Namespace) -> None:
    """Fresh child processes, builds alternating (base first in odd pairs, this one first in
    even pairs), each printing its CPU per answer and output digest."""
    builds = {"this": str(ROOT / "src")}
    if args.base:
        builds = {"base": args.base, "this": str(ROOT / "src")}
    flags = ["--child", f"--questions={args.questions}", f"--warmup={args.warmup}"]
    flags += [f"--repeats={args.repeats}"]
    flags += [f"--concurrency={args.concurrency}"] + (["--errors"] if args.errors else [])
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in builds}
    for pair in range(args.rounds):
        order = list(builds) if pair % 2 == 0 else list(reversed(builds))
        for name in order:
            # the worker as configured here: every QALOOP_* setting goes to both builds
            result = run_build(builds[name], [__file__, *flags], keep_env=("QALOOP_",))
            results[name].append(result)
            print(orjson.dumps({"build": name, "pair": pair + 1, **result}).decode(), flush=True)
    summary: dict[str, Any] = {}
    for name, runs in results.items():
        cpus = sorted(r["cpu_ms_per_answer"] for r in runs)
        summary[name] = {
            "median_cpu_ms_per_answer": cpus[len(cpus) // 2],
            "min_cpu_ms_per_answer": cpus[0],
            "digests": sorted({r["digest"] for r in runs}),
        }
    if "base" in summary:
        b, t = summary["base"], summary["this"]
        summary["change_median"] = round(
            t["median_cpu_ms_per_answer"] / b["median_cpu_ms_per_answer"] - 1, 4
        )
        # Each pair ran back to back, so its ratio is the least exposed to the machine's drift.
        ratios = sorted(
            x["cpu_ms_per_answer"] / y["cpu_ms_per_answer"]
            for x, y in zip(results["this"], results["base"], strict=True)
        )
        summary["change_median_of_pairs"] = round(ratios[len(ratios) // 2] - 1, 4)
        summary["same_digest"] = b["digests"] == t["digests"] and len(b["digests"]) == 1
    print(orjson.dumps({"summary": summary}).decode(), flush=True)
    if args.out_in_process:
        report = {"command": " ".join(sys.argv), "runs": results, "summary": summary}
        Path(args.out_in_process).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out_in_process).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))


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
    parser.add_argument("--in-process", action="store_true", help="no Kafka: see above")
    parser.add_argument("--base", help="--in-process: the other build's src, alternated")
    parser.add_argument("--warmup", type=int, default=2000, help="--in-process: unmeasured")
    parser.add_argument("--errors", action="store_true", help="--in-process: simulated errors")
    parser.add_argument("--repeats", type=int, default=3, help="--in-process: sets per run")
    parser.add_argument("--profile", action="store_true", help="cProfile one in-process run")
    parser.add_argument("--out-in-process", help="--in-process: write the runs here (JSON)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child or args.profile:
        print(orjson.dumps(in_process_child(args)).decode(), flush=True)
        return
    if args.in_process:
        in_process(args)
        return
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
