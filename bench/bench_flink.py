"""The Flink judge vs the plain judge (`qaloop judge`) on the same topic layout and data.

For each variant: a fresh topic prefix; the generated-answers topic is pre-filled with N
envelopes (sample questions; half the answers are the reference, half another question's
reference, so about half validate and half regenerate / give up); the judge process starts;

1. throughput: answers/s from the first to the last of the N outputs (start-up excluded; the
   start-up — process launch to first output — is reported on its own);
2. latency, once the backlog is drained: M more envelopes at a steady rate, and per answer
   - `record_ms`: output record timestamp - input record timestamp (both set by producers);
   - `visible_ms`: when a read_committed consumer received the output - input timestamp:
     what a downstream stage waits (with exactly-once, outputs appear at checkpoint commits).

    eval "$(scripts/infra env)"; make flink-venv
    .venv/bin/python bench/bench_flink.py [--answers 20000] [--latency-answers 2000 --rate 200]

Writes bench/results/flink.json.
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
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from qaloop.bus.base import Topics
from qaloop.core import codec
from qaloop.core.model import Envelope, QuestionState

ROOT = Path(__file__).resolve().parents[1]

VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {"judge": "plain"},
    "flink exactly-once, bundle 100 / 50 ms (default)": {
        "judge": "flink",
        "args": [
            "--flink-delivery",
            "exactly-once",
            "--flink-bundle-size",
            "100",
            "--flink-bundle-time-ms",
            "50",
        ],
    },
    "flink at-least-once, bundle 100 / 50 ms": {
        "judge": "flink",
        "args": [
            "--flink-delivery",
            "at-least-once",
            "--flink-bundle-size",
            "100",
            "--flink-bundle-time-ms",
            "50",
        ],
    },
    "flink at-least-once, bundle 1000 / 1000 ms (PyFlink default)": {
        "judge": "flink",
        "args": [
            "--flink-delivery",
            "at-least-once",
            "--flink-bundle-size",
            "1000",
            "--flink-bundle-time-ms",
            "1000",
        ],
    },
    "flink at-least-once, process mode, bundle 100 / 50 ms": {
        "judge": "flink",
        "args": [
            "--flink-delivery",
            "at-least-once",
            "--flink-execution-mode",
            "process",
            "--flink-bundle-size",
            "100",
            "--flink-bundle-time-ms",
            "50",
        ],
    },
    "flink at-least-once, process mode, bundle 1000 / 1000 ms (PyFlink default)": {
        "judge": "flink",
        "args": [
            "--flink-delivery",
            "at-least-once",
            "--flink-execution-mode",
            "process",
            "--flink-bundle-size",
            "1000",
            "--flink-bundle-time-ms",
            "1000",
        ],
    },
}


def envelopes(n: int, tag: str) -> list[Envelope]:
    from qaloop.dataset import load_sample

    sample = load_sample()
    out = []
    for i in range(n):
        qa = sample[i % len(sample)]
        other = sample[(i * 7 + 3) % len(sample)]
        out.append(
            Envelope(
                uuid.uuid4().hex,
                f"{qa.question} [{tag} {i}]",
                qa.reference_answer,
                uuid.uuid4().hex,
                time.time(),
                attempt=1 + i % 3,
                answer=qa.reference_answer if i % 2 == 0 else other.reference_answer,
                state=QuestionState.SCORING,
            )
        )
    return out


def create_topics(bootstrap: str, prefix: str) -> Topics:
    from qaloop.bus.kafka import KafkaBus, KafkaSettings

    topics = Topics.with_prefix(prefix)
    bus = KafkaBus(KafkaSettings(bootstrap), topics)

    async def go() -> None:
        await bus.start()
        await bus.close()

    asyncio.run(go())
    return topics


def produce(bootstrap: str, topic: str, batch: list[Envelope], rate: float | None) -> None:
    from confluent_kafka import Producer

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "linger.ms": 5 if rate is None else 0,
        }
    )
    started = time.monotonic()
    for i, e in enumerate(batch):
        if rate is not None:
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        while True:
            try:
                producer.produce(topic, key=e.question_id, value=codec.encode(e))
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    producer.flush(60)


class Collector:
    """Outputs of the three routes (read_committed): key -> (record ts ms, received s)."""

    def __init__(self, bootstrap: str, topics: list[str]) -> None:
        from confluent_kafka import Consumer

        self.seen: dict[str, tuple[int, float]] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"bench-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "fetch.wait.max.ms": 10,
            }
        )
        self.consumer.subscribe(topics)
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stop.is_set():
            for m in self.consumer.consume(1000, 0.05):
                if m.error() or m.key() is None:
                    continue
                now = time.time()
                with self.lock:
                    self.seen.setdefault(m.key().decode(), (m.timestamp()[1], now))
        self.consumer.close()

    def count(self, keys: set[str]) -> int:
        with self.lock:
            return sum(1 for k in keys if k in self.seen)

    def wait(self, keys: set[str], timeout_s: float, proc: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + timeout_s
        while self.count(keys) < len(keys):
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {self.count(keys)}/{len(keys)} outputs")
            if proc.poll() is not None:
                raise RuntimeError(f"judge exited with {proc.returncode}")
            time.sleep(0.05)


def start_judge(
    variant: dict[str, Any], bootstrap: str, prefix: str, workdir: Path, log: Path
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QALOOP_")}
    env.update(
        QALOOP_BUS="kafka",
        QALOOP_KAFKA_BOOTSTRAP=bootstrap,
        QALOOP_TOPIC_PREFIX=prefix,
        QALOOP_LOG_LEVEL="WARNING",
        QALOOP_SCORER="jaccard",
    )
    if variant["judge"] == "plain":
        argv = [sys.executable, "-m", "qaloop", "judge"]
    else:
        argv = [
            sys.executable,
            "-m",
            "qaloop",
            "flink-job",
            "--flink-state-dir",
            str(workdir / "state"),
            *variant.get("args", []),
        ]
    with log.open("wb") as out:
        return subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT
        )


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_variant(
    name: str, variant: dict[str, Any], bootstrap: str, args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    topics = create_topics(bootstrap, prefix)
    backlog = envelopes(args.answers, "backlog")
    produce(bootstrap, topics.generated, backlog, None)
    collector = Collector(bootstrap, [topics.validated, topics.questions, topics.dead_letter])
    log = workdir / f"{prefix}.log"
    launched = time.time()
    proc = start_judge(variant, bootstrap, prefix, workdir, log)
    try:
        keys = {e.question_id for e in backlog}
        collector.wait(keys, args.timeout_s, proc)
        with collector.lock:
            received = sorted(collector.seen[k][1] for k in keys)
        first, last = received[0], received[-1]
        # latency: a steady stream on a drained judge
        paced = envelopes(args.latency_answers, "paced")
        produce(bootstrap, topics.generated, paced, args.rate)
        pkeys = {e.question_id for e in paced}
        collector.wait(pkeys, args.timeout_s, proc)
        in_ts = input_timestamps(bootstrap, topics.generated, pkeys)
        with collector.lock:
            record_ms = [collector.seen[k][0] - in_ts[k] for k in pkeys]
            visible_ms = [collector.seen[k][1] * 1000 - in_ts[k] for k in pkeys]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        collector.stop.set()
        collector.thread.join(10)
    result = {
        "variant": name,
        "answers": args.answers,
        "startup_s": round(first - launched, 1),
        "drain_s": round(last - first, 2),
        "answers_per_s": round(args.answers / max(last - first, 1e-9), 1),
        "latency_answers": args.latency_answers,
        "latency_rate_per_s": args.rate,
        "record_ms": summary(record_ms),
        "visible_ms": summary(visible_ms),
        **variant,
    }
    print(orjson.dumps(result).decode(), flush=True)
    return result


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50": round(pct(values, 0.50), 1),
        "p90": round(pct(values, 0.90), 1),
        "p99": round(pct(values, 0.99), 1),
        "max": round(max(values), 1),
        "mean": round(statistics.fmean(values), 1),
    }


def input_timestamps(bootstrap: str, topic: str, keys: set[str]) -> dict[str, int]:
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-in-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    found: dict[str, int] = {}
    deadline = time.monotonic() + 60
    try:
        while len(found) < len(keys) and time.monotonic() < deadline:
            for m in consumer.consume(1000, 0.2):
                if m.error() or m.key() is None:
                    continue
                key = m.key().decode()
                if key in keys:
                    found[key] = m.timestamp()[1]
    finally:
        consumer.close()
    return found


def machine() -> dict[str, Any]:
    load = os.getloadavg()
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_1_5_15": [round(x, 2) for x in load],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bootstrap", default=os.environ.get("QALOOP_KAFKA_BOOTSTRAP"))
    p.add_argument("--answers", type=int, default=20_000)
    p.add_argument("--latency-answers", type=int, default=2_000)
    p.add_argument("--rate", type=float, default=200.0)
    p.add_argument("--timeout-s", type=float, default=600.0)
    p.add_argument("--variants", default="all", help="comma-separated indexes into VARIANTS")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "flink.json")
    p.add_argument(
        "--merge", action="store_true", help="keep the other variants' results already in --out"
    )
    args = p.parse_args()
    if not args.bootstrap:
        sys.exit('QALOOP_KAFKA_BOOTSTRAP is not set: eval "$(scripts/infra env)"')
    names = list(VARIANTS)
    if args.variants != "all":
        names = [names[int(i)] for i in args.variants.split(",")]
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-flink-") as tmp:
        for name in names:
            results.append(run_variant(name, VARIANTS[name], args.bootstrap, args, Path(tmp)))
    command = " ".join(["bench/bench_flink.py", *sys.argv[1:]])
    for r in results:
        r["command"] = command
        r["machine"] = machine()
    if args.merge and args.out.exists():
        done = {r["variant"] for r in results}
        previous = orjson.loads(args.out.read_bytes())["results"]
        results = [r for r in previous if r["variant"] not in done] + results
        results.sort(key=lambda r: list(VARIANTS).index(r["variant"]))
    body = {
        "benchmark": "flink judge vs plain judge",
        "scorer": "jaccard",
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(body, option=orjson.OPT_INDENT_2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
