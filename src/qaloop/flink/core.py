"""The Flink judge's pure part: what one record becomes, the job's configuration and its SQL.

No PyFlink import here, so the main venv tests it (tests/unit/flink) and mypy checks it.
`GateFunction.process` is the body of the job's Python map function: it decodes the envelope
(undecodable -> dead letter with the reason, the original bytes untouched), judges it with the
gate stage of `qaloop.services.gating.build_gate_stage` (the cheap gate; UNSURE verdicts and
questions without a reference go to the LLM judge), decides with `qaloop.core.routing.judge`
and routes with `qaloop.services.judge.route` — the plain judge's own functions, so both judges
produce the same topic, key, value and headers for a record.

The map is synchronous and the LLM judge is async: the cheap gate runs inline, and only an
UNSURE record waits for its LLM-judge call, which runs on an event loop the GateFunction owns in
a thread of its own (one per task, started on first need; docs/flink.md).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from qaloop import wiring
from qaloop.bus.base import Message, Topics
from qaloop.core import codec
from qaloop.core.routing import GateConfig, judge
from qaloop.core.wire import poison
from qaloop.quality.base import Scorer
from qaloop.quality.cascade import Cascade
from qaloop.services.gating import judge_item
from qaloop.services.judge import as_stage, log_judged, route
from qaloop.settings import Settings

log = logging.getLogger(__name__)

# Stamped on every record the Flink judge writes: the build of the code that judged it, so a
# job resumed from a savepoint into a new build shows which build judged what.
BUILD_HEADER = "qaloop-judge-build"


@functools.cache
def build_id(package_dir: Path | None = None) -> str:
    """The build of this qaloop: a hash of every .py file of the package (path and content),
    as imported by the process asking (the job's TaskManager or Python worker)."""
    root = package_dir or Path(__file__).resolve().parents[1]
    digest = hashlib.blake2b(digest_size=8)
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


Delivery = Literal["exactly-once", "at-least-once"]
ExecutionMode = Literal["thread", "process"]

T = TypeVar("T")

CONNECTOR = "org.apache.flink:flink-sql-connector-kafka:5.0.0-2.2"
CONNECTOR_JAR = "flink-sql-connector-kafka-5.0.0-2.2.jar"


@dataclass(frozen=True, slots=True)
class Routed:
    """One output record of the job, plus what the metrics windows aggregate.

    `attempt`, `score` and `decision` describe the judged answer (the attempt that was scored,
    not the next one); they are None for a dead-lettered undecodable record."""

    topic: str
    key: bytes
    value: bytes
    headers: dict[str, bytes]
    question_id: str | None = None
    attempt: int | None = None
    score: float | None = None
    decision: str | None = None


class LoopThread:
    """An asyncio loop in a daemon thread: lets synchronous code (the Flink map) await the
    async LLM judge, whether or not the calling thread runs a loop of its own."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            self._thread = threading.Thread(
                target=loop.run_forever, name="qaloop-judge-loop", daemon=True
            )
            self._thread.start()
            self._loop = loop
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def close(self) -> None:
        loop, self._loop = self._loop, None
        if loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
        loop.close()


class GateFunction:
    """The record-at-a-time quality gate: one input record -> exactly one output record."""

    def __init__(
        self,
        gate: Cascade | Scorer,
        config: GateConfig,
        topics: Topics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.stage = as_stage(gate, config)
        self.gate = config
        self.topics = topics
        self.clock = clock
        self.decisions: Counter[str] = Counter()
        self.quality: Counter[str] = Counter()
        self._loop = LoopThread()

    @classmethod
    def from_settings(cls, settings: Settings) -> GateFunction:
        """The plain judge's gate stage and routing (qaloop.wiring.judge_gate), on the same
        topics."""
        stage, gate = wiring.judge_gate(settings)
        return cls(stage, gate, wiring.topics_for(settings))

    def process(self, message: Message) -> Routed:
        try:
            envelope = codec.decode(message.value)
        except codec.InvalidMessage as exc:
            self.decisions["poison"] += 1
            log.warning(
                "dead-lettering %s[%d]@%d: %s",
                message.topic,
                message.partition,
                message.offset,
                exc,
            )
            bad = poison(self.topics.dead_letter, message, str(exc))
            return Routed(bad.topic, _b(bad.key), bad.value, _bytes_headers(bad.headers))
        items = [judge_item(envelope)]
        results, unsure = self.stage.first(items)
        if unsure:  # only these wait for an LLM call
            results = self._loop.run(self.stage.second_pass(items, results, unsure))
        [judged] = results
        if judged.cross_language:
            self.quality["cross_language"] += 1
        decision, routed = judge(envelope, judged.verdict, self.gate, self.clock(), judged.cost)
        self.decisions[decision.value] += 1
        log_judged(envelope, judged, decision, routed)
        out = route(decision, routed, self.topics)
        return Routed(
            out.topic,
            _b(out.key),
            out.value,
            _bytes_headers(out.headers),
            question_id=envelope.question_id,
            attempt=envelope.attempt,
            score=judged.verdict.score,
            decision=decision.value,
        )

    def close(self) -> None:
        """Close the LLM judge's provider on its own loop, then the loop."""
        if self.stage.second is not None:
            self._loop.run(self.stage.aclose())
        self._loop.close()


def message_from_row(
    key: bytes | None,
    value: bytes | None,
    headers: Mapping[str, bytes | None] | None,
    topic: str,
    partition: int,
    offset: int,
) -> Message:
    """The bus message the plain judge would have seen for this Kafka record."""
    return Message(
        topic=topic,
        partition=partition,
        offset=offset,
        key=None if key is None else bytes(key).decode("utf-8", "replace"),
        value=None if value is None else bytes(value),
        headers={
            k: "" if v is None else bytes(v).decode("utf-8", "replace")
            for k, v in (headers or {}).items()
        },
    )


def _b(text: str) -> bytes:
    return text.encode("utf-8", "replace")


def _bytes_headers(headers: Mapping[str, str]) -> dict[str, bytes]:
    return {k: _b(v) for k, v in headers.items()}


# ---------------------------------------------------------------------------- configuration


@dataclass(frozen=True, slots=True)
class FlinkJobConfig:
    """The job's configuration: a view of the process's Settings (QALOOP_* environment, then
    flags), so `qaloop flink-job`, `flink run -pym qaloop.flink.job` on a cluster and compose
    read the same variables, with the same defaults, as the plain judge: no deployment path
    can judge differently. Every knob is a Settings field (`flink_*` for the job's own)."""

    settings: Settings

    @property
    def bootstrap(self) -> str:
        return self.settings.kafka_bootstrap

    @property
    def topic_prefix(self) -> str:
        return self.settings.topic_prefix

    @property
    def topics(self) -> Topics:
        return wiring.topics_for(self.settings)

    @property
    def metrics_topic(self) -> str:
        return metrics_topic(self.topic_prefix)

    @property
    def group_id(self) -> str:
        # The plain judge's group by default: switching plain <-> flink resumes where it was.
        return self.settings.flink_group or wiring.shared_group(self.settings, wiring.JUDGE)

    @property
    def delivery(self) -> Delivery:
        return self.settings.flink_delivery

    @property
    def checkpoint_interval_ms(self) -> int:
        return self.settings.flink_checkpoint_interval_ms

    @property
    def resume(self) -> str:
        return self.settings.flink_resume

    @property
    def execution_mode(self) -> ExecutionMode:
        return self.settings.flink_execution_mode

    @property
    def bundle_size(self) -> int:
        return self.settings.flink_bundle_size

    @property
    def bundle_time_ms(self) -> int:
        return self.settings.flink_bundle_time_ms

    @property
    def parallelism(self) -> int:
        return self.settings.flink_parallelism

    @property
    def metrics_window_s(self) -> float:
        return self.settings.flink_metrics_window_s

    @property
    def partition_discovery_ms(self) -> int:
        return self.settings.flink_partition_discovery_ms

    @property
    def transaction_timeout_ms(self) -> int:
        return self.settings.flink_transaction_timeout_ms

    @property
    def connector_jar(self) -> Path | None:
        jar = self.settings.flink_connector_jar
        return None if jar is None else Path(jar)

    @property
    def checkpoint_dir(self) -> Path:
        if self.settings.flink_checkpoint_dir is not None:
            return Path(self.settings.flink_checkpoint_dir)
        return Path(self.settings.flink_state_dir) / _safe(self.group_id) / "checkpoints"

    @property
    def log_dir(self) -> Path:
        return self.checkpoint_dir.parent / "logs"

    @property
    def transactional_id_prefix(self) -> str:
        # One per sink and per group: two jobs (or two sinks) sharing a prefix would fence
        # each other's transactions.
        return _safe(f"{self.group_id}.flink")

    def flink_configuration(self) -> dict[str, str]:
        """Flink 2.x configuration keys of the job (pipeline.jars and python.executable are
        added by the driver, which knows the paths)."""
        conf = {
            "pipeline.name": f"qaloop-judge[{self.topic_prefix}]",
            "parallelism.default": str(self.parallelism),
            "execution.checkpointing.interval": f"{self.checkpoint_interval_ms} ms",
            "execution.checkpointing.mode": "EXACTLY_ONCE",
            "execution.checkpointing.dir": self.checkpoint_dir.resolve().as_uri(),
            "execution.checkpointing.externalized-checkpoint-retention": ("RETAIN_ON_CANCELLATION"),
            "execution.checkpointing.num-retained": "2",
            # a checkpoint slower than the interval still leaves the job time to process
            "execution.checkpointing.min-pause": f"{min(500, self.checkpoint_interval_ms // 2)} ms",
            "state.backend.type": "hashmap",
            "restart-strategy.type": "exponential-delay",
            "python.execution-mode": self.execution_mode,
            "python.fn-execution.bundle.size": str(self.bundle_size),
            "python.fn-execution.bundle.time": str(self.bundle_time_ms),
            "table.local-time-zone": "UTC",
        }
        return conf


def settings_from_args(argv: Sequence[str], *, prog: str) -> Settings:
    """Settings from the QALOOP_* environment, then `--<field> value` flags (kebab-case), one
    per Settings field: the job's flags are the settings, named once. Bad input raises
    SettingsError (or exits, for --help) with the field and the problem."""
    # pydantic-settings' own init arguments, which its mypy plugin doesn't know
    return Settings(  # type: ignore[call-arg]
        _cli_parse_args=list(argv),
        _cli_kebab_case=True,
        _cli_prog_name=prog,
        _cli_exit_on_error=False,
    )


def metrics_topic(prefix: str) -> str:
    return f"{prefix}.metrics"


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "-", text)


