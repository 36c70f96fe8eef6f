"""What the distributed benchmarks (and the distributed e2e tests) share: a private
PostgreSQL schema, a free port, the environment and lifecycle of stage processes, consumer
groups that have settled, CPU accounting per process, the machine's load, and which gate the
judge ran with. One module, so the benchmarks measure the same way.

Nothing here imports a server library at module level: the e2e tests import it too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------- servers


def drop_topics(bootstrap: str, topics: Any) -> None:
    """Delete a run's topics (a `qaloop.bus.base.Topics`): thousands of leftover partitions
    cost the broker CPU in later runs, three times over on the replicated cluster."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_topics(list(topics.all()), operation_timeout=30).values():
        try:
            future.result()
        except KafkaException as exc:  # never created (a run that failed early): nothing to drop
            if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise


@contextmanager
def pg_schema(dsn: str, tag: str = "bench") -> Iterator[tuple[str, str]]:
    """A fresh schema, dropped afterwards; yields (its name, a DSN whose search_path is it)."""
    import psycopg

    schema = f"{tag}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in dsn else "?"
    try:
        yield schema, f"{dsn}{sep}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------- stage processes


def child_env(base: Mapping[str, str] | None = None, **settings: Any) -> dict[str, str]:
    """The environment of a qaloop child process: this one's without any QALOOP_* variable
    (nothing leaks in from the caller's shell), plus `settings` as QALOOP_<NAME>."""
    source = os.environ if base is None else base
    env = {k: v for k, v in source.items() if not k.startswith("QALOOP_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update({f"QALOOP_{k.upper()}": str(v) for k, v in settings.items()})
    return env


def stage_env(
    db: str, bootstrap: str, prefix: str, partitions: int, **settings: Any
) -> dict[str, str]:
    """A stage process's environment on Kafka and PostgreSQL (log level WARNING unless
    `settings` says otherwise)."""
    fields: dict[str, Any] = {"log_level": "WARNING"} | settings
    return child_env(
        bus="kafka",
        db=db,
        kafka_bootstrap=bootstrap,
        topic_prefix=prefix,
        kafka_partitions=partitions,
        **fields,
    )


def start_stages(
    scale: Mapping[str, int], env: Mapping[str, str], logs: Path, prefix: str
) -> tuple[list[subprocess.Popen[bytes]], dict[str, int]]:
    """`python -m qaloop <stage>` processes, `scale[stage]` of each; returns them and a
    name -> pid map (`worker`, or `worker-1`, `worker-2` when there are several)."""
    procs: list[subprocess.Popen[bytes]] = []
    names: dict[str, int] = {}
    for service, count in scale.items():
        for i in range(count):
            name = service if count == 1 else f"{service}-{i + 1}"
            with (logs / f"{prefix}-{service}-{i}.log").open("wb") as log:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "qaloop", service],
                        # libpq names its sessions after the stage: pg_backend_cpu finds them
                        env={**env, "PGAPPNAME": f"{prefix}-{name}"},
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                    )
                )
            names[name] = procs[-1].pid
    return procs, names


def pg_backend_cpu(dsn: str, prefix: str) -> dict[str, float]:
    """CPU seconds so far of the PostgreSQL sessions each stage of this run opened (named
    `<prefix>-<stage>` by start_stages), as "postgresql: <stage>": unlike the "postgresql"
    total, it leaves out other users of a shared server (and the server's background
    processes: WAL writer, checkpointer)."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT application_name, pid FROM pg_stat_activity WHERE application_name LIKE %s",
            (f"{prefix}-%",),
        ).fetchall()
    out: dict[str, float] = {}
    for app, pid in rows:
        key = f"postgresql: {str(app)[len(prefix) + 1 :]}"
        out[key] = out.get(key, 0.0) + _proc_cpu_s(int(pid))
    return out


def stop(procs: list[subprocess.Popen[bytes]], timeout_s: float = 60) -> list[int | None]:
    """SIGTERM every process, then wait (SIGKILL after `timeout_s`); their exit codes."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    codes: list[int | None] = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=timeout_s))
        except subprocess.TimeoutExpired:
            p.kill()
            codes.append(p.wait())
    return codes


