"""Distributed mode throughput: questions/s end to end through Kafka and PostgreSQL, with a
zero-latency simulated LLM, until every consumer group's lag is drained; and, in the same run,
a baseline built like the original system.

qaloop: the real stage processes (`python -m qaloop worker|judge|store|retrier`, one each, or
`--workers N`), started first and idle; then the loader does what the gateway does for each new
question (insert the `queued` row, publish the envelope), in batches of 1,000; the clock runs
from the first insert until every question is final in PostgreSQL and no group has lag.

Baseline (like the original system): three processes -- worker, judge, store -- that consume one
message at a time with auto-commit, flush the producer after every send, and insert each
final row with its own autocommitted statement; the loader publishes each question with a
flush. Same topics layout, same simulated LLM, same scorer and gate. Built twice: with
confluent-kafka (our own client: the conservative baseline the speed-up is computed against)
and with kafka-python (the client the original system used: `speedup_vs_kafka_python`).

    eval "$(scripts/infra env)"
    .venv/bin/python bench/bench_distributed.py [--questions 20000] [--baseline-questions 3000]

Writes bench/results/distributed.json (and prints it). Sampled every 0.5 s: final rows, lag
per consumer group; at the end, per-stage latency from the stored histories.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import orjson
import psycopg
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
    pg_backend_cpu,
    pg_schema,
    stage_env,
    start_stages,
    stop,
    wait_groups_stable,
)

from qaloop.bus.base import Topics
from qaloop.bus.kafka import KafkaBus, KafkaSettings
from qaloop.core import codec
from qaloop.core.ids import question_id
from qaloop.core.model import Envelope, EventKind
from qaloop.core.routing import Decision, judge
from qaloop.core.wire import out
from qaloop.dataset import load_sample
from qaloop.llm.base import DEFAULT_PROMPT_TEMPLATE, GenerationRequest, render_prompt
from qaloop.llm.factory import simulated_config
from qaloop.llm.simulated import SimulatedProvider
from qaloop.quality import get_scorer
from qaloop.quality.cascade import ScorerGate
from qaloop.quality.verdict import GateInput
from qaloop.settings import Settings
from qaloop.storage.postgres import PostgresRepository
from qaloop.wiring import gate_config

ROOT = Path(__file__).resolve().parents[1]
GROUPS = ("worker", "judge", "store", "retrier")


# ---------------------------------------------------------------------------- shared helpers


def topic_bytes(bootstrap: str, topics: Topics, questions: int) -> dict[str, dict[str, float]]:
    """What each topic carried, per question: records, value bytes and header bytes (names +
    values), read back from the broker (no consumer group) before the topics are dropped."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "bench-bytes", "enable.auto.commit": False}
    )
    result: dict[str, dict[str, float]] = {}
    try:
        for topic in topics.all():
            meta = consumer.list_topics(topic, timeout=10).topics[topic]
            parts, remaining = [], 0
            for p in meta.partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                if high > low:
                    parts.append(TopicPartition(topic, p, low))
                    remaining += high - low
            records = value_bytes = header_bytes = 0
            if parts:
                consumer.assign(parts)
                while remaining > 0:
                    batch = consumer.consume(1000, timeout=5)
                    if not batch:
                        break
                    for m in batch:
                        if m.error() is not None:
                            continue
                        remaining -= 1
                        records += 1
                        value_bytes += len(m.value() or b"")
                        header_bytes += sum(len(k) + len(v or b"") for k, v in m.headers() or [])
                consumer.unassign()
            result[topic.rsplit(".", 1)[-1]] = {
                "records_per_question": round(records / questions, 3),
                "value_bytes_per_question": round(value_bytes / questions, 1),
                "header_bytes_per_question": round(header_bytes / questions, 1),
                "value_bytes_per_record": round(value_bytes / records, 1) if records else 0.0,
            }
    finally:
        consumer.close()
    total = sum(
        t["value_bytes_per_question"] + t["header_bytes_per_question"] for t in result.values()
    )
    result["total"] = {"bytes_per_question": round(total, 1)}
    return result


def scalar(dsn: str, query: str) -> Any:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(query).fetchone()
    return None if row is None else row[0]


