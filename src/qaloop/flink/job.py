"""The quality gate as an Apache Flink job (PyFlink 2.2, Kafka connector 5.0). See docs/flink.md.

Job graph (one job, parallelism 1 by default):

    Kafka source <prefix>.generated (raw key/value + headers, topic/partition/offset)
      -> Python map "judge": decode -> gate (cascade) -> routing.judge -> route (flink.core)
      -> Kafka sink: topic per record (validated / questions / dead-letter), key = question id,
         value = envelope, headers = the plain judge's headers
      -> judged answers -> 1-minute processing-time TUMBLE per attempt -> Kafka sink
         <prefix>.metrics (JSON: pass rate, mean score, counts)

Kafka I/O goes through the connector's SQL tables (KafkaSource/KafkaSink underneath) because
only they expose per-record keys, headers and target topics to a Python job: PyFlink's
DataStream KafkaSink can set neither a key taken from a field nor headers.

Run it with `qaloop flink-job` (local mini-cluster, inside .venv-flink) or submit this module
to a cluster: `flink run -pym qaloop.flink.job [--<setting> value ...]`. Either way the job's
configuration is the process's Settings (QALOOP_* environment, then flags named after the
fields), so it judges exactly as the plain judge does with the same environment.
"""

from __future__ import annotations

import logging
import os
import signal
import site
import sys
import threading
import time
from pathlib import Path
from typing import Any

from pyflink.common import Configuration, Row, Types
from pyflink.datastream import MapFunction, RuntimeContext, StreamExecutionEnvironment
from pyflink.table import Schema, StreamTableEnvironment

from qaloop import wiring
from qaloop.flink.core import (
    BUILD_HEADER,
    JUDGED_ANSWERS_VIEW,
    SINK_INSERT,
    SOURCE_QUERY,
    FlinkJobConfig,
    GateFunction,
    build_id,
    connector_on_classpath,
    find_connector_jar,
    message_from_row,
    metrics_ddl,
    metrics_insert,
    resume_path,
    settings_from_args,
    sink_ddl,
    source_ddl,
)

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 20.0  # within `qaloop up`'s 30 s grace

_BYTES = Types.PRIMITIVE_ARRAY(Types.BYTE())
JUDGED_TYPE = Types.ROW_NAMED(
    ["topic", "k", "v", "headers", "question_id", "attempt", "score", "decision"],
    [
        Types.STRING(),
        _BYTES,
        _BYTES,
        Types.MAP(Types.STRING(), _BYTES),
        Types.STRING(),
        Types.INT(),
        Types.DOUBLE(),
        Types.STRING(),
    ],
)


class JudgeMap(MapFunction):  # type: ignore[misc]
    """Runs in the Python worker: builds the scorer once, then one record in, one out."""

    def __init__(self, cfg: FlinkJobConfig, log_level: str, log_file: str | None) -> None:
        self.cfg = cfg
        self.log_level = log_level
        self.log_file = log_file
        self.gate: GateFunction | None = None
        self.counters: dict[str, Any] = {}
        self.build = b""

    def open(self, runtime_context: RuntimeContext) -> None:
        _setup_udf_logging(self.log_level, self.log_file)
        self.gate = GateFunction.from_settings(self.cfg.settings)
        self.build = build_id().encode()  # of the code this worker imported, not the driver's
        log.info("judge map: build %s", self.build.decode())
        group = runtime_context.get_metrics_group().add_group("qaloop")
        self.counters = {
            name: group.counter(name)
            for name in ("validate", "regenerate", "give_up", "judge_error", "poison")
        }

    def close(self) -> None:
        if self.gate is not None:
            self.gate.close()  # the LLM judge's provider, then its loop thread

    def map(self, value: Row) -> Row:
        assert self.gate is not None
        message = message_from_row(value[0], value[1], value[2], value[3], value[4], value[5])
        r = self.gate.process(message)
        self.counters[r.decision or "poison"].inc()
        headers = {**r.headers, BUILD_HEADER: self.build}
        return Row(r.topic, r.key, r.value, headers, r.question_id, r.attempt, r.score, r.decision)


