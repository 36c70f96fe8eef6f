"""The Flink judge on a real Flink session cluster (`scripts/infra up flink`: a JobManager and
two TaskManagers), submitted with the `flink run` lines of docs/flink.md, parallelism 2, over
the real broker. Faults: a TaskManager SIGKILLed mid-stream; a stop with a savepoint and a new
build of the job resumed from it. Either way every answer has exactly one committed output."""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qaloop.bus.base import Topics
from qaloop.core import codec
from qaloop.core.model import Envelope
from tests.integration.flink.cluster import ROOT, FlinkCluster
from tests.integration.flink.harness import (
    Collector,
    Record,
    envelope,
    new_id,
    require_flink,
)

pytestmark = [pytest.mark.integration, pytest.mark.cluster, pytest.mark.slow]

# The lexical scorer, as in test_flink_job.py: the calibrated default gate (embedding scorer)
# needs the embeddings extra, which `make flink-venv` does not install into .venv-flink.
JUDGE = ("--scorer", "jaccard", "--threshold", "0.5")
CHECKPOINT_MS = "1000"  # short, so a restore replays little and the test stays short


@pytest.fixture(scope="module")
def cluster() -> Iterator[FlinkCluster]:
    require_flink()
    flink = FlinkCluster.ensure()
    try:
        yield flink
    finally:
        flink.close()  # cancels the jobs it submitted; stops the cluster if it started it


