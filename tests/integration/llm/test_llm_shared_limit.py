"""Two worker PROCESSES share one rate limit through PostgreSQL: the fake server never sees
more than the limit in any window, and never answers 429. The control run, each process with
its own in-process limiter, overshoots (two processes x the limit), which is why the shared
limiter exists.

Needs PostgreSQL: QALOOP_PG_DSN (CI sets it; locally `eval "$(scripts/infra env)"`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from qaloop.llm.protection import Limit
from tests.fakes.llm_server import FakeConfig, FakeLLMServer

pytestmark = pytest.mark.integration

PG_DSN = os.environ.get("QALOOP_PG_DSN", "")
ROOT = Path(__file__).resolve().parents[3]
WORKER = ROOT / "tests" / "fakes" / "worker_proc.py"
LIMIT, WINDOW_S, PER_PROCESS = 20, 2.0, 20


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(FakeConfig(limit=LIMIT, window_s=WINDOW_S)) as fake:
        yield fake


def _two_workers(
    server: FakeLLMServer, backend: str, key: str, providers: tuple[str, str] = ("openai", "gemini")
) -> list[dict[str, object]]:
    # both processes begin together, after their imports (which take seconds on a loaded
    # machine: a late starter would stretch the span the test bounds)
    start_at = time.time() + 6.0
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                "--base-url",
                server.base_url,
                "--provider",
                provider,
                "--n",
                str(PER_PROCESS),
                "--limit",
                str(LIMIT),
                "--window-s",
                str(WINDOW_S),
                "--backend",
                backend,
                "--dsn",
                PG_DSN,
                "--key",
                key,
                "--tag",
                f"{backend}-{i}",
                "--start-at",
                str(start_at),
                "--headroom",  # a loaded CI machine delays and bunches arrivals at the server
                "0.05",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for i, provider in enumerate(providers)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def test_two_processes_share_the_postgres_limit(server: FakeLLMServer) -> None:
    if not PG_DSN:
        pytest.skip(
            "QALOOP_PG_DSN is not set: the shared rate limiter needs PostgreSQL "
            '(eval "$(scripts/infra env)")'
        )
    pytest.importorskip("psycopg", reason="the postgres extra is not installed")
    pytest.importorskip("google.genai", reason="the gemini extra is not installed")
    key = f"test-{uuid.uuid4().hex[:12]}"
    results = _two_workers(server, "postgres", key)
    assert all(r["topics"] == {"generated": PER_PROCESS} for r in results), results
    assert len(server.stats.arrivals) == 2 * PER_PROCESS
    assert server.stats.client_429s == 0
    assert server.stats.max_in_window(WINDOW_S) <= LIMIT
    # and the limit is used, not just respected: 40 requests take about
    # (40 - burst) / rate seconds, not twice that
    lim = Limit.make("rpm", LIMIT, WINDOW_S, headroom=0.05)
    span = max(server.stats.arrivals) - min(server.stats.arrivals)
    assert span <= (2 * PER_PROCESS - lim.burst) / lim.rate + 2.0


def test_control_per_process_limiters_overshoot(server: FakeLLMServer) -> None:
    results = _two_workers(server, "local", "unused", ("openai", "openai"))
    assert server.stats.client_429s > 0  # each process alone is within the limit
    assert sum(r["topics"].get("delayed", 0) for r in results) == server.stats.client_429s
