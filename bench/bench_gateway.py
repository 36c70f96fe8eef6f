"""Gateway cache-hit throughput over loopback HTTP, next to a bare Starlette dict lookup.

Both servers run in the same way (uvicorn, one worker, uvloop + httptools, no access log) and
are loaded by wrk (16 connections) in alternating rounds, so machine noise hits both alike;
we report the medians and their ratio.

    .venv/bin/python bench/bench_gateway.py [--seconds 10] [--rounds 3]

Needs `wrk` (Debian package). Writes bench/results/gateway.json.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson

ROOT = Path(__file__).resolve().parents[1]
N_QUESTIONS = 100


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(port: int, path: str = "/healthz", method: str = "GET") -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.request(method, f"http://127.0.0.1:{port}{path}", timeout=0.5)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"server on {port} did not start")


def questions() -> list[dict[str, str]]:
    sys.path.insert(0, str(ROOT / "src"))
    from qaloop.dataset import load_sample

    return [
        {"question": qa.question, "reference_answer": qa.reference_answer}
        for qa in load_sample(limit=N_QUESTIONS)
    ]


def lua_script(bodies: list[dict[str, str]], path: Path) -> None:
    quoted = ",\n".join("[==[" + orjson.dumps(b).decode() + "]==]" for b in bodies)
    path.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"local bodies = {{\n{quoted}\n}}\n"
        "local i = 0\n"
        "request = function()\n"
        "  i = i % #bodies + 1\n"
        '  return wrk.format(nil, "/v1/questions", nil, bodies[i])\n'
        "end\n"
    )


def parse_wrk(output: str) -> dict[str, float]:
    def to_ms(value: str) -> float:
        match = re.match(r"([\d.]+)(us|ms|s|m)$", value)
        if match is None:
            raise ValueError(f"unexpected wrk latency {value!r} in:\n{output}")
        number, unit = match.groups()
        return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = to_ms(re.search(r"^\s+50%\s+(\S+)", output, re.M).group(1))  # type: ignore[union-attr]
    p99 = to_ms(re.search(r"^\s+99%\s+(\S+)", output, re.M).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: (.*)", output)
    return {
        "rps": rps,
        "p50_ms": p50,
        "p99_ms": p99,
        "non_2xx": float(non2xx.group(1)) if non2xx else 0.0,
        "socket_errors": 1.0 if errors else 0.0,
    }


def run_wrk(port: int, script: Path, seconds: int) -> dict[str, float]:
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            "-c16",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return parse_wrk(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install -y wrk")
    tmp = Path(tempfile.mkdtemp(prefix="qaloop-bench-"))
    bodies = questions()
    script = tmp / "post.lua"
    lua_script(bodies, script)
    py = sys.executable
    env = {**os.environ, "QALOOP_LOG_LEVEL": "WARNING"}
    qport, bport = free_port(), free_port()
    qaloop = subprocess.Popen(
        [py, "-m", "qaloop", "serve", "--port", str(qport), "--db", f"sqlite:///{tmp / 'g.db'}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    bare = subprocess.Popen(
        [
            py,
            "-m",
            "uvicorn",
            "bare_app:app",
            "--port",
            str(bport),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        cwd=Path(__file__).parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_up(qport)
        wait_up(bport, "/v1/questions", "POST")
        with httpx.Client(base_url=f"http://127.0.0.1:{qport}", timeout=30) as client:
            ids = [client.post("/v1/questions", json=b).json()["id"] for b in bodies]
            for qid in ids:  # wait until every question is final
                client.get(f"/v1/questions/{qid}", params={"wait": 20})
            sources = [client.post("/v1/questions", json=b).json().get("source") for b in bodies]
            sources = [client.post("/v1/questions", json=b).json().get("source") for b in bodies]
        warm_hits = sum(1 for s in sources if s == "cache")
        results: dict[str, list[dict[str, float]]] = {"bare": [], "qaloop": []}
        run_wrk(bport, script, 2)  # warm-up
        run_wrk(qport, script, 2)
        for _ in range(args.rounds):
            results["bare"].append(run_wrk(bport, script, args.seconds))
            results["qaloop"].append(run_wrk(qport, script, args.seconds))
        with httpx.Client(base_url=f"http://127.0.0.1:{qport}") as client:
            stats = client.get("/v1/stats").json()
    finally:
        for proc in (qaloop, bare):
            proc.terminate()
            proc.wait(timeout=20)

    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in results[name])

    summary = {
        "command": f"python bench/bench_gateway.py --seconds {args.seconds} --rounds {args.rounds}",
        "wrk": "wrk -t2 -c16 --latency, POST of 100 cached questions in rotation",
        "questions_served_from_cache_before_load": warm_hits,
        "qaloop_cache_hit_rate_after": stats["cache"]["hit_rate"],
        "rounds": results,
        "bare_rps": med("bare", "rps"),
        "qaloop_rps": med("qaloop", "rps"),
        "ratio": round(med("qaloop", "rps") / med("bare", "rps"), 3),
        "bare_p50_ms": med("bare", "p50_ms"),
        "bare_p99_ms": med("bare", "p99_ms"),
        "qaloop_p50_ms": med("qaloop", "p50_ms"),
        "qaloop_p99_ms": med("qaloop", "p99_ms"),
        "qaloop_non_2xx": sum(r["non_2xx"] for r in results["qaloop"]),
    }
    out = ROOT / "bench" / "results" / "gateway.json"
    out.write_text(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
    print(
        orjson.dumps(
            {k: v for k, v in summary.items() if k != "rounds"}, option=orjson.OPT_INDENT_2
        ).decode()
    )


if __name__ == "__main__":
    main()