def _setup_logging(level: str) -> None:
    """Also re-applied after the job is built: importing Apache Beam (PyFlink does, lazily)
    lowers the root logger to WARNING."""
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def _setup_udf_logging(level: str, log_file: str | None) -> None:
    """The UDF's log lines (one per question, with its id) go to a file: in thread mode the
    interpreter is embedded in the JVM, and writing to its stderr blocked the task (and with
    it the whole job) once a pipe buffer filled up."""
    root = logging.getLogger()
    handler: logging.Handler = logging.NullHandler()
    if log_file:
        try:
            Path(log_file).parent.mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(log_file, encoding="utf-8")
        except OSError:
            pass  # e.g. a TaskManager without that directory: no UDF log
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def _python_path() -> str:
    """Thread mode runs the UDFs in an interpreter embedded in the JVM (pemja): it needs this
    venv's site-packages (and qaloop's source dir for an editable install) on PYTHONPATH."""
    import qaloop

    paths = [*site.getsitepackages(), str(Path(qaloop.__file__).resolve().parents[1])]
    current = os.environ.get("PYTHONPATH")
    return os.pathsep.join([*paths, *([current] if current else [])])


def ensure_topics(cfg: FlinkJobConfig) -> None:
    """Create the five pipeline topics (as the services do) and the metrics topic, before the
    job starts: never rely on auto-creation or on partition discovery (pitfall 2)."""
    from confluent_kafka.admin import AdminClient

    from qaloop.bus.kafka import KafkaBus
    from qaloop.bus.kafka.admin import TopicSpec
    from qaloop.bus.kafka.admin import ensure_topics as create_topics
    from qaloop.bus.kafka.config import base_config

    bus = KafkaBus(wiring.kafka_settings(cfg.settings), cfg.topics)
    s = bus.settings
    specs = {
        **bus.topic_specs(),
        cfg.metrics_topic: TopicSpec(1, s.replication_factor, s.min_insync_replicas),
    }
    create_topics(AdminClient(base_config(bus.settings)), specs)


def build(cfg: FlinkJobConfig, *, log_level: str = "INFO") -> StreamExecutionEnvironment:
    """The job, ready for `env.execute()`. Restores from the newest retained checkpoint when
    cfg.resume says so."""
    # Before the first PyFlink call: that one starts the JVM, which inherits the environment.
    os.environ["PYTHONPATH"] = _python_path()
    # The mini-cluster's log (JVM and Python workers) goes next to the checkpoints, not into
    # the venv's pyflink/log.
    os.environ.setdefault("FLINK_LOG_DIR", str(cfg.log_dir.resolve()))
    conf = Configuration()
    for key, value in cfg.flink_configuration().items():
        conf.set_string(key, value)
    if cfg.connector_jar is not None or not connector_on_classpath():
        conf.set_string("pipeline.jars", find_connector_jar(cfg.connector_jar).as_uri())
    # Python workers must be this venv's interpreter, not `python` from PATH (pitfall 1).
    conf.set_string("python.executable", sys.executable)
    conf.set_string("python.client.executable", sys.executable)
    restore = resume_path(cfg)
    if restore is not None:
        conf.set_string("execution.state-recovery.path", restore.resolve().as_uri())
        log.info("restoring from checkpoint %s", restore)
    else:
        log.info("no checkpoint to restore: starting from the group's committed offsets")

    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.set_python_executable(sys.executable)
    t_env = StreamTableEnvironment.create(env)
    for ddl in (source_ddl(cfg), sink_ddl(cfg), metrics_ddl(cfg)):
        t_env.execute_sql(ddl)

    records = t_env.to_data_stream(t_env.sql_query(SOURCE_QUERY))
    judged = (
        records.map(
            JudgeMap(cfg, log_level, str((cfg.log_dir / "judge.log").resolve())),
            output_type=JUDGED_TYPE,
        )
        .name("judge: decode, score, route")
        .uid("qaloop-judge-map")
    )
    table = t_env.from_data_stream(
        judged, Schema.new_builder().column_by_expression("pt", "PROCTIME()").build()
    )
    t_env.create_temporary_view("judged", table)
    t_env.execute_sql(JUDGED_ANSWERS_VIEW)
    statements = t_env.create_statement_set()
    statements.add_insert_sql(SINK_INSERT)
    statements.add_insert_sql(metrics_insert(cfg))
    statements.attach_as_datastream()
    return env


