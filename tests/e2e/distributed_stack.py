"""Helpers for the distributed end-to-end tests: the services as real OS processes
(`python -m qaloop <service>`), a private PostgreSQL schema, traffic over HTTP, and the
checks every fault test ends with."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from bench import benchkit
from bench.benchkit import free_port

__all__ = ["free_port"]  # re-exported: the e2e tests take it from here

BOOTSTRAP = os.environ.get("QALOOP_KAFKA_BOOTSTRAP")
PG_DSN = os.environ.get("QALOOP_PG_DSN")
ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "scripts" / "infra"
RESTART_EXIT = 75  # a stage that stopped itself for a restart (qaloop.distributed)


def require_servers() -> tuple[str, str]:
    if not BOOTSTRAP or not PG_DSN:
        pytest.skip(
            "QALOOP_KAFKA_BOOTSTRAP and QALOOP_PG_DSN are not set: run "
            '`scripts/infra up && eval "$(scripts/infra env)"`'
        )
    pytest.importorskip("confluent_kafka", reason="the kafka extra is not installed")
    pytest.importorskip("psycopg", reason="the postgres extra is not installed")
    return BOOTSTRAP, PG_DSN


@contextlib.contextmanager
def pg_schema(dsn: str) -> Iterator[tuple[str, str]]:
    """A fresh schema; yields (its name, a DSN whose search_path is that schema)."""
    with benchkit.pg_schema(dsn, "qaloop_e2e") as schema:
        yield schema


def infra(env: dict[str, str], *args: str, timeout_s: float = 240) -> str:
    """`scripts/infra ARGS` with `env` (a private QALOOP_STATE and ports); fails the test with
    its stderr if it fails."""
    done = subprocess.run(
        ["bash", str(INFRA), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    assert done.returncode == 0, f"scripts/infra {' '.join(args)}:\n{done.stderr[-3000:]}"
    return done.stdout


def require_java() -> None:
    if shutil.which("java") is None:
        pytest.skip("java is not installed (the Kafka brokers need Java 17+)")


def sql(dsn: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        return list(conn.execute(query, args or None).fetchall())


@dataclass
class Stack:
    """The distributed services as child processes, logs in `logs/<name>.log`."""

    logs: Path
    env: dict[str, str]
    port: int
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    services: dict[str, str] = field(default_factory=dict)
    revived: list[str] = field(default_factory=list)

    @classmethod
    def create(cls, tmp: Path, bootstrap: str, db: str, **settings: Any) -> Stack:
        port = free_port()
        defaults: dict[str, Any] = {
            "bus": "kafka",
            "db": db,
            "kafka_bootstrap": bootstrap,
            "topic_prefix": f"e2e{uuid.uuid4().hex[:10]}",
            "port": port,
            "kafka_session_timeout_ms": 6000,
            "log_level": "INFO",
        }
        env = benchkit.child_env(**{**defaults, **settings})
        logs = tmp / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        return cls(logs, env, port)

    @property
    def prefix(self) -> str:
        return self.env["QALOOP_TOPIC_PREFIX"]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, service: str, name: str | None = None, args: Sequence[str] = ()) -> None:
        name = name or service
        assert name not in self.procs or self.procs[name].poll() is not None, name
        log = (self.logs / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "qaloop", service, *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        self.services[name] = service

    def start_all(self, workers: int = 1) -> None:
        for service in ("store", "judge", "retrier"):
            self.start(service)
        for i in range(1, workers + 1):
            self.start("worker", f"worker-{i}")
        self.start("gateway")
        self.wait_http()

    def wait_http(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.assert_alive()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return
            time.sleep(0.1)
        raise AssertionError(f"gateway not up after {timeout_s} s\n{self.tails()}")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[name]
        proc.send_signal(sig)
        proc.wait(timeout=60)

    def restart(self, name: str) -> None:
        self.start(self.services[name], name)

    def revive(self) -> None:
        """Do what a supervisor does: restart a service that exited asking for it (75)."""
        for name, proc in list(self.procs.items()):
            if proc.poll() == RESTART_EXIT:
                self.revived.append(name)
                self.restart(name)

    def dump_stacks(self) -> None:
        """Every thread's stack of every stage into its log (faulthandler on SIGUSR1)."""
        for name, proc in self.procs.items():
            if proc.poll() is None and self.services[name] != "gateway":
                proc.send_signal(signal.SIGUSR1)
        time.sleep(1.0)

    def assert_alive(self) -> None:
        self.revive()
        dead = {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}
        assert not dead, f"services died: {dead}\n{self.tails()}"

    def stop_all(self, timeout_s: float = 30.0) -> dict[str, int | None]:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        for name, proc in self.procs.items():
            try:
                codes[name] = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                codes[name] = None
        return codes

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def tails(self, lines: int = 25) -> str:
        out = []
        for path in sorted(self.logs.glob("*.log")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path.name}\n" + "\n".join(tail))
        return "\n".join(out)


