"""`qaloop flink-job`: the quality gate as an Apache Flink job on a local mini-cluster
(docs/flink.md). PyFlink lives in its own venv (`make flink-venv` -> .venv-flink): run from any
other interpreter, the command re-executes itself (same pid) with .venv-flink/bin/python."""

from __future__ import annotations

import os
import sys
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import click

from qaloop.cli.common import build_settings


def flink_python() -> Path | None:
    """The interpreter that has PyFlink: $QALOOP_FLINK_PYTHON, else .venv-flink of the
    checkout qaloop runs from (an editable install), else of the working directory."""
    env = os.environ.get("QALOOP_FLINK_PYTHON")
    if env:
        return Path(env)
    import qaloop

    for root in (Path(qaloop.__file__).resolve().parents[2], Path.cwd()):
        candidate = root / ".venv-flink" / "bin" / "python"
        if candidate.is_file():
            return candidate
    return None


def job_argv(settings: Any, flags: dict[str, Any]) -> list[str]:
    """The job's own flags (qaloop.flink.job.parse_args) from settings + CLI flags."""
    argv = [
        "--bootstrap",
        settings.kafka_bootstrap,
        "--topic-prefix",
        settings.topic_prefix,
        "--partitions",
        str(settings.kafka_partitions),
        "--scorer",
        settings.scorer,
        "--threshold",
        str(settings.threshold),
        "--max-attempts",
        str(settings.max_attempts),
        "--log-level",
        settings.log_level,
    ]
    for name, value in flags.items():
        if value is not None:
            argv += [f"--{name.replace('_', '-')}", str(value)]
    return argv


@click.command("flink-job")
@click.option("--kafka-bootstrap", default=None, help="Kafka bootstrap [QALOOP_KAFKA_BOOTSTRAP]")
@click.option("--topic-prefix", default=None, help="Prefix of topics [QALOOP_TOPIC_PREFIX]")
@click.option("--scorer", default=None, help="Scorer name [QALOOP_SCORER]")
@click.option("--threshold", type=float, default=None, help="Validation threshold")
@click.option("--max-attempts", type=int, default=None, help="Generation attempts")
@click.option("--log-level", default=None, help="Logging level [QALOOP_LOG_LEVEL]")
@click.option("--group", default=None, help="Consumer group whose offsets the job commits")
@click.option(
    "--delivery",
    type=click.Choice(["exactly-once", "at-least-once"]),
    default=None,
    help="Kafka sink guarantee [exactly-once]",
)
@click.option("--checkpoint-interval-ms", type=int, default=None, help="[2000]")
@click.option("--state-dir", default=None, help="Checkpoints and logs [.qaloop/flink]")
@click.option("--checkpoint-dir", default=None, help="Override <state-dir>/<group>/checkpoints")
@click.option("--resume", default=None, help="latest (default) | none | PATH of a checkpoint")
@click.option("--execution-mode", type=click.Choice(["thread", "process"]), default=None)
@click.option("--bundle-size", type=int, default=None, help="Python bundle size [100]")
@click.option("--bundle-time-ms", type=int, default=None, help="Python bundle time [50]")
@click.option("--parallelism", type=int, default=None, help="[1]")
@click.option("--metrics-window-s", type=float, default=None, help="Tumbling window [60]")
@click.option("--connector-jar", default=None, help="flink-sql-connector-kafka jar")
def command(
    kafka_bootstrap: str | None,
    topic_prefix: str | None,
    scorer: str | None,
    threshold: float | None,
    max_attempts: int | None,
    log_level: str | None,
    **flags: Any,
) -> None:
    """Run the quality gate as an Apache Flink job (local mini-cluster, blocks)."""
    settings = build_settings(
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=topic_prefix,
        scorer=scorer,
        threshold=threshold,
        max_attempts=max_attempts,
        log_level=log_level,
    )
    argv = job_argv(settings, flags)
    if find_spec("pyflink") is None:
        python = flink_python()
        if python is None:
            raise click.ClickException(
                "PyFlink is not installed here and no .venv-flink was found: run "
                "`make flink-venv` (or set QALOOP_FLINK_PYTHON)"
            )
        sys.stdout.flush()
        sys.stderr.flush()
        # exec, not a child: the supervisor's signals and pid reach the job directly
        os.execv(str(python), [str(python), "-m", "qaloop.flink.job", *argv])
    from qaloop.flink.job import main

    main(argv)