def run(cfg: FlinkJobConfig, *, log_level: str = "INFO", create_topics: bool = True) -> None:
    """Blocking: runs the job (on a local mini-cluster unless submitted with `flink run`)."""
    if create_topics:
        ensure_topics(cfg)
    started = time.monotonic()
    env = build(cfg, log_level=log_level)
    _setup_logging(log_level)
    log.info(
        "flink judge: built in %.1f s; %s, checkpoints every %d ms in %s, bundle %d / %d ms, "
        "%s mode, group %s",
        time.monotonic() - started,
        cfg.delivery,
        cfg.checkpoint_interval_ms,
        cfg.checkpoint_dir,
        cfg.bundle_size,
        cfg.bundle_time_ms,
        cfg.execution_mode,
        cfg.group_id,
    )
    name = f"qaloop-judge[{cfg.topic_prefix}]"
    target = env._j_stream_execution_environment.getConfiguration().toMap().get("execution.target")
    if target not in (None, "local"):
        env.execute(name)  # submitted with `flink run`: the cluster owns the job's life
        return
    run_local(env, name, cfg)


def run_local(env: StreamExecutionEnvironment, name: str, cfg: FlinkJobConfig) -> None:
    """The mini-cluster lives in this process's JVM. SIGTERM / SIGINT stop the job with a
    savepoint: the last interval's transactions commit (read_committed consumers aren't left
    waiting for open transactions to time out) and the next start resumes from it."""
    client = env.execute_async(name)
    stop = threading.Event()

    def on_signal(signum: int, _: Any) -> None:
        if not stop.is_set():
            log.info("%s: stopping the job with a savepoint", signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    result = client.get_job_execution_result()
    while not stop.wait(0.5):
        if result.done():
            result.result()  # raises if the job failed
            return
    savepoints = (cfg.checkpoint_dir / "savepoints").resolve()
    outcome: dict[str, Any] = {}

    def stop_with_savepoint() -> None:
        try:
            # PyFlink 2.2's JobClient.stop_with_savepoint calls a 2-argument Java method that
            # Flink 2.x no longer has: call the 3-argument one (with the format) directly.
            from pyflink.java_gateway import get_gateway

            fmt = get_gateway().jvm.org.apache.flink.core.execution.SavepointFormatType.DEFAULT
            j_future = client._j_job_client.stopWithSavepoint(False, savepoints.as_uri(), fmt)
            outcome["path"] = j_future.get()
        except Exception as exc:  # py4j wraps the Java error
            outcome["error"] = exc

    worker = threading.Thread(target=stop_with_savepoint, daemon=True)
    worker.start()
    worker.join(STOP_TIMEOUT_S)
    if "path" in outcome:
        log.info("stopped; savepoint %s", outcome["path"])
        return
    log.warning(
        "no savepoint within %.0f s (%s): cancelling; the next start resumes from the last "
        "checkpoint",
        STOP_TIMEOUT_S,
        outcome.get("error", "timeout"),
    )
    client.cancel()


def parse_args(argv: list[str]) -> FlinkJobConfig:
    """The job's settings: the QALOOP_* environment (the same variables as every service's),
    then flags, one per Settings field (`--threshold 0.2`, `--flink-parallelism 2`; see
    `--help`). `qaloop flink-job` passes its arguments through unchanged."""
    return FlinkJobConfig(settings_from_args(argv, prog="qaloop.flink.job"))


def main(argv: list[str] | None = None) -> None:
    cfg = parse_args(sys.argv[1:] if argv is None else argv)
    level = cfg.settings.log_level
    _setup_logging(level)
    run(cfg, log_level=level)


if __name__ == "__main__":
    main()
