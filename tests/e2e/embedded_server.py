"""The embedded twin of distributed_stack.py: `qaloop serve` (every stage in one process,
SQLite) as a real OS process, its output in a log file next to the database, started and
stopped the one way every embedded e2e test uses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.e2e.distributed_stack import free_port


def serve_command(db: Path, port: int) -> list[str]:
    return [sys.executable, "-m", "qaloop", "serve", "--port", str(port), "--db", f"sqlite:///{db}"]


@dataclass
class EmbeddedServer:
    db: Path
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, **kwargs)  # type: ignore[arg-type]

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM (the graceful stop), then SIGKILL past `timeout_s`; the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def serve(db: Path, port: int | None = None, timeout_s: float = 30.0, **env: str) -> EmbeddedServer:
    """Start `qaloop serve` on `db` with `env` (QALOOP_* overrides) and wait for /healthz."""
    port = port or free_port()
    log = db.with_suffix(f".{port}.log")
    with log.open("ab") as sink:  # a file, not a pipe nobody reads (a full pipe blocks)
        proc = subprocess.Popen(
            serve_command(db, port), env={**os.environ, **env}, stdout=sink, stderr=sink
        )
    server = EmbeddedServer(db, port, proc, log)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            if httpx.get(f"{server.url}/healthz", timeout=0.5).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.1)
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    raise AssertionError(f"gateway did not start (exit {proc.returncode}): {server.output()}")
