"""Pipeline overhead per answer: how long the pipeline itself takes, with a zero-latency
simulated LLM, under a light steady load (default 300 new questions at 20/s).

Measured for questions validated on attempt 1 (one pass through every stage):

- overhead = `finished_at - first_seen` from storage: from the gateway's accept to the judge's
  decision (the timestamp of the final history event);
- visible = when the validated record can be read from the validated topic by a
  `read_committed` consumer (what the store, and so a client, waits for) minus `first_seen`.
  For the Flink judge with exactly-once sinks this includes the wait for the checkpoint that
  commits the Kafka transaction: its floor is the checkpoint interval.

Modes: `embedded` (EmbeddedPipeline in this process, in-process bus, SQLite; visible = when
the store wrote the final row), `plain` (`qaloop up`: gateway, worker, judge, store, retrier
as processes over Kafka and PostgreSQL, questions POSTed to the gateway), `flink` (the same
with `qaloop up --judge flink`: the Flink judge on a local mini-cluster).

    eval "$(scripts/infra env)"
    PYTHONPATH=src .venv/bin/python bench/bench_latency.py [--modes embedded,plain,flink]

Writes bench/results/latency/latest.json (and prints one line per mode); the runs quoted in
BENCHMARKS.md are the other files there.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from benchkit import (  # noqa: E402
    child_env,
    drop_topics,
    free_port,
    gate_in,
    gate_line,
    machine_line,
    machine_state,
    pg_schema,
)

from qaloop.bus.base import Topics  # noqa: E402
from qaloop.dataset import QA, load_sample  # noqa: E402
from qaloop.settings import Settings  # noqa: E402


def questions(run: str, count: int) -> list[QA]:
    """`count` distinct questions (a run tag in each, so every run asks new ones)."""
    sample = load_sample()
    return [
        QA(
            f"{sample[i % len(sample)].question} [{run} {i}]",
            sample[i % len(sample)].reference_answer,
        )
        for i in range(count)
    ]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(values_s: list[float]) -> dict[str, float | int]:
    ms = [v * 1000 for v in values_s]
    if not ms:
        return {"n": 0}
    return {
        "n": len(ms),
        "p50_ms": round(pct(ms, 0.50), 1),
        "p95_ms": round(pct(ms, 0.95), 1),
        "p99_ms": round(pct(ms, 0.99), 1),
        "max_ms": round(max(ms), 1),
        "mean_ms": round(statistics.fmean(ms), 1),
    }


def first_pass(rows: list[dict[str, Any]], ids: set[str]) -> dict[str, dict[str, Any]]:
    """Rows of the measured questions validated on attempt 1."""
    return {
        r["question_id"]: r
        for r in rows
        if r["question_id"] in ids and r["state"] == "validated" and r["attempt"] == 1
    }


def attach_hops(rows: dict[str, dict[str, Any]], events: list[dict[str, Any]]) -> None:
    """Where the time went, from the stored history: accepted -> generated (the gateway's
    publish, the worker's fetch and its LLM call, 0 ms here) and generated -> scored (the
    worker's publish, the judge's fetch and scoring)."""
    at: dict[tuple[str, str], float] = {}
    for e in events:
        if e["question_id"] in rows:
            at.setdefault((e["question_id"], e["kind"]), e["at"])
    for qid, row in rows.items():
        accepted, generated = at.get((qid, "accepted")), at.get((qid, "generated"))
        scored = at.get((qid, "scored"))
        if accepted is not None and generated is not None and scored is not None:
            row["hops"] = (generated - accepted, scored - generated)


# ---------------------------------------------------------------------------- embedded


async def run_embedded(args: argparse.Namespace) -> dict[str, Any]:
    from qaloop.core.ids import question_id
    from qaloop.pipeline import EmbeddedPipeline
    from qaloop.storage.sqlite import SQLiteRepository

    with tempfile.TemporaryDirectory() as tmp:
        repo = SQLiteRepository(str(Path(tmp) / "bench.db"))
        settings = Settings(db=f"sqlite:///{tmp}/bench.db", llm="simulated", sim_latency_ms=0)
        pipeline = EmbeddedPipeline(settings, repo=repo)
        stored_at: dict[str, float] = {}
        notify = pipeline.service.notify_final

        def on_final(envelope: Any) -> None:  # when the store has written the final row
            stored_at.setdefault(envelope.question_id, time.time())
            notify(envelope)

        pipeline.store.on_final = on_final
        await pipeline.start()
        try:
            await _offer(pipeline.service.ask, questions("warm", 20), 200.0)
            await pipeline.drain(60)
            qs = questions(f"emb-{uuid.uuid4().hex[:6]}", args.count)
            await _offer(pipeline.service.ask, qs, args.rate)
            drained = await pipeline.drain(120)
        finally:
            await pipeline.stop()
        ids = {question_id(q.question) for q in qs}
        rows = first_pass(repo.export_questions(), ids)
        attach_hops(rows, repo.export_events())
        repo.close()
    return _result(
        "embedded",
        rows,
        {qid: stored_at[qid] for qid in rows if qid in stored_at},
        len(ids),
        {"drained": drained},
    )


async def _offer(ask: Any, qs: list[QA], rate: float) -> None:
    start = time.perf_counter()
    tasks = []
    for i, q in enumerate(qs):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(ask(q.question, q.reference_answer)))
    await asyncio.gather(*tasks)


# ---------------------------------------------------------------------------- distributed


class VisibleWatch:
    """A read_committed consumer on the validated topic: when each record became visible."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from confluent_kafka import Consumer

        self.seen: dict[str, float] = {}
        self.first_seen: dict[str, float] = {}
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"bench-latency-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
            }
        )
        self._consumer.subscribe([topic])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            m = self._consumer.poll(0.05)  # returns at once when a record is there
            if m is not None:
                if m.error() is not None or m.key() is None:
                    continue
                now = time.time()
                key = m.key().decode()
                self.seen.setdefault(key, now)
                for k, v in m.headers() or []:
                    if k == "qaloop-first-seen" and v is not None:
                        self.first_seen.setdefault(key, float(v.decode()))
        self._consumer.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def run_distributed(args: argparse.Namespace, judge: str) -> dict[str, Any]:
    import httpx

    from qaloop.core.ids import question_id
    from qaloop.storage.postgres import PostgresRepository

    bootstrap = os.environ.get("QALOOP_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
    pg = os.environ.get("QALOOP_PG_DSN")
    if not pg:
        raise SystemExit('QALOOP_PG_DSN is not set: eval "$(scripts/infra env)" first')
    prefix = f"lat{uuid.uuid4().hex[:8]}"
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="qaloop-latency-"))
    with pg_schema(pg, "bench_lat") as (schema, db):
        db = with_pg_options(db, args.pg_option)
        env = service_env(args, workdir)
        log = (workdir / "up.log").open("wb")
        up = subprocess.Popen(
            [sys.executable, "-m", "qaloop", "up", "--db", db, "--topic-prefix", prefix,
             "--port", str(port), "--judge", judge],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=workdir,
        )  # fmt: skip
        watch = None
        url = f"http://127.0.0.1:{port}"
        try:
            with httpx.Client(base_url=url, timeout=30) as client:
                _wait_healthy(client, up, 120)
                watch = VisibleWatch(bootstrap, f"{prefix}.validated")
                # Warm-up: every group has joined and, for Flink, the job runs once these are
                # final; the watch has joined once it has seen the validated ones.
                warm = questions(f"warm-{prefix}", 20)
                for q in warm:
                    client.post("/v1/questions", json=_body(q))
                warm_ids = [question_id(q.question) for q in warm]
                _wait_final(client, warm_ids, up, 300)
                deadline = time.monotonic() + 60
                while not set(warm_ids) & set(watch.seen) and time.monotonic() < deadline:
                    time.sleep(0.1)
                time.sleep(2.0)  # idle, as before a steady load starts
            qs = questions(prefix, args.count)
            asyncio.run(_post_all(url, qs, args.rate))
            ids = [question_id(q.question) for q in qs]
            with httpx.Client(base_url=url, timeout=30) as client:
                _wait_final(client, ids, up, 120)
            time.sleep(1.0)  # the last commits reach the watch
        finally:
            if watch is not None:
                watch.stop()
            up.send_signal(signal.SIGTERM)
            try:
                up.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(up.pid, signal.SIGKILL)
                up.wait()
            log.close()
            drop_topics(bootstrap, Topics.with_prefix(prefix))
        repo = PostgresRepository(pg, schema=schema, max_size=1)
        try:
            rows = first_pass(repo.export_questions(), set(ids))
            attach_hops(rows, repo.export_events())
        finally:
            repo.close()
    assert watch is not None
    visible = {qid: watch.seen[qid] for qid in rows if qid in watch.seen}
    return _result(
        "flink" if judge == "flink" else "plain", rows, visible, len(ids), {"log": str(log.name)}
    )


