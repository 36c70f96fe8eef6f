"""`qaloop flink-job`: the quality gate as an Apache Flink job on a local mini-cluster
(docs/flink.md). PyFlink lives in its own venv (`make flink-venv` -> .venv-flink): run from any
other interpreter, the command re-executes itself (same pid) with .venv-flink/bin/python."""

from __future__ import annotations

import os
import sys
from importlib.util import find_spec
from pathlib import Path

import click


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


@click.command(
    "flink-job",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def command(args: tuple[str, ...]) -> None:
    """Run the quality gate as an Apache Flink job (local mini-cluster, blocks).

    Configured like every service: the QALOOP_* environment, then flags named after the
    settings (`--threshold 0.2`, `--flink-checkpoint-interval-ms 500`, `--help` lists them),
    passed to the job unchanged (qaloop.flink.job)."""
    from pydantic_settings import SettingsError

    from qaloop.flink.core import settings_from_args

    argv = list(args)
    try:  # a bad flag is a one-line error here, before a JVM starts; --help prints and exits
        settings_from_args(argv, prog="qaloop flink-job")
    except (SettingsError, ValueError) as exc:
        raise click.ClickException(f"invalid configuration: {exc}") from exc
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