@dataclass
class Traffic:
    """Unique questions sent over HTTP at a steady rate; remembers what was accepted."""

    url: str
    accepted: set[str] = field(default_factory=set)
    other: list[tuple[int, str]] = field(default_factory=list)
    sent: int = 0

    async def send(self, questions: list[tuple[str, str | None]], rate_per_s: float) -> None:
        limits = httpx.Limits(max_connections=32)
        async with httpx.AsyncClient(base_url=self.url, timeout=60.0, limits=limits) as client:
            sem = asyncio.Semaphore(32)
            tasks = []
            started = time.monotonic()
            for i, (question, reference) in enumerate(questions):
                delay = started + i / rate_per_s - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await sem.acquire()
                tasks.append(asyncio.create_task(self._one(client, sem, question, reference)))
            await asyncio.gather(*tasks)

    async def _one(
        self, client: httpx.AsyncClient, sem: asyncio.Semaphore, question: str, ref: str | None
    ) -> None:
        try:
            for attempt in range(5):
                try:
                    r = await client.post(
                        "/v1/questions", json={"question": question, "reference_answer": ref}
                    )
                except httpx.TransportError as exc:
                    if attempt == 4:
                        self.other.append((0, repr(exc)))
                    await asyncio.sleep(0.5)
                    continue
                self.sent += 1
                body = r.json()
                if r.status_code == 202 and not body.get("joined"):
                    self.accepted.add(body["id"])
                elif r.status_code >= 500:  # retried; the question may already be stored
                    await asyncio.sleep(0.5)
                    continue
                else:
                    self.other.append((r.status_code, r.text[:200]))
                return
        finally:
            sem.release()


def questions(n: int, tag: str) -> list[tuple[str, str | None]]:
    from qaloop.dataset import load_sample

    sample = load_sample()
    return [
        (
            f"{sample[i % len(sample)].question} [{tag} {i}]",
            sample[i % len(sample)].reference_answer,
        )
        for i in range(n)
    ]


def wait_final(dsn: str, expected: int, timeout_s: float, stack: Stack) -> dict[str, int]:
    """Wait until `expected` questions are stored and every stored one is final."""
    deadline = time.monotonic() + timeout_s
    counts: dict[str, int] = {}
    while time.monotonic() < deadline:
        stack.revive()
        counts = {
            s: int(n) for s, n in sql(dsn, "SELECT state, count(*) FROM questions GROUP BY 1")
        }
        final = counts.get("validated", 0) + counts.get("failed", 0)
        if sum(counts.values()) >= expected and final == sum(counts.values()):
            return counts
        time.sleep(0.5)
    stack.dump_stacks()
    raise AssertionError(f"not all final after {timeout_s} s: {counts}\n{stack.tails()}")


def check_invariants(dsn: str, accepted: set[str]) -> dict[str, int]:
    """Every accepted question is stored once and final; histories are whole."""
    rows = sql(dsn, "SELECT question_id, state FROM questions")
    ids = [r[0] for r in rows]
    assert len(ids) == len(set(ids)), "duplicate question rows"
    states = dict(rows)
    missing = accepted - set(states)
    assert not missing, f"{len(missing)} accepted questions lost, e.g. {sorted(missing)[:3]}"
    unfinished = {q: s for q, s in states.items() if s not in ("validated", "failed")}
    assert not unfinished, f"unfinished: {list(unfinished.items())[:5]}"
    gaps = sql(
        dsn,
        "SELECT question_id FROM events GROUP BY question_id HAVING max(seq) + 1 <> count(*)",
    )
    assert not gaps, f"histories with gaps: {gaps[:3]}"
    finals = sql(
        dsn,
        "SELECT count(*) FROM questions q WHERE NOT EXISTS (SELECT 1 FROM events e "
        "WHERE e.question_id = q.question_id AND e.kind IN ('scored', 'gave_up'))",
    )
    assert finals[0][0] == 0, "final questions without a deciding event"
    counts: dict[str, int] = {}
    for state in states.values():
        counts[state] = counts.get(state, 0) + 1
    return counts
