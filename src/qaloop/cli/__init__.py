"""The `qaloop` command. Each command lives in its own module under qaloop.cli and is listed
in COMMANDS; a module exposes `command` (a click command or group) or `commands`.

Commands are imported only when run (`qaloop --help` imports none of them: FastAPI, pydantic
and the pipeline cost ~0.5 s). The one-line summaries `--help` prints are kept here;
tests/unit/cli/test_main.py checks they match each command's own docstring.

Library errors become CLI errors only here, at the edge (`qaloop.cli.errors`): one line
saying what is wrong and what to do, exit code 1 (2 for usage errors, as click does)."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

import click

# name -> (module, attribute, the summary `qaloop --help` shows)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "demo": (
        "qaloop.cli.demo",
        "command",
        "Replay a few hundred questions through the whole loop and print a summary.",
    ),
    "serve": (
        "qaloop.cli.serve",
        "command",
        "Run the HTTP gateway with all stages in one process (no servers needed).",
    ),
    "traffic": (
        "qaloop.cli.traffic",
        "command",
        "Send seeded traffic (arrival process x popularity) to a gateway; record it to CSV.",
    ),
    "calibrate": (
        "qaloop.cli.calibrate",
        "command",
        "Score recorded answers with every scorer and report distributions, a threshold sweep "
        "with the feedback-loop cost, scorer agreement, the cross-language subset and boundary "
        "examples.",
    ),
    "gate-bench": (
        "qaloop.cli.gate_bench",
        "command",
        "Real answers vs seeded adversarial families, for every scorer and the default gate.",
    ),
    "gateway": (
        "qaloop.cli.services",
        "gateway",
        "Run the HTTP gateway over Kafka and the shared database.",
    ),
    "worker": (
        "qaloop.cli.services",
        "worker",
        "Run an LLM worker (consumer group <prefix>.worker).",
    ),
    "judge": (
        "qaloop.cli.services",
        "judge",
        "Run the quality judge (consumer group <prefix>.judge).",
    ),
    "store": (
        "qaloop.cli.services",
        "store",
        "Run the storage consumer (consumer group <prefix>.store).",
    ),
    "retrier": (
        "qaloop.cli.services",
        "retrier",
        "Run the delayed-retry service and the stale-question sweep.",
    ),
    "flink-job": (
        "qaloop.cli.flink",
        "command",
        "Run the quality gate as an Apache Flink job (local mini-cluster, blocks).",
    ),
    "up": (
        "qaloop.cli.up",
        "command",
        "Start a whole local distributed stack (Kafka and the database must already run).",
    ),
    "dlq": ("qaloop.cli.dlq", "command", "Inspect and replay dead letters."),
    "report": (
        "qaloop.cli.report",
        "command",
        "Write report.md and report.html with PNG plots from the data in storage.",
    ),
    "experiment": (
        "qaloop.cli.experiment",
        "command",
        "Offline experiments: cache policies, synchronous vs asynchronous.",
    ),
    "keys": (
        "qaloop.cli.admin",
        "keys",
        "Create and revoke API keys (stored hashed: the key is shown once).",
    ),
    "reset": (
        "qaloop.cli.admin",
        "reset",
        "Ask the failed question QUESTION_ID again (a new run).",
    ),
}

# Kept for callers that listed the modules (tests, docs): every module a command lives in.
COMMAND_MODULES = sorted({module for module, _, _ in COMMANDS.values()})


def load_command(name: str) -> click.Command:
    module_name, attribute, _ = COMMANDS[name]
    module = importlib.import_module(module_name)
    if attribute == "command":
        found: click.Command = module.command
        return found
    for command in module.commands:
        if command.name == attribute:
            return command  # type: ignore[no-any-return]
    raise LookupError(f"{module_name} has no command {attribute!r}")


class LazyCommands(dict[str, click.Command]):
    """`group.commands` that loads a command when it is looked up, so code (and tests) that
    read `main.commands[...]` still see every command."""

    def __missing__(self, name: str) -> click.Command:
        if name not in COMMANDS:
            raise KeyError(name)
        command = load_command(name)
        self[name] = command
        return command

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        try:
            return self[name]
        except KeyError:
            return default

    def __contains__(self, name: object) -> bool:
        return dict.__contains__(self, name) or name in COMMANDS

    def names(self) -> list[str]:
        return sorted({*COMMANDS, *dict.keys(self)})

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def keys(self) -> Any:
        return self.names()

    def values(self) -> Any:
        return [self[name] for name in self.names()]

    def items(self) -> Any:
        return [(name, self[name]) for name in self.names()]


class LazyGroup(click.Group):
    """Imports a command's module only when that command runs (or its own --help)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands = LazyCommands(self.commands)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return self.commands.names() if isinstance(self.commands, LazyCommands) else []

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        loaded = dict.__contains__(self.commands, cmd_name)  # type: ignore[arg-type]
        if cmd_name in COMMANDS and not loaded and (ctx.resilient_parsing or _listing(ctx)):
            return _Summary(cmd_name, COMMANDS[cmd_name][2])
        command: click.Command | None = self.commands.get(cmd_name)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        from qaloop.cli.errors import explain

        with explain():
            return super().invoke(ctx)


class _Summary(click.Command):
    """Stands in for a command in `qaloop --help`'s listing, without importing it."""

    def __init__(self, name: str, summary: str) -> None:
        super().__init__(name, short_help=summary)


def _listing(ctx: click.Context) -> bool:
    # format_commands asks for every command while printing the group's own help.
    return getattr(ctx, "_qaloop_listing", False)  # type: ignore[no-any-return]


class _Main(LazyGroup):
    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        ctx._qaloop_listing = True  # type: ignore[attr-defined]
        try:
            super().format_commands(ctx, formatter)
        finally:
            ctx._qaloop_listing = False  # type: ignore[attr-defined]


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="qaloop")
def main() -> None:
    """qaloop: answer questions with an LLM, asynchronously, behind a quality gate."""