def wait_groups_stable(bootstrap: str, groups: dict[str, int], timeout_s: float = 60) -> None:
    """Until every consumer group is stable with at least its number of members, and has
    partitions assigned."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout_s
    seen: dict[str, str] = {}
    while time.monotonic() < deadline:
        futures = admin.describe_consumer_groups(list(groups), request_timeout=5)
        for group, future in futures.items():
            try:
                desc = future.result()
            except Exception as exc:
                seen[group] = f"not described ({exc})"
                continue
            assigned = sum(len(m.assignment.topic_partitions) for m in desc.members)
            if (
                str(desc.state).endswith("STABLE")
                and len(desc.members) >= groups[group]
                and assigned
            ):
                seen[group] = "ready"
            else:
                seen[group] = (
                    f"{desc.state}, {len(desc.members)}/{groups[group]} members, "
                    f"{assigned} partitions"
                )
        if all(seen.get(g) == "ready" for g in groups):
            return
        time.sleep(0.2)
    # a fresh broker creates __consumer_offsets on the first join: a stage process that died
    # shows as 0 members, a slow coordinator as another state
    waiting = "; ".join(
        f"{g}: {seen.get(g, 'no answer')}" for g in sorted(groups) if seen.get(g) != "ready"
    )
    raise RuntimeError(f"consumer groups not stable after {timeout_s} s: {waiting}")


# ---------------------------------------------------------------------------- builds side by side


def run_build(src: str | Path, argv: list[str], *, keep_env: tuple[str, ...] = ()) -> Any:
    """Run `python *argv` in a fresh process on the build whose sources are `src` (its
    PYTHONPATH, and this directory for benchkit), without the caller's QALOOP_* settings but
    those starting with one of `keep_env`; its last line on stdout is its JSON result. The
    CPU benchmarks alternate two builds this way, so neither inherits the other's caches."""
    import orjson

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), str(Path(__file__).parent)])}
    env = {k: v for k, v in env.items() if not k.startswith("QALOOP_") or k.startswith(keep_env)}
    done = subprocess.run([sys.executable, *argv], env=env, capture_output=True, check=True)
    return orjson.loads(done.stdout.splitlines()[-1])


# ---------------------------------------------------------------------------- CPU accounting


def _proc_cpu_s(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_snapshot(children: dict[str, int]) -> dict[str, float]:
    """CPU seconds used so far: each stage process, the Kafka broker(s), PostgreSQL, this
    process, and the whole machine (for where the time goes)."""
    snap = {name: _proc_cpu_s(pid) for name, pid in children.items()}
    snap["kafka broker"] = 0.0
    snap["postgresql"] = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmd = fh.read()
        except OSError:
            continue
        if b"kafka.Kafka" in cmd:
            snap["kafka broker"] += _proc_cpu_s(int(entry))
        elif cmd.startswith(b"postgres"):
            snap["postgresql"] += _proc_cpu_s(int(entry))
    snap["bench (loader, monitor)"] = _proc_cpu_s(os.getpid())
    with open("/proc/stat") as fh:
        total = [int(v) for v in fh.readline().split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    snap["machine busy"] = (sum(total) - total[3] - total[4]) / tick
    return snap


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    keys = dict.fromkeys([*before, *after])  # a session opened in between counts from 0
    return {k: round(after.get(k, 0.0) - before.get(k, 0.0), 2) for k in keys}


def per_question_ms(cpu_s: dict[str, float], questions: int) -> dict[str, float]:
    return {k: round(v * 1000 / questions, 3) for k, v in cpu_s.items()}


# ---------------------------------------------------------------------------- the machine


def machine_state() -> dict[str, Any]:
    """The load average and the CPU pressure (PSI: the share of time some runnable task
    waited for a CPU, over 10 s and 60 s) right now: a number measured on a shared machine
    means little without them."""
    state: dict[str, Any] = {"loadavg": [round(v, 2) for v in os.getloadavg()]}
    with contextlib.suppress(OSError, ValueError, IndexError):
        some = Path("/proc/pressure/cpu").read_text().splitlines()[0].split()[1:]
        fields = dict(item.split("=") for item in some)
        state["cpu_pressure_some_pct"] = {
            "avg10": float(fields["avg10"]),
            "avg60": float(fields["avg60"]),
        }
    return state


def machine_line(state: Mapping[str, Any]) -> str:
    load = " ".join(f"{v:.2f}" for v in state["loadavg"])
    psi = state.get("cpu_pressure_some_pct")
    pressure = ""
    if psi:
        pressure = f", CPU pressure {psi['avg10']:.0f} % (10 s) {psi['avg60']:.0f} % (60 s)"
    return f"load average {load}{pressure}"


# ---------------------------------------------------------------------------- the gate


def gate_in(env: Mapping[str, str]) -> dict[str, Any]:
    """The judge's gate as the stage processes started with `env` build it (the same
    Settings, read from the same QALOOP_* variables): its scorer, thresholds and checks."""
    from qaloop.gate_config import gate_spec_from_settings
    from qaloop.settings import Settings

    saved = {k: v for k, v in os.environ.items() if k.startswith("QALOOP_")}
    try:
        for k in saved:
            del os.environ[k]
        os.environ.update({k: v for k, v in env.items() if k.startswith("QALOOP_")})
        spec = gate_spec_from_settings(Settings())
    finally:
        for k in [k for k in os.environ if k.startswith("QALOOP_")]:
            del os.environ[k]
        os.environ.update(saved)
    described = dataclasses.asdict(spec)
    described.pop("relevance", None)  # the calibrated coefficients: not for a summary line
    return described


def gate_line(gate: Mapping[str, Any]) -> str:
    scorer = gate["scorer"]
    model = ""
    if scorer == "embedding":
        model = " (all-MiniLM-L6-v2 over question, answer and reference)"
    return (
        f"gate: {scorer}{model}, pass >= {gate['pass_threshold']}, "
        f"unsure >= {gate['unsure_threshold']}"
    )
