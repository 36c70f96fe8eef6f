"""The Flink judge as a real process (`qaloop flink-job`, re-executed in .venv-flink) over the
real broker, a feeder and a collector of every output topic (read_committed)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from qaloop.bus.base import Topics
from qaloop.core import codec
from qaloop.core.model import Envelope, QuestionState

ROOT = Path(__file__).resolve().parents[3]
FLINK_PYTHON = ROOT / ".venv-flink" / "bin" / "python"
BOOTSTRAP = os.environ.get("QALOOP_KAFKA_BOOTSTRAP")
REFERENCE = (
    "The cat sat on the mat by the door."  # a finished sentence: the gate fails cut-off ones
)


def require_flink() -> str:
    if not BOOTSTRAP:
        pytest.skip(
            "QALOOP_KAFKA_BOOTSTRAP is not set: run "
            '`scripts/infra up && eval "$(scripts/infra env)"`'
        )
    pytest.importorskip("confluent_kafka", reason="the kafka extra is not installed")
    if not FLINK_PYTHON.is_file():
        pytest.skip("no .venv-flink: run `make flink-venv`")
    from qaloop.flink.core import find_connector_jar

    try:
        find_connector_jar()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    return BOOTSTRAP


def envelope(qid: str, attempt: int, good: bool, reference: str | None = REFERENCE) -> Envelope:
    return Envelope(
        qid,
        f"Where did the cat sit? ({qid})",
        reference,
        f"trace-{qid}",
        time.time(),
        attempt=attempt,
        answer=REFERENCE if good else "Completely unrelated words about the weather in spring.",
        state=QuestionState.SCORING,
    )


def new_id() -> str:
    return uuid.uuid4().hex


@dataclass
class Record:
    topic: str
    key: str | None
    value: bytes
    headers: dict[str, str]
    timestamp_ms: int

    def envelope(self) -> Envelope:
        return codec.decode(self.value)


@dataclass
class Collector:
    """Every record of the output topics, consumed read_committed in a background thread."""

    bootstrap: str
    topics: list[str]
    records: list[Record] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        from confluent_kafka import Consumer

        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"collector-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
        consumer.subscribe(self.topics)
        self._thread = threading.Thread(target=self._run, args=(consumer,), daemon=True)
        self._thread.start()

    def _run(self, consumer: Any) -> None:
        try:
            while not self._stop.is_set():
                for m in consumer.consume(500, 0.2):
                    if m.error():
                        continue
                    headers = {
                        k: (v or b"").decode("utf-8", "replace") for k, v in (m.headers() or [])
                    }
                    key = m.key()
                    record = Record(
                        m.topic(),
                        None if key is None else key.decode(),
                        m.value() or b"",
                        headers,
                        m.timestamp()[1],
                    )
                    with self.lock:
                        self.records.append(record)
        finally:
            consumer.close()

    def terminate(self, timeout_s: float = 60) -> int:
        """SIGTERM to the driver only, as `qaloop up` does: a clean stop with a savepoint."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout_s)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _group_alive(self.proc.pid):
            time.sleep(0.1)
        return code

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def snapshot(self) -> list[Record]:
        with self.lock:
            return list(self.records)

    def for_keys(self, keys: set[str]) -> list[Record]:
        return [r for r in self.snapshot() if r.key in keys]

    def wait_for(
        self, predicate: Callable[[list[Record]], bool], timeout_s: float, what: str
    ) -> list[Record]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            records = self.snapshot()
            if predicate(records):
                return records
            time.sleep(0.1)
        raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")

    def wait_keys(self, keys: Iterable[str], timeout_s: float = 60.0) -> list[Record]:
        wanted = set(keys)
        self.wait_for(lambda rs: wanted <= {r.key for r in rs}, timeout_s, f"{len(wanted)} outputs")
        return self.for_keys(wanted)


@dataclass
class FlinkJob:
    """One `qaloop flink-job` process group (the Python driver and its mini-cluster JVM)."""

    bootstrap: str
    workdir: Path
    prefix: str = field(default_factory=lambda: f"fl{uuid.uuid4().hex[:10]}")
    args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    fed: Counter[int] = field(default_factory=Counter)  # valid envelopes fed, per attempt
    _producer: Any = None

    @property
    def topics(self) -> Topics:
        return Topics.with_prefix(self.prefix)

    @property
    def metrics_topic(self) -> str:
        return f"{self.prefix}.metrics"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"flink-job-{self.starts}.log"

    def start(self) -> None:
        self.starts += 1
        env = {k: v for k, v in os.environ.items() if not k.startswith("QALOOP_")}
        env["PYTHONUNBUFFERED"] = "1"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "qaloop",
                    "flink-job",
                    "--kafka-bootstrap",
                    self.bootstrap,
                    "--topic-prefix",
                    self.prefix,
                    "--flink-state-dir",
                    str(self.workdir / "state"),
                    *self.args,
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own group: SIGKILL takes the JVM down with it
            )

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """SIGKILL the whole job (driver and mini-cluster JVM): a crash, no clean shutdown."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        self.proc.wait(60)
        # the JVM is in the same session: wait until it is gone too
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _group_alive(self.proc.pid):
            time.sleep(0.1)

    def terminate(self, timeout_s: float = 60) -> int:
        """SIGTERM to the driver only, as `qaloop up` does: a clean stop with a savepoint."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout_s)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _group_alive(self.proc.pid):
            time.sleep(0.1)
        return code

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill(signal.SIGTERM)
        if self.proc is not None and _group_alive(self.proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        if self._producer is not None:
            self._producer.flush(10)

    def assert_alive(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, (
            f"flink job exited with {self.proc.returncode if self.proc else None}\n{self.tail()}"
        )

    def tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    # -- feeding

    def producer(self) -> Any:
        if self._producer is None:
            from confluent_kafka import Producer

            self._producer = Producer(
                {"bootstrap.servers": self.bootstrap, "enable.idempotence": True, "linger.ms": 5}
            )
        return self._producer

    def feed(self, envelopes: Iterable[Envelope]) -> list[str]:
        producer = self.producer()
        keys = []
        for e in envelopes:
            producer.produce(
                self.topics.generated,
                key=e.question_id,
                value=codec.encode(e),
                headers={"qaloop-id": e.question_id, "qaloop-attempt": str(e.attempt)},
            )
            self.fed[e.attempt] += 1
            keys.append(e.question_id)
            producer.poll(0)
        producer.flush(30)
        return keys

    def feed_raw(self, key: str, value: bytes) -> None:
        producer = self.producer()
        producer.produce(self.topics.generated, key=key, value=value)
        producer.flush(30)

    def wait_topics(self, timeout_s: float = 90.0) -> None:
        """Until the job has created its topics (it does so before starting Flink)."""
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        wanted = {*self.topics.all(), self.metrics_topic}
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.assert_alive()
            if wanted <= set(admin.list_topics(timeout=10).topics):
                return
            time.sleep(0.2)
        raise AssertionError(f"topics not created after {timeout_s} s\n{self.tail()}")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
