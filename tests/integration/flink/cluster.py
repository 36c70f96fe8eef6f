"""A real Flink session cluster for the tests: `scripts/infra up flink` (a JobManager and two
TaskManagers), jobs submitted with the `flink run` lines of docs/flink.md, and the REST API
to see what the cluster did (restores, which TaskManager runs which subtask)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
INFRA = ROOT / "scripts" / "infra"
DOCS = ROOT / "docs" / "flink.md"


def infra(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(INFRA), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def documented_submission() -> str:
    """The `flink run` lines of docs/flink.md's local-cluster block, joined (continuations)."""
    text = DOCS.read_text(encoding="utf-8")
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            if line.startswith("flink run ") and "qaloop.flink.job" in line:
                return " ".join(line.split())
    raise AssertionError("docs/flink.md has no `flink run ... qaloop.flink.job` line")


@dataclass
class FlinkCluster:
    """The cluster `scripts/infra up flink` runs; `started_here` says whether we stop it."""

    env: dict[str, str]
    started_here: bool
    jobs: list[str] = field(default_factory=list)

    @classmethod
    def ensure(cls) -> FlinkCluster:
        started = infra("status", "flink").returncode != 0
        if started:
            up = infra("up", "flink")
            if up.returncode != 0:
                raise RuntimeError(f"scripts/infra up flink failed:\n{up.stderr[-3000:]}")
        exports = infra("env", "flink").stdout
        env = dict(os.environ)
        for line in exports.splitlines():
            name, _, value = line.removeprefix("export ").partition("=")
            env[name] = value.replace("$PATH", os.environ.get("PATH", ""))
        return cls(env, started)

    @property
    def rest(self) -> str:
        return self.env["QALOOP_FLINK_REST"]

    @property
    def checkpoints(self) -> Path:
        return Path(self.env["QALOOP_FLINK_CHECKPOINTS"])

    def close(self) -> None:
        for job_id in self.jobs:
            self.cancel(job_id)
        if self.started_here:
            infra("down", "flink")

    # -- REST

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.rest}{path}", timeout=10) as response:
            return json.load(response)

    def job(self, job_id: str) -> dict[str, Any]:
        return dict(self.get(f"/jobs/{job_id}"))

    def restored(self, job_id: str) -> dict[str, Any] | None:
        """The checkpoint or savepoint the job's latest (re)start restored, if any."""
        latest = self.get(f"/jobs/{job_id}/checkpoints").get("latest") or {}
        restored = latest.get("restored")
        return None if restored is None else dict(restored)

    def subtask_hosts(self, job_id: str) -> dict[str, int]:
        """TaskManager resource id -> number of running subtasks of the job on it."""
        hosts: dict[str, int] = {}
        for vertex in self.job(job_id)["vertices"]:
            for sub in self.get(f"/jobs/{job_id}/vertices/{vertex['id']}")["subtasks"]:
                if sub["status"] == "RUNNING":
                    tm = sub["taskmanager-id"]
                    hosts[tm] = hosts.get(tm, 0) + 1
        return hosts

    def wait_running(self, job_id: str, timeout_s: float = 180) -> None:
        """Until the job and every one of its subtasks run."""
        deadline = time.monotonic() + timeout_s
        state = "?"
        while time.monotonic() < deadline:
            job = self.job(job_id)
            state = job["state"]
            if state in ("FAILED", "CANCELED", "FINISHED"):
                raise AssertionError(f"job {job_id} is {state}")
            vertices = job["vertices"]
            if state == "RUNNING" and all(
                v["tasks"].get("RUNNING", 0) == v["parallelism"] for v in vertices
            ):
                return
            time.sleep(0.5)
        raise AssertionError(f"job {job_id} not running after {timeout_s} s (state {state})")

    def cancel(self, job_id: str, wait_s: float = 60) -> None:
        """Cancel a job that still runs and wait until it has released its slots."""
        request = urllib.request.Request(f"{self.rest}/jobs/{job_id}?mode=cancel", method="PATCH")
        with contextlib.suppress(urllib.error.URLError, OSError):
            urllib.request.urlopen(request, timeout=10).close()
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            with contextlib.suppress(urllib.error.URLError, OSError, KeyError):
                if self.job(job_id)["state"] in ("CANCELED", "FINISHED", "FAILED"):
                    return
            time.sleep(0.5)

    def forget(self, prefix: str, bootstrap: str) -> None:
        """Cancel the prefix's jobs, delete its topics and checkpoints (a test's leftovers)."""
        from confluent_kafka.admin import AdminClient

        from qaloop.bus.base import Topics

        for job_id in list(self.jobs):
            if f"[{prefix}]" in self.job(job_id).get("name", ""):
                self.cancel(job_id)
                self.jobs.remove(job_id)
        admin = AdminClient({"bootstrap.servers": bootstrap})
        names = [*Topics.with_prefix(prefix).all(), f"{prefix}.metrics"]
        existing = set(admin.list_topics(timeout=10).topics)
        doomed = [n for n in names if n in existing]
        if doomed:
            for future in admin.delete_topics(doomed, operation_timeout=30).values():
                with contextlib.suppress(Exception):
                    future.result()
        shutil.rmtree(self.checkpoints / f"{prefix}.judge", ignore_errors=True)

    # -- the CLI

    def submit(
        self,
        prefix: str,
        *extra: str,
        log: Path,
        options: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> str:
        """The documented `flink run` (plus test flags: job flags after it, `options` of
        `flink run` itself before `-pym`, `env` for the client); returns the job id."""
        documented = documented_submission()
        if options:
            documented = documented.replace("flink run ", f"flink run {' '.join(options)} ", 1)
        command = f"{documented} {' '.join(extra)}"
        env = {**self.env, **(env or {}), "QALOOP_TOPIC_PREFIX": prefix}
        with log.open("a") as out:
            out.write(f"$ {command}\n")
            out.flush()
            done = subprocess.run(
                ["bash", "-c", command],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=300,
                check=False,
            )
        text = log.read_text(errors="replace")
        match = re.findall(r"Job has been submitted with JobID ([0-9a-f]{32})", text)
        if done.returncode != 0 or not match:
            raise AssertionError(f"flink run failed ({done.returncode}):\n{text[-4000:]}")
        self.jobs.append(match[-1])
        return match[-1]

    def stop_with_savepoint(self, job_id: str, directory: Path) -> str:
        done = subprocess.run(
            ["flink", "stop", "--savepointPath", directory.as_uri(), job_id],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        match = re.search(r"Savepoint completed\. Path: (\S+)", done.stdout)
        assert done.returncode == 0 and match, f"flink stop failed:\n{done.stdout}\n{done.stderr}"
        return match.group(1)

    # -- faults

    def taskmanager_pids(self) -> dict[str, int]:
        """`taskmanager-N` -> pid, from `scripts/infra status flink`."""
        line = infra("status", "flink").stdout
        return {role: int(pid) for role, pid in re.findall(r"(taskmanager-\d+):(\d+)", line)}

    def kill_taskmanager(self, role: str) -> int:
        pid = self.taskmanager_pids()[role]
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
        return pid

    def heal(self) -> None:
        """Restart what is missing (the killed TaskManager), as a supervisor would."""
        up = infra("up", "flink")
        assert up.returncode == 0, up.stderr[-3000:]


def _alive(pid: int) -> bool:
    """Running and not a zombie (a killed daemon is reaped by whoever adopted it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