def question_set(n: int, tag: str) -> list[tuple[str, str | None]]:
    sample = load_sample()
    return [
        (
            f"{sample[i % len(sample)].question} [{tag} {i}]",
            sample[i % len(sample)].reference_answer,
        )
        for i in range(n)
    ]


def envelope_for(question: str, reference: str | None, now: float) -> Envelope:
    return Envelope(
        question_id=question_id(question),
        question=question,
        reference_answer=reference,
        trace_id=uuid.uuid4().hex,
        first_seen=now,
    ).with_event(EventKind.ACCEPTED, now)


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def summary_ms(values: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values]
    return {
        "n": len(ms),
        "mean": round(statistics.fmean(ms), 1) if ms else float("nan"),
        "p50": round(pct(ms, 50), 1),
        "p95": round(pct(ms, 95), 1),
        "p99": round(pct(ms, 99), 1),
        "max": round(max(ms), 1) if ms else float("nan"),
    }


# ---------------------------------------------------------------------------- qaloop


async def load_like_gateway(
    repo: PostgresRepository, bus: KafkaBus, topics: Topics, qas: list[tuple[str, str | None]]
) -> float:
    """Insert + publish, as the gateway does for each new question, 1,000 at a time."""
    started = time.time()
    for begin in range(0, len(qas), 1000):
        now = time.time()
        chunk = [envelope_for(q, r, now) for q, r in qas[begin : begin + 1000]]
        await asyncio.to_thread(repo.apply, chunk)
        await bus.publish_many([out(topics.questions, e) for e in chunk])
    return time.time() - started


def run_qaloop(
    args: argparse.Namespace, bootstrap: str, pg: str, n: int, latency_ms: float = 0.0
) -> dict[str, Any]:
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    topics = Topics.with_prefix(prefix)
    qas = question_set(n, prefix)
    logs = Path(args.logs)
    logs.mkdir(parents=True, exist_ok=True)
    with pg_schema(pg, "bench_qaloop") as (schema, db):
        repo = PostgresRepository(pg, schema=schema, max_size=2)
        env = stage_env(
            db,
            bootstrap,
            prefix,
            args.partitions,
            log_level=args.log_level,
            sim_latency_ms=latency_ms,
            llm_concurrency=args.concurrency,
            kafka_producer_config=args.producer_config,
            kafka_consumer_config=args.consumer_config,
        )
        env.update(args.env)
        if args.profile:  # cProfile each stage process (slower; for finding where time goes)
            Path(args.profile).mkdir(parents=True, exist_ok=True)
            env["QALOOP_PROFILE_DIR"] = str(Path(args.profile).resolve())
        bus = KafkaBus(KafkaSettings(bootstrap, partitions=args.partitions), topics)
        asyncio.run(bus.start())  # topics exist before the consumers subscribe
        asyncio.run(bus.close())
        scale = {"worker": args.workers, "judge": args.judges, "store": 1, "retrier": 1}
        procs, names = start_stages(scale, env, logs, prefix)
        try:
            wait_groups_stable(bootstrap, {f"{prefix}.{g}": scale[g] for g in GROUPS})
            samples: list[dict[str, Any]] = []

            cpu: dict[str, dict[str, float]] = {}

            async def main() -> tuple[float, float, float]:
                await bus.start()
                cpu["before"] = cpu_snapshot(names) | pg_backend_cpu(pg, prefix)
                t0 = time.time()
                loader = asyncio.create_task(load_like_gateway(repo, bus, topics, qas))
                finished_at = None
                while True:
                    await asyncio.sleep(0.5)
                    final = await asyncio.to_thread(
                        scalar,
                        db,
                        "SELECT count(*) FROM questions WHERE state IN ('validated', 'failed')",
                    )
                    lags = {}
                    for g in GROUPS:
                        subscribed = {
                            "worker": [topics.questions],
                            "judge": [topics.generated],
                            "retrier": [topics.delayed],
                        }.get(g, topics.all())
                        lag = await asyncio.to_thread(bus.lag, f"{prefix}.{g}", subscribed)
                        lags[g] = sum(lag.values())
                    samples.append({"t": round(time.time() - t0, 2), "final": final, "lag": lags})
                    if final >= len(qas) and finished_at is None:
                        finished_at = time.time()
                        cpu["after"] = cpu_snapshot(names) | pg_backend_cpu(pg, prefix)
                    if finished_at is not None and loader.done() and not any(lags.values()):
                        break
                    if time.time() - t0 > args.timeout:
                        raise RuntimeError(f"not drained after {args.timeout} s: {samples[-1]}")
                load_s = await loader
                await bus.close()
                return t0, finished_at, load_s

            t0, finished_at, load_s = asyncio.run(main())
            elapsed = finished_at - t0
            cpu_s = cpu_delta(cpu["before"], cpu["after"])
        finally:
            codes = stop(procs)
            try:
                wire = topic_bytes(bootstrap, topics, len(qas))
            finally:
                drop_topics(bootstrap, topics)
        with psycopg.connect(db, autocommit=True) as conn:
            counts = dict(
                conn.execute("SELECT state, count(*) FROM questions GROUP BY 1").fetchall()
            )
            calls = conn.execute(
                "SELECT count(*) FROM events WHERE kind IN ('generated', 'llm_error')"
            ).fetchone()[0]
            latency = stage_latencies(conn)
        repo.close()
    return {
        "questions": len(qas),
        "workers": args.workers,
        "judges": args.judges,
        "partitions": args.partitions,
        "elapsed_s": round(elapsed, 3),
        "questions_per_s": round(len(qas) / elapsed, 1),
        "intake_s": round(load_s, 3),
        "states": counts,
        "llm_calls": calls,
        "max_lag": {g: max(s["lag"][g] for s in samples) for g in GROUPS},
        "cpu_s": cpu_s,
        "cpu_ms_per_question": per_question_ms(cpu_s, len(qas)),
        "message_bytes": wire,
        "latency_ms": latency,
        "samples": samples,
        "exit_codes": codes,
    }