class Stream:
    """A topic prefix of our own: a feeder of `<prefix>.generated` and a read_committed
    collector of the three output topics."""

    def __init__(self, bootstrap: str) -> None:
        from confluent_kafka import Producer

        self.bootstrap = bootstrap
        self.prefix = f"flc{uuid.uuid4().hex[:10]}"
        self.topics = Topics.with_prefix(self.prefix)
        self.outputs = [self.topics.validated, self.topics.questions, self.topics.dead_letter]
        self.producer = Producer(
            {"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5}
        )
        self.collector: Collector | None = None
        self.fed: dict[str, Envelope] = {}

    def collect(self) -> Collector:
        """After the job created the topics (a consumer subscribed earlier would not see them
        for minutes)."""
        self.collector = Collector(self.bootstrap, self.outputs)
        self.collector.start()
        return self.collector

    def feed(self, envelopes: list[Envelope], per_second: float = 0) -> None:
        for i, e in enumerate(envelopes):
            self.producer.produce(
                self.topics.generated,
                key=e.question_id,
                value=codec.encode(e),
                headers={"qaloop-id": e.question_id, "qaloop-attempt": str(e.attempt)},
            )
            self.fed[e.question_id] = e
            self.producer.poll(0)
            if per_second and i % 50 == 49:
                self.producer.flush(30)
                time.sleep(50 / per_second)
        self.producer.flush(30)

    def outputs_of(self, keys: set[str], timeout_s: float) -> dict[str, list[Record]]:
        assert self.collector is not None
        self.collector.wait_keys(keys, timeout_s=timeout_s)
        time.sleep(3)  # a duplicate would arrive with a later checkpoint: leave it the time
        found: dict[str, list[Record]] = {}
        for r in self.collector.snapshot():
            if r.key is not None:
                found.setdefault(r.key, []).append(r)
        return found

    def close(self) -> None:
        if self.collector is not None:
            self.collector.stop()
        self.producer.flush(10)


def answers(n: int) -> list[Envelope]:
    """Two good answers in three (validated); the rest regenerate (attempt 1 -> 2)."""
    return [envelope(new_id(), 1, good=i % 3 != 2) for i in range(n)]


def assert_exactly_once(stream: Stream, keys: set[str], found: dict[str, list[Record]]) -> None:
    counts = Counter({k: len(found.get(k, [])) for k in keys})
    missing = sorted(k for k in keys if counts[k] == 0)
    doubled = {k: c for k, c in counts.items() if c > 1}
    assert not missing, f"{len(missing)} answers never judged, e.g. {missing[:3]}"
    assert not doubled, f"{len(doubled)} answers judged more than once: {list(doubled)[:3]}"
    # a regeneration is sent back once, with the next attempt (which answers the gate sends
    # back is its business: tests/unit/flink and the mini-cluster tests check the decisions)
    regenerated = [k for k in keys if found[k][0].topic == stream.topics.questions]
    for k in regenerated:
        assert codec.decode(found[k][0].value).attempt == 2


def _stream(cluster: FlinkCluster) -> Stream:
    return Stream(cluster.env["QALOOP_KAFKA_BOOTSTRAP"])


def test_a_sigkilled_taskmanager_recovers_from_the_checkpoint_exactly_once(
    cluster: FlinkCluster, tmp_path: Path
) -> None:
    stream = _stream(cluster)
    killed: str | None = None
    try:
        job_id = cluster.submit(
            stream.prefix,
            *JUDGE,
            "--flink-checkpoint-interval-ms",
            CHECKPOINT_MS,
            log=tmp_path / "submit.log",
        )
        cluster.wait_running(job_id)
        hosts = cluster.subtask_hosts(job_id)
        assert len(hosts) == 2, f"parallelism 2 over two TaskManagers, got {hosts}"
        collector = stream.collect()

        batch = answers(2400)
        feeder = threading.Thread(target=stream.feed, args=(batch, 300.0), daemon=True)
        feeder.start()
        collector.wait_for(lambda rs: len(rs) >= 300, 180, "300 outputs before the kill")
        killed = "taskmanager-1"
        pid = cluster.kill_taskmanager(killed)
        outputs_at_kill = len(collector.snapshot())
        print(f"SIGKILLed {killed} (pid {pid}) after {outputs_at_kill} of {len(batch)} outputs")
        feeder.join(120)
        assert not feeder.is_alive()

        found = stream.outputs_of(set(stream.fed), timeout_s=300)
        assert_exactly_once(stream, set(stream.fed), found)
        assert outputs_at_kill < len(batch), "the kill came after the stream had ended"
        restored: dict[str, Any] | None = cluster.restored(job_id)
        assert restored is not None, "the job did not restart from a checkpoint"
        assert restored["is_savepoint"] is False
        assert cluster.job(job_id)["state"] == "RUNNING"
        print(f"recovered from checkpoint {restored['id']} ({restored['external_path']})")
    finally:
        stream.close()
        if killed is not None:
            cluster.heal()  # the next test (and the next user) gets both TaskManagers back
        cluster.forget(stream.prefix, stream.bootstrap)


def new_build(tmp_path: Path) -> tuple[Path, str]:
    """A new build of the job: a copy of this checkout's src/ whose judge code differs (one
    more line in qaloop/flink/job.py), as a deployment would ship it. Returns its source dir
    and its build id (qaloop.flink.core.build_id, the header the job stamps on its outputs)."""
    from qaloop.flink.core import build_id

    src = tmp_path / "build-2" / "src"
    shutil.copytree(ROOT / "src", src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    job = src / "qaloop" / "flink" / "job.py"
    job.write_text(job.read_text() + f"\n# build 2 ({uuid.uuid4().hex})\n")
    return src, build_id(src / "qaloop")


def builds(records: list[Record]) -> set[str]:
    from qaloop.flink.core import BUILD_HEADER

    return {r.headers.get(BUILD_HEADER, "") for r in records}


def test_stop_with_a_savepoint_then_a_new_build_resumes_from_it(
    cluster: FlinkCluster, tmp_path: Path
) -> None:
    stream = _stream(cluster)
    try:
        first = cluster.submit(
            stream.prefix,
            *JUDGE,
            "--flink-checkpoint-interval-ms",
            CHECKPOINT_MS,
            log=tmp_path / "first.log",
        )
        cluster.wait_running(first)
        stream.collect()
        before = answers(300)
        stream.feed(before)
        found = stream.outputs_of({e.question_id for e in before}, timeout_s=180)
        # one build judged them: the TaskManagers' (the checkout that started the cluster)
        (old_build,) = builds([r for rs in found.values() for r in rs])

        savepoints = cluster.checkpoints / f"{stream.prefix}.judge" / "savepoints"
        savepoint = cluster.stop_with_savepoint(first, savepoints)
        assert cluster.job(first)["state"] == "FINISHED"
        while_stopped = answers(300)
        stream.feed(while_stopped)  # nothing judges these until the new build runs

        # The new build, submitted like the first (`--resume latest`, the default, finds the
        # savepoint in the checkpoint dir) from its own source: the client imports it
        # (PYTHONPATH), and its Python workers get it shipped with `-pyfs`. Process mode:
        # a TaskManager's embedded interpreter (thread mode) keeps the modules it imported
        # for the first job, so only fresh Python workers can run new code without
        # restarting the TaskManagers. The operator uids are the same, so the state (the
        # source's offsets) maps onto the new build.
        src, new_build_id = new_build(tmp_path)
        assert new_build_id != old_build
        second = cluster.submit(
            stream.prefix,
            *JUDGE,
            "--flink-checkpoint-interval-ms",
            CHECKPOINT_MS,
            "--flink-execution-mode",
            "process",
            log=tmp_path / "second.log",
            options=("-pyfs", str(src)),
            env={"PYTHONPATH": str(src)},
        )
        assert second != first
        cluster.wait_running(second)
        found = stream.outputs_of(set(stream.fed), timeout_s=240)
        assert_exactly_once(stream, set(stream.fed), found)
        restored = cluster.restored(second)
        assert restored is not None and restored["is_savepoint"] is True
        assert _path(restored["external_path"]) == _path(savepoint)
        # the answers fed while no job ran were judged by the new build, and only by it
        after = [found[e.question_id][0] for e in while_stopped]
        assert builds(after) == {new_build_id}, builds(after)
    finally:
        stream.close()
        cluster.forget(stream.prefix, stream.bootstrap)


def _path(uri: str) -> Path:
    return Path(uri.removeprefix("file:")).resolve()
