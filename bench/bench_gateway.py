"""Gateway cache-hit throughput over loopback HTTP, next to a bare Starlette dict lookup.

Both servers run in the same way (uvicorn, one worker, uvloop + httptools, no access log) and
are loaded by wrk (16 connections) in alternating rounds, so machine noise hits both alike;
we report the medians and their ratio.

    .venv/bin/python bench/bench_gateway.py [--seconds 10] [--rounds 3] [--auth]

With `--auth` a third server runs alongside, the same gateway with API keys on (every request
carries a key; its rate limit set high enough never to refuse one), in the same alternating
rounds: the cost of the key check, side by side.

Needs `wrk` (`make bench-deps` installs the Debian package). Writes bench/results/gateway.json.
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


def lua_script(bodies: list[dict[str, str]], path: Path, key: str | None = None) -> None:
    quoted = ",\n".join("[==[" + orjson.dumps(b).decode() + "]==]" for b in bodies)
    auth = f'wrk.headers["Authorization"] = "Bearer {key}"\n' if key else ""
    path.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        + auth
        + f"local bodies = {{\n{quoted}\n}}\n"
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
    total = float(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    p50 = to_ms(re.search(r"^\s+50%\s+(\S+)", output, re.M).group(1))  # type: ignore[union-attr]
    p99 = to_ms(re.search(r"^\s+99%\s+(\S+)", output, re.M).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: (.*)", output)
    return {
        "requests": total,
        "rps": rps,
        "p50_ms": p50,
        "p99_ms": p99,
        "non_2xx": float(non2xx.group(1)) if non2xx else 0.0,
        "socket_errors": 1.0 if errors else 0.0,
    }


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_wrk(port: int, script: Path, seconds: int, pid: int | None = None) -> dict[str, float]:
    before = cpu_s(pid) if pid is not None else 0.0
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
    result = parse_wrk(out)
    if pid is not None:
        # The server's own CPU per request: far steadier than requests/s on a busy machine.
        result["server_cpu_us_per_request"] = (cpu_s(pid) - before) / result["requests"] * 1e6
    return result


def start_gateway(port: int, db: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "qaloop", "serve", "--port", str(port), "--db", f"sqlite:///{db}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def prime(port: int, bodies: list[dict[str, str]], headers: dict[str, str]) -> int:
    """Ask every question, wait until each is final, ask again: the cache is warm. Returns
    how many were answered from the cache on the last pass."""
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30, headers=headers) as c:
        ids = [c.post("/v1/questions", json=b).json()["id"] for b in bodies]
        for qid in ids:
            c.get(f"/v1/questions/{qid}", params={"wait": 20})
        sources = [c.post("/v1/questions", json=b).json().get("source") for b in bodies]
        sources = [c.post("/v1/questions", json=b).json().get("source") for b in bodies]
    return sum(1 for s in sources if s == "cache")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--auth", action="store_true", help="also the gateway with API keys on")
    parser.add_argument(
        "--baseline-src",
        default=None,
        help="also a gateway run from this src/ (e.g. another checkout's), for a before/after",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("Error: wrk not found: run `make bench-deps` (apt-get install wrk)")
    sys.path.insert(0, str(ROOT / "src"))
    from qaloop.gateway.auth import ApiKey, format_key, hash_token, new_token

    tmp = Path(tempfile.mkdtemp(prefix="qaloop-bench-"))
    bodies = questions()
    script = tmp / "post.lua"
    lua_script(bodies, script)
    env = {**os.environ, "QALOOP_LOG_LEVEL": "WARNING"}
    qport, bport, aport = free_port(), free_port(), free_port()
    procs = [start_gateway(qport, tmp / "g.db", env)]
    servers: dict[str, tuple[int, Path, int | None]] = {"qaloop": (qport, script, procs[0].pid)}
    token = new_token()
    if args.auth:
        keys = tmp / "keys.txt"
        keys.write_text(format_key(ApiKey("bench", hash_token(token), "user", 1e9, 1e9)) + "\n")
        auth_script = tmp / "post-auth.lua"
        lua_script(bodies, auth_script, token)
        auth_env = {**env, "QALOOP_AUTH": "on", "QALOOP_API_KEYS_FILE": str(keys)}
        procs.append(start_gateway(aport, tmp / "a.db", auth_env))
        servers["qaloop_auth"] = (aport, auth_script, procs[-1].pid)
    if args.baseline_src:
        base_env = {**env, "PYTHONPATH": str(Path(args.baseline_src).resolve())}
        baseport = free_port()
        procs.append(start_gateway(baseport, tmp / "b.db", base_env))
        servers["baseline"] = (baseport, script, procs[-1].pid)
    procs.append(
        subprocess.Popen(
            [
                sys.executable,
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
    )
    servers = {"bare": (bport, script, procs[-1].pid), **servers}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in servers}
    cpu_key = "server_cpu_us_per_request"
    warm: dict[str, int] = {}
    try:
        wait_up(qport)
        wait_up(bport, "/v1/questions", "POST")
        warm["qaloop"] = prime(qport, bodies, {})
        if args.auth:
            wait_up(aport)
            warm["qaloop_auth"] = prime(aport, bodies, {"Authorization": f"Bearer {token}"})
        if "baseline" in servers:
            wait_up(servers["baseline"][0])
            warm["baseline"] = prime(servers["baseline"][0], bodies, {})
        for port, lua, _ in servers.values():  # warm-up
            run_wrk(port, lua, 2)
        for _ in range(args.rounds):
            for name, (port, lua, pid) in servers.items():
                results[name].append(run_wrk(port, lua, args.seconds, pid))
        with httpx.Client(base_url=f"http://127.0.0.1:{qport}") as client:
            stats = client.get("/v1/stats").json()
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)

    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in results[name])

    flag = (" --auth" if args.auth else "") + (
        f" --baseline-src {args.baseline_src}" if args.baseline_src else ""
    )
    summary: dict[str, object] = {
        "command": f"python bench/bench_gateway.py --seconds {args.seconds} "
        f"--rounds {args.rounds}{flag}",
        "wrk": "wrk -t2 -c16 --latency, POST of 100 cached questions in rotation",
        "questions_served_from_cache_before_load": warm,
        "qaloop_cache_hit_rate_after": stats["cache"]["hit_rate"],
        "load_average_after": os.getloadavg(),
        "rounds": results,
        "bare_rps": med("bare", "rps"),
        "qaloop_rps": med("qaloop", "rps"),
        "ratio": round(med("qaloop", "rps") / med("bare", "rps"), 3),
        "bare_p50_ms": med("bare", "p50_ms"),
        "bare_p99_ms": med("bare", "p99_ms"),
        "qaloop_p50_ms": med("qaloop", "p50_ms"),
        "qaloop_p99_ms": med("qaloop", "p99_ms"),
        "qaloop_non_2xx": sum(r["non_2xx"] for r in results["qaloop"]),
        "server_cpu_us_per_request": {name: round(med(name, cpu_key), 1) for name in results},
    }
    if args.auth:
        summary |= {
            "qaloop_auth_rps": med("qaloop_auth", "rps"),
            "ratio_auth": round(med("qaloop_auth", "rps") / med("bare", "rps"), 3),
            "qaloop_auth_p50_ms": med("qaloop_auth", "p50_ms"),
            "qaloop_auth_p99_ms": med("qaloop_auth", "p99_ms"),
            "qaloop_auth_non_2xx": sum(r["non_2xx"] for r in results["qaloop_auth"]),
        }
    if "baseline" in results:
        summary |= {
            "baseline_rps": med("baseline", "rps"),
            "ratio_baseline": round(med("baseline", "rps") / med("bare", "rps"), 3),
            "baseline_p50_ms": med("baseline", "p50_ms"),
            "baseline_p99_ms": med("baseline", "p99_ms"),
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