def stage_latencies(conn: psycopg.Connection[Any]) -> dict[str, dict[str, float]]:
    """From the stored histories: wait + LLM (previous event -> generated), judge (generated ->
    scored), store (final event -> row written), end to end (accepted -> final row written)."""
    rows = conn.execute(
        "SELECT e.question_id, e.seq, e.kind, e.at, q.updated_at FROM events e "
        "JOIN questions q USING (question_id) ORDER BY e.question_id, e.seq"
    ).fetchall()
    worker: list[float] = []
    judge_s: list[float] = []
    store: list[float] = []
    e2e: list[float] = []
    prev: tuple[str, str, float] | None = None
    first: dict[str, float] = {}
    last: dict[str, tuple[float, float]] = {}
    for qid, _seq, kind, at, updated in rows:
        if prev is not None and prev[0] == qid:
            if kind == "generated":
                worker.append(at - prev[2])
            elif kind == "scored" and prev[1] == "generated":
                judge_s.append(at - prev[2])
        if kind == "accepted":
            first[qid] = at
        last[qid] = (at, updated)
        prev = (qid, kind, at)
    for qid, (at, updated) in last.items():
        store.append(max(0.0, updated - at))
        if qid in first:
            e2e.append(updated - first[qid])
    return {
        "queue_and_llm": summary_ms(worker),
        "judge": summary_ms(judge_s),
        "store": summary_ms(store),
        "end_to_end": summary_ms(e2e),
    }


# ---------------------------------------------------------------------------- baseline


BASELINE_DDL = """
CREATE TABLE IF NOT EXISTS answers (
    question_id TEXT PRIMARY KEY, question TEXT NOT NULL, state TEXT NOT NULL,
    answer TEXT, score DOUBLE PRECISION, attempt INTEGER NOT NULL, stored_at DOUBLE PRECISION
)"""


class OriginalClient(Protocol):
    """The Kafka calls the original services made: take one message (auto-commit), and send
    one message then wait for the broker (flush). Two implementations: confluent-kafka (our
    client, the conservative baseline) and kafka-python (the original's own client)."""

    def next_value(self, timeout_s: float) -> bytes | None: ...

    def send(self, topic: str, key: bytes, value: bytes) -> None: ...

    def close(self) -> None: ...


