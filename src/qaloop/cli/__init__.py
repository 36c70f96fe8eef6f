"""The `qaloop` command. Each command lives in its own module under qaloop.cli and is listed
in COMMAND_MODULES; a module exposes `command` (a click command or group). Library errors
become CLI errors (click.ClickException, exit code 1) only here, at the edge."""

from __future__ import annotations

import importlib

import click

COMMAND_MODULES = [
    "qaloop.cli.demo",
    "qaloop.cli.serve",
    "qaloop.cli.traffic",
    "qaloop.cli.calibrate",
    "qaloop.cli.gate_bench",
    "qaloop.cli.services",
    "qaloop.cli.flink",
    "qaloop.cli.up",
    "qaloop.cli.dlq",
    "qaloop.cli.report",
    "qaloop.cli.experiment",
]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="qaloop")
def main() -> None:
    """qaloop: answer questions with an LLM, asynchronously, behind a quality gate."""


for _module in COMMAND_MODULES:
    _mod = importlib.import_module(_module)
    for _command in getattr(_mod, "commands", None) or [_mod.command]:  # one or several
        main.add_command(_command)
