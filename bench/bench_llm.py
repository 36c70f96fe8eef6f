"""Questions/s one LLM worker sustains against the fake LLM server at 1 s latency behind a
600-requests-per-minute quota: the worker should sit at the quota (within 5 %) with zero 429s
caused by itself.

The fake server (tests/fakes/llm_server.py) runs as its own process, answers every request
after `--latency-s`, and answers 429 to any request that makes the last 60 s hold more than
`--limit` requests (a sliding window, stricter than a calendar minute). The worker is the real
pipeline stage: MemoryBus -> ConcurrentRunner -> Worker -> ProtectedProvider (token bucket,
in-process or PostgreSQL) -> OpenAI-compatible or Gemini provider.

    .venv/bin/python bench/bench_llm.py [--questions 900] [--provider openai|gemini]
        [--backend local|postgres --dsn postgresql://...]

Writes bench/results/llm_<provider>_<backend>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parents[1]


def start_server(
    latency_s: float, limit: int, window_s: float
) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "tests" / "fakes" / "llm_server.py"),
            "--latency-s",
            str(latency_s),
            "--limit",
            str(limit),
            "--window-s",
            str(window_s),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    base_url = proc.stdout.readline().strip()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{base_url}/_stats", timeout=0.5)
            return proc, base_url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("fake LLM server did not start")


async def run_worker(args: argparse.Namespace, base_url: str) -> dict[str, Any]:
    from qaloop.bus.base import OutMessage, Topics
    from qaloop.bus.memory import MemoryBus
    from qaloop.core import codec
    from qaloop.core.ids import question_id
    from qaloop.core.model import Envelope
    from qaloop.core.retry import RetryPolicy
    from qaloop.llm.base import Provider
    from qaloop.llm.openai_compat import OpenAICompatProvider
    from qaloop.llm.protection import Limit, LocalRateLimiter, ProtectedProvider, RateLimiter
    from qaloop.services.runner import ConcurrentRunner
    from qaloop.services.worker import Worker, WorkerConfig

    limits = [Limit.make("rpm", args.limit, args.window_s)]
    limiter: RateLimiter
    if args.backend == "postgres":
        from qaloop.llm.ratelimit_pg import PostgresRateLimiter

        limiter = PostgresRateLimiter(args.dsn, f"bench-{uuid.uuid4().hex[:8]}", limits)
    else:
        limiter = LocalRateLimiter(limits)
    inner: Provider
    if args.provider == "gemini":
        from qaloop.llm.gemini import GeminiProvider

        inner = GeminiProvider("bench-key", base_url=base_url, timeout_s=30)
    else:
        inner = OpenAICompatProvider(
            base_url=f"{base_url}/v1", api_key="bench-key", timeout_s=30, model="fake"
        )
    provider = ProtectedProvider(inner, limiter=limiter, timeout_s=30, max_queue_wait_s=10)
    topics = Topics()
    bus = MemoryBus(topics)
    await bus.start()
    worker = Worker(
        provider,
        topics,
        WorkerConfig(concurrency=args.concurrency, request_timeout_s=60),
        RetryPolicy(),
    )
    runner = ConcurrentRunner(
        "worker",
        bus,
        bus.consumer("worker", [topics.questions]),
        worker.handle,
        concurrency=args.concurrency,
        dead_letter_topic=topics.dead_letter,
    )
    now = time.time()
    envelopes = [
        Envelope(question_id(q), q, None, "bench", now)
        for q in (f"Benchmark question number {i}?" for i in range(args.questions))
    ]
    await bus.publish_many(
        [OutMessage(topics.questions, e.question_id, codec.encode(e)) for e in envelopes]
    )
    out = bus.consumer("bench", [topics.generated, topics.delayed, topics.dead_letter])
    stop = asyncio.Event()
    started = time.monotonic()
    task = asyncio.create_task(runner.run(stop))
    done_at: list[float] = []
    by_topic: dict[str, int] = {}
    while len(done_at) < args.questions:
        messages = await out.poll(1000, 1.0)
        t = time.monotonic() - started
        for m in messages:
            by_topic[m.topic] = by_topic.get(m.topic, 0) + 1
            done_at.append(t)
        await out.commit(messages)
        if t > args.timeout_s:
            break
    stop.set()
    await task
    await provider.aclose()
    done_at.sort()
    n = len(done_at)
    # steady state: between the 10th and 90th percentile completions (leaves out the
    # initial burst and the tail)
    lo, hi = done_at[n // 10], done_at[(n * 9) // 10]
    steady = ((n * 9) // 10 - n // 10) / (hi - lo) if hi > lo else 0.0
    return {
        "completed": n,
        "by_topic": {k.rsplit(".", 1)[-1]: v for k, v in by_topic.items()},
        "wall_s": round(done_at[-1], 3) if done_at else None,
        "overall_qps": round(n / done_at[-1], 3) if done_at else None,
        "steady_qps": round(steady, 3),
        "llm_calls": worker.stats.llm_calls,
        "rate_waits": provider.stats.rate_waits,
        "rate_refused": provider.stats.rate_refused,
        "mean_rate_wait_s": round(
            provider.stats.rate_wait_s / max(1, provider.stats.rate_waits), 3
        ),
        "limiter": {"burst": limits[0].burst, "refill_per_s": round(limits[0].rate, 4)},
    }


def run_processes(args: argparse.Namespace, base_url: str) -> dict[str, Any]:
    """K worker processes (tests/fakes/worker_proc.py) sharing one PostgreSQL quota, with
    `concurrency / K` slots each (as many questions in flight or waiting as one worker)."""
    key = f"bench-{uuid.uuid4().hex[:8]}"
    per = args.questions // args.processes
    start_at = time.time() + 3.0
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "tests" / "fakes" / "worker_proc.py"),
                "--base-url",
                base_url,
                "--provider",
                args.provider,
                "--n",
                str(per),
                "--limit",
                str(args.limit),
                "--window-s",
                str(args.window_s),
                "--backend",
                "postgres",
                "--dsn",
                args.dsn,
                "--key",
                key,
                "--tag",
                f"bench-{i}",
                "--max-wait-s",
                "10",
                "--concurrency",
                str(max(1, args.concurrency // args.processes)),
                "--start-at",
                str(start_at),
            ],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for i in range(args.processes)
    ]
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=args.timeout_s)
        results.append(orjson.loads(out.strip().splitlines()[-1]))
    n = sum(int(r["n"]) for r in results)
    wall = max(float(r["last_done_s"]) for r in results)
    return {
        "completed": n,
        "by_topic": {
            t: sum(r["topics"].get(t, 0) for r in results)
            for t in {t for r in results for t in r["topics"]}
        },
        "wall_s": round(wall, 3),
        "overall_qps": round(n / wall, 3),
        "per_process": results,
    }


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="LLM worker throughput under a quota")
    parser.add_argument("--questions", type=int, default=900)
    parser.add_argument("--latency-s", type=float, default=1.0)
    parser.add_argument("--limit", type=int, default=600, help="requests per window")
    parser.add_argument("--window-s", type=float, default=60.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--provider", choices=["openai", "gemini"], default="openai")
    parser.add_argument("--backend", choices=["local", "postgres"], default="local")
    parser.add_argument("--dsn", default=os.environ.get("QALOOP_PG_DSN", ""))
    parser.add_argument("--timeout-s", type=float, default=600)
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="worker processes sharing the quota (>1 needs --backend postgres)",
    )
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    if args.backend == "postgres" and not args.dsn:
        parser.error("--backend postgres needs --dsn or QALOOP_PG_DSN")
    if args.processes > 1 and args.backend != "postgres":
        parser.error("--processes > 1 shares the quota through --backend postgres")
    proc, base_url = start_server(args.latency_s, args.limit, args.window_s)
    try:
        if args.processes > 1:
            result = run_processes(args, base_url)
        else:
            result = asyncio.run(run_worker(args, base_url))
        server = httpx.get(f"{base_url}/_stats", timeout=5).json()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    limit_qps = args.limit / args.window_s
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        "config": {
            "questions": args.questions,
            "latency_s": args.latency_s,
            "limit": args.limit,
            "window_s": args.window_s,
            "concurrency": args.concurrency,
            "provider": args.provider,
            "backend": args.backend,
        },
        "limit_qps": limit_qps,
        "worker": result,
        "vs_limit": round(result.get("steady_qps", result["overall_qps"]) / limit_qps, 4),
        "server_arrival_qps": round(
            (server["requests"] - 1) / (server["last_arrival"] - server["first_arrival"]), 3
        )
        if server["requests"] > 1
        else None,
        "server": {
            k: server[k]
            for k in ("requests", "by_outcome", "client_429s", "max_in_window", "window_s")
        },
    }
    suffix = f"_x{args.processes}" if args.processes > 1 else ""
    out = (
        Path(args.out)
        if args.out
        else (ROOT / "bench" / "results" / f"llm_{args.provider}_{args.backend}{suffix}.json")
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    w = result
    print(
        f"{w['completed']} questions in {w['wall_s']} s: overall {w['overall_qps']} q/s, "
        f"steady {w.get('steady_qps', '-')} q/s = {report['vs_limit']:.1%} of the "
        f"{limit_qps:g} q/s limit; server: {server['client_429s']} client 429s, at most "
        f"{server['max_in_window']} requests in any {args.window_s:g} s window "
        f"(limit {args.limit}); wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}"
    )


if __name__ == "__main__":
    main()