class ConfluentOriginal:
    def __init__(self, bootstrap: str, group: str | None, topics: list[str]) -> None:
        from confluent_kafka import Consumer, Producer

        self.producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
        self.consumer = None
        if group is not None:
            self.consumer = Consumer(
                {
                    "bootstrap.servers": bootstrap,
                    "group.id": group,
                    "enable.auto.commit": True,
                    "auto.offset.reset": "earliest",
                }
            )
            self.consumer.subscribe(topics)

    def next_value(self, timeout_s: float) -> bytes | None:
        assert self.consumer is not None
        msg = self.consumer.poll(timeout_s)
        if msg is None or msg.error():
            return None
        value: bytes | None = msg.value()
        return value

    def send(self, topic: str, key: bytes, value: bytes) -> None:
        self.producer.produce(topic, key=key, value=value)
        self.producer.flush()  # the original: every send waited for the broker

    def close(self) -> None:
        if self.consumer is not None:
            self.consumer.close()


class KafkaPythonOriginal:
    """kafka-python, as the original services used it: iterate the consumer, flush each send."""

    def __init__(self, bootstrap: str, group: str | None, topics: list[str]) -> None:
        from kafka import KafkaConsumer, KafkaProducer

        self.producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
        self.consumer = None
        if group is not None:
            self.consumer = KafkaConsumer(
                *topics,
                bootstrap_servers=bootstrap,
                group_id=group,
                enable_auto_commit=True,
                auto_offset_reset="earliest",
                consumer_timeout_ms=500,  # the iterator stops when idle: lets SIGTERM be seen
            )
            self._records: Iterator[Any] = iter(self.consumer)

    def next_value(self, timeout_s: float) -> bytes | None:
        # timeout_s unused: the iterator's consumer_timeout_ms (500 ms) bounds an idle wait
        assert self.consumer is not None
        try:
            value: bytes | None = next(self._records).value
            return value
        except StopIteration:
            self._records = iter(self.consumer)
            return None

    def send(self, topic: str, key: bytes, value: bytes) -> None:
        self.producer.send(topic, key=key, value=value)
        self.producer.flush()

    def close(self) -> None:
        if self.consumer is not None:
            self.consumer.close()
        self.producer.close()


BASELINE_CLIENTS: dict[str, Callable[[str, str | None, list[str]], OriginalClient]] = {
    "confluent-kafka": ConfluentOriginal,
    "kafka-python": KafkaPythonOriginal,
}


def baseline_role(role: str, bootstrap: str, prefix: str, dsn: str, client_name: str) -> None:
    """One service of the baseline: one message at a time, flush after every send."""
    topics = Topics.with_prefix(prefix)
    settings = Settings()
    running = True

    def on_term(*_: Any) -> None:
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, on_term)
    subscribed = {
        "worker": [topics.questions],
        "judge": [topics.generated],
        "store": [topics.validated, topics.dead_letter],
    }
    if role not in subscribed:
        raise SystemExit(f"unknown baseline role {role}")
    client = BASELINE_CLIENTS[client_name](bootstrap, f"{prefix}.{role}", subscribed[role])

    def send(topic: str, envelope: Envelope) -> None:
        client.send(topic, envelope.question_id.encode(), codec.encode(envelope))

    if role == "worker":
        provider = SimulatedProvider(simulated_config(settings))  # as the qaloop worker's
        loop = asyncio.new_event_loop()
        while running:
            value = client.next_value(0.5)
            if value is None:
                continue
            env = codec.decode(value)
            request = GenerationRequest(
                question_id=env.question_id,
                question=env.question,
                attempt=env.attempt,
                try_no=env.llm_calls + 1,
                prompt=render_prompt(DEFAULT_PROMPT_TEMPLATE, env.question),
                reference_answer=env.reference_answer,
            )
            generation = loop.run_until_complete(provider.generate(request))
            now = time.time()
            generated = env.with_event(EventKind.GENERATED, now, answer=generation.text).evolve(
                answer=generation.text, llm_calls=env.llm_calls + 1
            )
            send(topics.generated, generated)
    elif role == "judge":
        gate = gate_config(settings)
        cheap = ScorerGate(get_scorer(settings.scorer), gate.threshold)
        while running:
            value = client.next_value(0.5)
            if value is None:
                continue
            env = codec.decode(value)
            item = GateInput(env.question, env.answer or "", env.reference_answer)
            [verdict] = cheap.judge_batch([item])
            decision, routed = judge(env, verdict, gate, time.time())
            topic = {
                Decision.VALIDATE: topics.validated,
                Decision.REGENERATE: topics.questions,
                Decision.GIVE_UP: topics.dead_letter,
            }[decision]
            send(topic, routed)
    else:
        with psycopg.connect(dsn, autocommit=True) as conn:
            while running:
                value = client.next_value(0.5)
                if value is None:
                    continue
                env = codec.decode(value)
                conn.execute(  # one autocommitted statement per message
                    "INSERT INTO answers VALUES (%s, %s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT (question_id) DO NOTHING",
                    (
                        env.question_id,
                        env.question,
                        env.state.value,
                        env.answer,
                        env.score,
                        env.attempt,
                        time.time(),
                    ),
                )
    client.close()


