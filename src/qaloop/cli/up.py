"""`qaloop up`: a whole local distributed stack as child processes (gateway, N workers, judge,
store, retrier), their output prefixed with the service name. Ctrl-C / SIGTERM stops them
cleanly (SIGTERM, then SIGKILL after a grace period); a child that dies is restarted.

The broker and the database must already run (`scripts/infra up`)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Any

import click

ORDER = ("store", "judge", "retrier", "worker", "gateway")
COLOURS = ("36", "33", "35", "32", "34", "31", "96", "93", "95", "92")
_print_lock = threading.Lock()


def parse_scale(values: tuple[str, ...]) -> dict[str, int]:
    scale = dict.fromkeys(ORDER, 1)
    for value in values:
        name, sep, count = value.partition("=")
        if not sep or name not in scale or not count.isdigit():
            raise click.BadParameter(
                f"expected SERVICE=N with SERVICE in {', '.join(ORDER)}", param_hint="--scale"
            )
        scale[name] = int(count)
    if scale["gateway"] > 1:
        raise click.BadParameter(
            "one gateway per port: run more with `qaloop gateway --port`", param_hint="--scale"
        )
    return scale


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: the child gets SIGTERM if `qaloop up` itself is killed (no orphans)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@dataclass
class Child:
    name: str
    service: str
    colour: str
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = 0.0
    pump: threading.Thread | None = field(default=None, repr=False)

    def start(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "qaloop", self.service],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # Ctrl-C reaches `up` only; `up` stops the children
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        self.started_at = time.monotonic()
        self.pump = threading.Thread(target=self._pump, args=(self.proc.stdout,), daemon=True)
        self.pump.start()

    def _pump(self, stream: IO[bytes] | None) -> None:
        if stream is None:
            return
        prefix = f"\x1b[{self.colour}m{self.name:<10}|\x1b[0m " if _tty() else f"{self.name:<10}| "
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with _print_lock:
                sys.stdout.write(f"{prefix}{line}\n")
                sys.stdout.flush()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)


def _tty() -> bool:
    return sys.stdout.isatty()


def say(message: str) -> None:
    with _print_lock:
        sys.stdout.write(f"{'up':<10}| {message}\n")
        sys.stdout.flush()


def run_stack(
    scale: dict[str, int],
    env: dict[str, str],
    *,
    restart: bool,
    grace_s: float,
    judge: str = "plain",
) -> int:
    children: list[Child] = []
    for service in ORDER:
        for i in range(1, scale[service] + 1):
            name = service if scale[service] == 1 else f"{service}-{i}"
            # --judge flink: the judge is the Flink job (docs/flink.md), same topics and group
            command = "flink-job" if service == "judge" and judge == "flink" else service
            children.append(Child(name, command, COLOURS[len(children) % len(COLOURS)]))
    stopping = threading.Event()

    def on_signal(signum: int, _: Any) -> None:
        if not stopping.is_set():
            say(f"{signal.Signals(signum).name}: stopping every service")
        stopping.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for child in children:
            child.start(env)
            say(f"started {child.name} (pid {child.proc.pid if child.proc else '?'})")
        while not stopping.wait(0.25):
            for child in children:
                if child.alive() or stopping.is_set():
                    continue
                code = child.proc.returncode if child.proc else None
                say(f"{child.name} exited with code {code}")
                if not restart:
                    stopping.set()
                    break
                # Back off a child that keeps dying at start (a bad flag, the broker is down).
                quick = time.monotonic() - child.started_at < 10
                child.restarts = child.restarts + 1 if quick else 0
                time.sleep(min(10.0, 0.5 * 2 ** min(child.restarts, 5)))
                child.start(env)
                say(f"restarted {child.name} (pid {child.proc.pid if child.proc else '?'})")
        return _stop_all(children, grace_s)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _stop_all(children: list[Child], grace_s: float) -> int:
    # The gateway first (no new intake), then the rest at once: each commits what it finished.
    for child in sorted(children, key=lambda c: c.service != "gateway"):
        child.signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while any(c.alive() for c in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    killed = [c for c in children if c.alive()]
    for child in killed:
        say(f"{child.name} did not stop within {grace_s:.0f} s: SIGKILL")
        child.signal(signal.SIGKILL)
    for child in children:
        if child.proc is not None:
            child.proc.wait()
        if child.pump is not None:
            child.pump.join(timeout=2)
    say("all services stopped")
    return 1 if killed else 0


@click.command("up")
@click.option(
    "--scale",
    multiple=True,
    metavar="SERVICE=N",
    help="Processes of a service, e.g. --scale worker=4 (repeatable)",
)
@click.option("--db", default=None, help="Storage URL [QALOOP_DB]")
@click.option("--kafka-bootstrap", default=None, help="Kafka bootstrap [QALOOP_KAFKA_BOOTSTRAP]")
@click.option("--topic-prefix", default=None, help="Prefix of topics and groups")
@click.option("--host", default=None, help="Gateway bind address")
@click.option("--port", type=int, default=None, help="Gateway port")
@click.option("--restart/--no-restart", default=True, help="Restart a service that dies")
@click.option("--grace-s", type=float, default=30.0, help="Time to stop before SIGKILL")
@click.option(
    "--judge",
    type=click.Choice(["plain", "flink"]),
    default="plain",
    help="Quality gate: the plain Python judge or the Flink job (needs `make flink-venv`)",
)
def command(
    scale: tuple[str, ...], restart: bool, grace_s: float, judge: str, **flags: Any
) -> None:
    """Start a whole local distributed stack (Kafka and the database must already run)."""
    from qaloop.cli.common import build_settings

    build_settings(**flags, bus="kafka")  # validate the configuration before starting anything
    scales = parse_scale(scale)
    if judge == "flink" and scales["judge"] > 1:
        raise click.BadParameter("one Flink job (it scales by parallelism)", param_hint="--scale")
    env = dict(os.environ)
    env["QALOOP_BUS"] = "kafka"
    for key, value in flags.items():
        if value is not None:
            env[f"QALOOP_{key.upper()}"] = str(value)
    sys.exit(run_stack(scales, env, restart=restart, grace_s=grace_s, judge=judge))