def _q(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _with(options: Mapping[str, str]) -> str:
    return ",\n  ".join(f"{_q(k)} = {_q(v)}" for k, v in options.items())


def _interval(seconds: float) -> str:
    ms = round(seconds * 1000)
    d, rest = divmod(ms, 86_400_000)
    h, rest = divmod(rest, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"INTERVAL '{d} {h:02d}:{m:02d}:{s:02d}.{ms:03d}' DAY TO SECOND(3)"


def _sink_options(cfg: FlinkJobConfig, name: str) -> dict[str, str]:
    options = {
        "connector": "kafka",
        "properties.bootstrap.servers": cfg.bootstrap,
        "properties.acks": "all",
        "properties.enable.idempotence": "true",
        "properties.linger.ms": str(wiring.PRODUCER_LINGER_MS),
        "sink.partitioner": "default",  # Kafka's: by key hash, so keyed by question id
    }
    if cfg.delivery == "exactly-once":
        options.update(
            {
                "sink.delivery-guarantee": "exactly-once",
                "sink.transactional-id-prefix": f"{cfg.transactional_id_prefix}.{name}",
                "properties.transaction.timeout.ms": str(cfg.transaction_timeout_ms),
            }
        )
    else:
        options["sink.delivery-guarantee"] = "at-least-once"
    return options


def source_ddl(cfg: FlinkJobConfig) -> str:
    options = {
        "connector": "kafka",
        "topic": cfg.topics.generated,
        "properties.bootstrap.servers": cfg.bootstrap,
        "properties.group.id": cfg.group_id,
        "properties.client.id.prefix": _safe(f"{cfg.group_id}.flink"),
        # committed offsets of the group, falling back to earliest (pitfall 3: never implicit)
        "scan.startup.mode": "group-offsets",
        "properties.auto.offset.reset": "earliest",
        # a partition added while the job runs is read within seconds (pitfall 2)
        "scan.topic-partition-discovery.interval": f"{cfg.partition_discovery_ms} ms",
        "properties.isolation.level": "read_committed",
        "properties.commit.offsets.on.checkpoint": "true",
        "key.format": "raw",
        "key.fields": "k",
        "value.format": "raw",
        "value.fields-include": "EXCEPT_KEY",
    }
    return f"""CREATE TEMPORARY TABLE generated_in (
  `k` BYTES,
  `v` BYTES,
  `headers` MAP<STRING, BYTES> METADATA VIRTUAL,
  `src_topic` STRING METADATA FROM 'topic' VIRTUAL,
  `src_partition` INT METADATA FROM 'partition' VIRTUAL,
  `src_offset` BIGINT METADATA FROM 'offset' VIRTUAL
) WITH (
  {_with(options)}
)"""


SOURCE_QUERY = (
    "SELECT `k`, `v`, `headers`, `src_topic`, `src_partition`, `src_offset` FROM generated_in"
)


def sink_ddl(cfg: FlinkJobConfig) -> str:
    """One sink for the three routes: the topic is a per-record (writable metadata) column."""
    t = cfg.topics
    options = {
        **_sink_options(cfg, "out"),
        # several topics: each record names its own in the writable `topic` metadata column
        "topic": ";".join([t.validated, t.questions, t.dead_letter]),
        "key.format": "raw",
        "key.fields": "k",
        "value.format": "raw",
        "value.fields-include": "EXCEPT_KEY",
    }
    return f"""CREATE TEMPORARY TABLE judged_out (
  `k` BYTES,
  `v` BYTES,
  `topic` STRING METADATA,
  `headers` MAP<STRING, BYTES> METADATA
) WITH (
  {_with(options)}
)"""


SINK_INSERT = "INSERT INTO judged_out SELECT `k`, `v`, `topic`, `headers` FROM judged"


def metrics_ddl(cfg: FlinkJobConfig) -> str:
    options = {
        **_sink_options(cfg, "metrics"),
        "topic": cfg.metrics_topic,
        "format": "json",
    }
    return f"""CREATE TEMPORARY TABLE metrics_out (
  `window_start` STRING,
  `window_end` STRING,
  `window_s` DOUBLE,
  `attempt` INT,
  `answers` BIGINT,
  `validated` BIGINT,
  `regenerated` BIGINT,
  `gave_up` BIGINT,
  `unscored` BIGINT,
  `pass_rate` DOUBLE,
  `mean_score` DOUBLE
) WITH (
  {_with(options)}
)"""


def metrics_insert(cfg: FlinkJobConfig) -> str:
    """Pass rate and mean score per judged attempt, per processing-time tumbling window."""
    fmt = "yyyy-MM-dd''T''HH:mm:ss.SSS''Z''"
    return f"""INSERT INTO metrics_out
SELECT
  DATE_FORMAT(window_start, '{fmt}'),
  DATE_FORMAT(window_end, '{fmt}'),
  CAST({cfg.metrics_window_s!r} AS DOUBLE),
  `attempt`,
  COUNT(*),
  SUM(CASE WHEN `decision` = 'validate' THEN 1 ELSE 0 END),
  SUM(CASE WHEN `decision` = 'regenerate' THEN 1 ELSE 0 END),
  SUM(CASE WHEN `decision` IN ('give_up', 'judge_error') THEN 1 ELSE 0 END),
  SUM(CASE WHEN `score` IS NULL THEN 1 ELSE 0 END),
  CAST(SUM(CASE WHEN `decision` = 'validate' THEN 1 ELSE 0 END) AS DOUBLE) / COUNT(*),
  AVG(`score`)
FROM TABLE(TUMBLE(TABLE judged_answers, DESCRIPTOR(`pt`), {_interval(cfg.metrics_window_s)}))
GROUP BY window_start, window_end, `attempt`"""


JUDGED_ANSWERS_VIEW = (
    "CREATE TEMPORARY VIEW judged_answers AS "
    "SELECT `attempt`, `score`, `decision`, `pt` FROM judged WHERE `decision` IS NOT NULL"
)


# ---------------------------------------------------------------------------- checkpoints


def latest_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The newest complete retained checkpoint (`<job id>/chk-<n>` with a `_metadata` file) or
    savepoint (`savepoints/savepoint-*`, written on a clean stop) under `checkpoint_dir`, across
    the runs (job ids) of this job."""
    if not checkpoint_dir.is_dir():
        return None
    metas = [
        *checkpoint_dir.glob("*/chk-*/_metadata"),
        *checkpoint_dir.glob("*/savepoint-*/_metadata"),
    ]
    found = [
        (meta.stat().st_mtime, _chk_number(meta.parent), meta.parent)
        for meta in metas
        if meta.is_file()
    ]
    if not found:
        return None
    return max(found)[2]


def _chk_number(path: Path) -> int:
    try:
        return int(path.name.removeprefix("chk-"))
    except ValueError:
        return -1


def resume_path(cfg: FlinkJobConfig) -> Path | None:
    if cfg.resume == "none":
        return None
    if cfg.resume == "latest":
        return latest_checkpoint(cfg.checkpoint_dir)
    path = Path(cfg.resume)
    if not (path / "_metadata").is_file():
        raise ValueError(f"no checkpoint or savepoint at {path} (missing _metadata)")
    return path


def connector_on_classpath() -> bool:
    """A Flink distribution with the connector in lib/ (the deploy image) needs no jar."""
    import os

    home = os.environ.get("FLINK_HOME")
    if not home:
        return False
    return any(Path(home, "lib").glob("flink-sql-connector-kafka-*.jar"))


def find_connector_jar(explicit: Path | None = None) -> Path:
    """The Kafka connector jar: explicit, $QALOOP_FLINK_CONNECTOR_JAR, or the cache
    `$QALOOP_CACHE/flink/` (default ~/.cache/qaloop/flink/) that `make flink-venv` fills."""
    import os

    candidates: list[Path] = []
    if explicit is not None:
        candidates.append(explicit)
    env = os.environ.get("QALOOP_FLINK_CONNECTOR_JAR")
    if env:
        candidates.append(Path(env))
    cache = Path(os.environ.get("QALOOP_CACHE") or Path.home() / ".cache" / "qaloop")
    candidates.append(cache / "flink" / CONNECTOR_JAR)
    for path in candidates:
        if path.is_file():
            return path.resolve()
    raise FileNotFoundError(
        f"Kafka connector jar not found (looked at {', '.join(map(str, candidates))}); "
        f"run `make flink-venv` or fetch {CONNECTOR} with Maven"
    )