def run_baseline(
    args: argparse.Namespace,
    bootstrap: str,
    pg: str,
    n: int,
    latency_ms: float = 0.0,
    client_name: str = "confluent-kafka",
) -> dict[str, Any]:
    prefix = f"base{uuid.uuid4().hex[:8]}"
    topics = Topics.with_prefix(prefix)
    qas = question_set(n, prefix)
    with pg_schema(pg, "bench_base") as (_, db):
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute(BASELINE_DDL)
        bus = KafkaBus(KafkaSettings(bootstrap, partitions=args.partitions), topics)
        asyncio.run(bus.start())
        asyncio.run(bus.close())
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--baseline-role",
                    role,
                    "--prefix",
                    prefix,
                    "--dsn",
                    db,
                    "--baseline-client",
                    client_name,
                ],
                env=child_env(kafka_bootstrap=bootstrap, sim_latency_ms=latency_ms),
                stdin=subprocess.DEVNULL,
            )
            for role in ("worker", "judge", "store")
        ]
        try:
            wait_groups_stable(
                bootstrap, {f"{prefix}.{g}": 1 for g in ("worker", "judge", "store")}
            )
            loader = BASELINE_CLIENTS[client_name](bootstrap, None, [])
            names = {
                role: p.pid for role, p in zip(("worker", "judge", "store"), procs, strict=True)
            }
            cpu_before = cpu_snapshot(names)
            t0 = time.time()
            for q, r in qas:  # the original gateway: one publish + flush per question
                e = envelope_for(q, r, time.time())
                loader.send(topics.questions, e.question_id.encode(), codec.encode(e))
            intake = time.time() - t0
            samples = []
            while True:
                time.sleep(0.5)
                done = scalar(db, "SELECT count(*) FROM answers")
                samples.append({"t": round(time.time() - t0, 2), "final": done})
                if done >= len(qas):
                    cpu_after = cpu_snapshot(names)
                    break
                if time.time() - t0 > args.timeout:
                    raise RuntimeError(f"baseline not drained after {args.timeout} s: {done}")
            elapsed = scalar(db, "SELECT max(stored_at) FROM answers") - t0
            cpu_s = cpu_delta(cpu_before, cpu_after)
        finally:
            codes = stop(procs)
            drop_topics(bootstrap, topics)
    return {
        "client": client_name,
        "questions": len(qas),
        "elapsed_s": round(elapsed, 3),
        "questions_per_s": round(len(qas) / elapsed, 1),
        "intake_s": round(intake, 3),
        "cpu_s": cpu_s,
        "cpu_ms_per_question": per_question_ms(cpu_s, len(qas)),
        "samples": samples,
        "exit_codes": codes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=20000)
    parser.add_argument("--baseline-questions", type=int, default=3000)
    parser.add_argument(
        "--warmup-questions", type=int, default=5000, help="a first qaloop run, not counted"
    )
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--judges", type=int, default=1)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--concurrency", type=int, default=256, help="LLM calls in flight")
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=0.0,
        help="also compare both with an LLM taking this long per call",
    )
    parser.add_argument("--latency-questions", type=int, default=3000)
    parser.add_argument("--latency-baseline-questions", type=int, default=200)
    parser.add_argument("--profile", help="directory for a cProfile dump per stage process")
    parser.add_argument(
        "--producer-config", default="{}", help="extra librdkafka producer settings (JSON)"
    )
    parser.add_argument(
        "--consumer-config", default="{}", help="extra librdkafka consumer settings (JSON)"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="QALOOP_X=V",
        help="extra setting for qaloop's stage processes (e.g. QALOOP_SCORER=composite)",
    )
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "distributed.json"))
    parser.add_argument("--logs", default="/tmp/qaloop-bench-logs")
    parser.add_argument("--bootstrap", default=os.environ.get("QALOOP_KAFKA_BOOTSTRAP"))
    parser.add_argument("--dsn", default=os.environ.get("QALOOP_PG_DSN"))
    parser.add_argument(
        "--baseline-clients",
        default="confluent-kafka,kafka-python",
        help="Kafka clients to build the baseline with, comma-separated (the first is the "
        "one the speed-up is computed against)",
    )
    parser.add_argument("--baseline-role", help=argparse.SUPPRESS)
    parser.add_argument("--baseline-client", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.env = dict(item.split("=", 1) for item in args.set)
    if not args.bootstrap or not args.dsn:
        raise SystemExit(
            'set QALOOP_KAFKA_BOOTSTRAP and QALOOP_PG_DSN: eval "$(scripts/infra env)"'
        )
    if args.baseline_role:
        baseline_role(
            args.baseline_role, args.bootstrap, args.prefix, args.dsn, args.baseline_client
        )
        return
    result: dict[str, Any] = {
        "command": "python " + " ".join(sys.argv),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "settings": {
            "log_level": args.log_level,
            "llm": "simulated, 0 ms, no errors",
            # what the judge processes build from their environment (the baseline's judge
            # scores with the plain scorer path: `baseline_role`)
            "gate": gate_in({**child_env(), **args.env}),
            "env": args.env,
        },
        "machine_at_start": machine_state(),
    }
    print(gate_line(result["settings"]["gate"]), flush=True)
    print(f"at start: {machine_line(result['machine_at_start'])}", flush=True)
    if args.warmup_questions > 0:
        # A broker just started runs interpreted Java until its JIT warms up (its CPU per message
        # was 2x higher in a first run): warm it, and every cache on the way, before measuring.
        warm = run_qaloop(args, args.bootstrap, args.dsn, args.warmup_questions)
        result["warmup"] = {k: warm[k] for k in ("questions", "questions_per_s")}
        print(f"warm-up: {warm['questions_per_s']} questions/s (not counted)", flush=True)
    result["qaloop"] = run_qaloop(args, args.bootstrap, args.dsn, args.questions)
    print(f"qaloop: {result['qaloop']['questions_per_s']} questions/s", flush=True)
    clients = [c for c in args.baseline_clients.split(",") if c]
    if not args.skip_baseline:
        for i, client in enumerate(clients):
            key = "baseline" if i == 0 else f"baseline_{client.replace('-', '_')}"
            base = run_baseline(
                args, args.bootstrap, args.dsn, args.baseline_questions, client_name=client
            )
            result[key] = base
            speedup = round(result["qaloop"]["questions_per_s"] / base["questions_per_s"], 1)
            result["speedup" if i == 0 else f"speedup_vs_{client.replace('-', '_')}"] = speedup
            print(f"baseline ({client}): {base['questions_per_s']} questions/s", flush=True)
    if args.latency_ms > 0:  # the same comparison with an LLM that takes time to answer
        ms = args.latency_ms
        q = run_qaloop(args, args.bootstrap, args.dsn, args.latency_questions, ms)
        b = run_baseline(
            args, args.bootstrap, args.dsn, args.latency_baseline_questions, ms, clients[0]
        )
        result[f"with_llm_latency_{ms:g}ms"] = {
            "qaloop": q,
            "baseline": b,
            "speedup": round(q["questions_per_s"] / b["questions_per_s"], 1),
        }
        print(
            f"{ms:g} ms LLM: qaloop {q['questions_per_s']} q/s, baseline "
            f"{b['questions_per_s']} q/s",
            flush=True,
        )
    result["machine_at_end"] = machine_state()
    print(f"at end: {machine_line(result['machine_at_end'])}", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    parts = [k for k in result if k == "qaloop" or k.startswith("baseline")]
    brief = {k: v for k, v in result.items() if k not in parts}
    for part in parts:
        brief[part] = {k: v for k, v in result[part].items() if k != "samples"}
    for key, value in result.items():
        if key.startswith("with_llm_latency"):
            brief[key] = {
                part: {
                    k: v
                    for k, v in value[part].items()
                    if k in ("questions_per_s", "elapsed_s", "questions")
                }
                for part in ("qaloop", "baseline")
            }
    print(orjson.dumps(brief, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
