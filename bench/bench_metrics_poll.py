"""What 8 clients polling `/metrics` and `/v1/dashboard-data` cost a normal POST (issue 14).

Three `qaloop serve` run side by side: one as shipped (the two are built at most once a
second, `QALOOP_METRICS_CACHE_S=1`), one building them on every request
(`QALOOP_METRICS_CACHE_S=0`, the behaviour before), and one with `/metrics` on its own port
(`QALOOP_GATEWAY_METRICS_PORT`: prometheus_client's server in a thread of the same process;
its pollers hit that port). For each, in alternating rounds: the latency of sequential POSTs
of new questions with nobody polling, then with 8 pollers (wrk, 4 connections on each path,
as fast as they can), and, for reference, with the same 8 clients on `/healthz`, the cheapest
route (what any flood costs). Medians over rounds; the machine's load hits all alike.

    .venv/bin/python bench/bench_metrics_poll.py [--rounds 3] [--posts 300]

Needs `wrk` (`make bench-deps`). Writes bench/results/metrics_poll.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import orjson

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(port: int, db: Path, cache_s: str, metrics_port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "QALOOP_LOG_LEVEL": "WARNING",
        "QALOOP_METRICS_CACHE_S": cache_s,
        "QALOOP_GATEWAY_METRICS_PORT": str(metrics_port),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "qaloop", "serve", "--port", str(port), "--db", f"sqlite:///{db}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5)
            return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("gateway did not start")


def posts(port: int, n: int) -> list[float]:
    out = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        for _ in range(n):
            started = time.perf_counter()
            r = client.post("/v1/questions", json={"question": f"new {uuid.uuid4().hex}?"})
            out.append(time.perf_counter() - started)
            assert r.status_code == 202, r.text
    return out


def pollers(
    port: int, seconds: int, paths: tuple[str, ...], metrics_port: int
) -> list[subprocess.Popen[bytes]]:
    def url(path: str) -> str:
        on = metrics_port if path == "/metrics" and metrics_port else port
        return f"http://127.0.0.1:{on}{path}"

    return [
        subprocess.Popen(
            ["wrk", "-t1", "-c4", f"-d{seconds}s", url(path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for path in paths
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--posts", type=int, default=300)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("Error: wrk not found: run `make bench-deps` (apt-get install wrk)")
    tmp = Path(tempfile.mkdtemp(prefix="qaloop-poll-"))
    servers = {
        "cached_1s": (free_port(), "1", 0),
        "every_request": (free_port(), "0", 0),
        "own_port": (free_port(), "1", free_port()),
    }
    procs = [start(port, tmp / f"{name}.db", c, m) for name, (port, c, m) in servers.items()]
    phases = {
        "idle": (),
        "polled": ("/metrics", "/v1/dashboard-data"),
        # the same flood on the cheapest route: what any 8 clients in a loop cost
        "healthz_flood": ("/healthz", "/healthz"),
    }
    p50: dict[str, dict[str, list[float]]] = {n: {k: [] for k in phases} for n in servers}
    p95: dict[str, dict[str, list[float]]] = {n: {k: [] for k in phases} for n in servers}
    try:
        for port, _, _ in servers.values():
            posts(port, 50)  # warm-up
        for _ in range(args.rounds):
            for name, (port, _, metrics_port) in servers.items():
                for phase, paths in phases.items():
                    load = pollers(port, 60, paths, metrics_port)
                    if load:
                        time.sleep(0.5)
                    values = posts(port, args.posts)
                    for proc in load:
                        proc.terminate()
                        proc.wait()
                    values.sort()
                    p50[name][phase].append(statistics.median(values) * 1000)
                    p95[name][phase].append(values[int(len(values) * 0.95)] * 1000)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)
    summary = {
        "command": f"python bench/bench_metrics_poll.py --rounds {args.rounds} "
        f"--posts {args.posts}",
        "load_average_after": os.getloadavg(),
        "p50_ms": {
            n: {k: round(statistics.median(v), 2) for k, v in d.items()} for n, d in p50.items()
        },
        "p95_ms": {
            n: {k: round(statistics.median(v), 2) for k, v in d.items()} for n, d in p95.items()
        },
        "rounds_p50_ms": p50,
    }
    out = ROOT / "bench" / "results" / "metrics_poll.json"
    out.write_text(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
    print(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