def with_pg_options(db: str, options: list[str]) -> str:
    """The services' DSN with `-c key=value` server settings for their sessions (pg_schema's
    DSN ends in its `options=-csearch_path...`: these join that parameter)."""
    assert db.rsplit("&", 1)[-1].rsplit("?", 1)[-1].startswith("options="), db
    return db + "".join(f"%20-c{o.replace('=', '%3D')}" for o in options)


def service_env(args: argparse.Namespace, workdir: Path) -> dict[str, str]:
    """What `qaloop up` and so every service process runs with (the gate is read from it)."""
    env = child_env(
        kafka_bootstrap=os.environ.get("QALOOP_KAFKA_BOOTSTRAP", "127.0.0.1:19092"),
        llm="simulated",
        sim_latency_ms=0,
        log_level="WARNING",
        flink_state_dir=workdir / "flink",
    )
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    env.update(args.env)
    return env


def _body(q: QA) -> dict[str, str]:
    return {"question": q.question, "reference_answer": q.reference_answer}


def _wait_healthy(client: Any, up: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if up.poll() is not None:
            raise RuntimeError(f"qaloop up exited with {up.returncode}")
        with contextlib.suppress(Exception):
            if client.get("/healthz").status_code == 200:
                return
        time.sleep(0.2)
    raise TimeoutError("the gateway did not come up")


def _wait_final(client: Any, ids: list[str], up: subprocess.Popen[bytes], timeout_s: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    for qid in ids:
        while True:
            if up.poll() is not None:
                raise RuntimeError(f"qaloop up exited with {up.returncode}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"question {qid} not final after {timeout_s} s")
            try:
                r = client.get(f"/v1/questions/{qid}", params={"wait": min(10, remaining)})
            except httpx.TransportError as exc:  # a long-poll cut on a loaded machine: ask again
                print(f"GET {qid}: {exc!r}, retrying", file=sys.stderr)
                time.sleep(0.2)
                continue
            if r.json().get("status") in ("validated", "failed"):
                break


async def _post_all(url: str, qs: list[QA], rate: float) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=30) as client:

        async def post(q: QA) -> None:
            r = await client.post("/v1/questions", json=_body(q))
            r.raise_for_status()

        start = time.perf_counter()
        tasks = []
        for i, q in enumerate(qs):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(post(q)))
        await asyncio.gather(*tasks)


# ---------------------------------------------------------------------------- results


def _result(
    mode: str,
    rows: dict[str, dict[str, Any]],
    visible_at: dict[str, float],
    asked: int,
    extra: dict[str, Any],
) -> dict[str, Any]:
    overhead = [r["finished_at"] - r["first_seen"] for r in rows.values() if r["finished_at"]]
    visible = [visible_at[q] - rows[q]["first_seen"] for q in visible_at]
    start = min((r["first_seen"] for r in rows.values()), default=0.0)
    samples = sorted(
        (
            round(r["first_seen"] - start, 3),
            round((r["finished_at"] - r["first_seen"]) * 1000, 1),
            round((visible_at[q] - r["first_seen"]) * 1000, 1) if q in visible_at else None,
            *(round(h * 1000, 1) for h in r.get("hops", ())),
        )
        for q, r in rows.items()
        if r["finished_at"]
    )
    return {
        "mode": mode,
        "asked": asked,
        "validated_attempt_1": len(rows),
        "overhead": summary(overhead),
        "visible": summary(visible),
        "to_worker": summary([r["hops"][0] for r in rows.values() if "hops" in r]),
        "to_judge": summary([r["hops"][1] for r in rows.values() if "hops" in r]),
        **extra,
        # per question: seconds since the first; overhead, visible, to worker, to judge (ms)
        "samples": samples,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--modes", default="embedded,plain,flink")
    p.add_argument("--count", type=int, default=300)
    p.add_argument("--rate", type=float, default=20.0, help="new questions per second")
    p.add_argument(
        "--set", action="append", default=[], metavar="QALOOP_X=V", help="extra service env"
    )
    p.add_argument(
        "--pg-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a PostgreSQL setting for the services' sessions, e.g. synchronous_commit=off "
        "(an A/B of the commit's fsync; not a recommended deployment)",
    )
    p.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "results" / "latency" / "latest.json"
    )
    args = p.parse_args()
    args.env = dict(item.split("=", 1) for item in args.set)
    # the distributed modes' judge: the gate their service processes build
    gate = gate_in(service_env(args, Path(tempfile.gettempdir())))
    at_start = machine_state()
    print(gate_line(gate), flush=True)
    print(f"at start: {machine_line(at_start)}", flush=True)
    results = []
    for mode in args.modes.split(","):
        started = time.monotonic()
        if mode == "embedded":
            result = asyncio.run(run_embedded(args))
        elif mode in ("plain", "flink"):
            result = run_distributed(args, mode)
        else:
            raise SystemExit(f"unknown mode {mode!r}")
        result["wall_s"] = round(time.monotonic() - started, 1)
        result["machine_after"] = machine_state()
        results.append(result)
        print(f"{_row(result)}  ({machine_line(result['machine_after'])})", flush=True)
    out = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "at_start": at_start,
            "at_end": results[-1]["machine_after"] if results else at_start,
        },
        "gate": gate,
        "count": args.count,
        "rate": args.rate,
        "env": args.env,
        "pg_options": args.pg_option,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")


def _row(r: dict[str, Any]) -> str:
    o, v = r["overhead"], r["visible"]
    return (
        f"{r['mode']:<9} validated@1 {r['validated_attempt_1']}/{r['asked']}  "
        f"overhead p50 {o.get('p50_ms')} p95 {o.get('p95_ms')} p99 {o.get('p99_ms')} ms  "
        f"visible p50 {v.get('p50_ms')} p95 {v.get('p95_ms')} p99 {v.get('p99_ms')} ms"
    )


if __name__ == "__main__":
    main()
