"""`qaloop dlq list|replay`: inspect and re-inject dead letters (the repository's dead_letters
table, which the storage consumer fills from the dead-letter topic).

What a replay does with each letter is qaloop.services.recovery.plan_replay (the gateway's
`POST /v1/admin/dead-letters/replay` runs the same code, in either mode); this command
publishes to Kafka.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import click
import orjson

from qaloop.bus.base import Bus, Topics
from qaloop.cli.common import build_settings, open_storage
from qaloop.services.recovery import ReplayStep, letter_row, plan_replays, replay_dead_letters
from qaloop.storage.base import DeadLetter, Repository


async def _replay(
    bus: Bus, repo: Repository, topics: Topics, letters: Sequence[DeadLetter], *, force: bool
) -> list[ReplayStep]:
    await bus.start()
    try:
        return await replay_dead_letters(repo, bus, topics, letters, force=force)
    finally:
        await bus.close()


def _replay_through(
    url: str,
    key_file: str | None,
    keys: tuple[str, ...],
    replay_all: bool,
    *,
    force: bool,
    dry_run: bool,
) -> None:
    from qaloop.cli.admin import admin_call

    body: dict[str, object] = {"force": force, "dry_run": dry_run}
    body.update({"keys": list(keys)} if keys else {"all": replay_all})
    result = admin_call(url, "POST", "/v1/admin/dead-letters/replay", key_file, body).json()
    for step in result["results"]:
        click.echo(f"{step['key']}  {step['action']:<6}  {step['detail']}")
    if dry_run:
        click.echo(f"{result['would_replay']} to replay (dry run)")
    else:
        click.echo(f"replayed {result['replayed']} dead letters")


@click.group("dlq")
def command() -> None:
    """Inspect and replay dead letters."""


@command.command("list")
@click.option("--db", default=None, help="Storage URL [QALOOP_DB]")
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--all", "include_replayed", is_flag=True, help="Include replayed letters")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line")
def list_command(db: str | None, limit: int, include_replayed: bool, as_json: bool) -> None:
    """List dead letters, oldest first, with the reason each was rejected."""
    settings = build_settings(db=db)
    repo = open_storage(settings.db, must_exist=True)
    try:
        letters = repo.dead_letters(limit=limit, include_replayed=include_replayed)
    finally:
        repo.close()
    if as_json:
        for letter in letters:
            click.echo(orjson.dumps(letter_row(letter)).decode())
        return
    if not letters:
        click.echo(
            "no dead letters"
            if include_replayed
            else "no dead letters waiting for a replay (--all lists replayed ones too)"
        )
        return
    for letter in letters:
        row = letter_row(letter)
        mark = " [replayed]" if letter.replayed else ""
        click.echo(
            f"{row['key']}  {row['at']}  {row['source_topic']}  "
            f"{row['question_id'] or '-'}  {row['reason']}{mark}"
        )


@command.command("replay")
@click.argument("keys", nargs=-1)
@click.option("--all", "replay_all", is_flag=True, help="Every dead letter not yet replayed")
@click.option("--force", is_flag=True, help="Also re-run questions already final in storage")
@click.option("--dry-run", is_flag=True, help="Say what would be replayed; change nothing")
@click.option("--db", default=None, help="Storage URL [QALOOP_DB]")
@click.option("--bus", default=None, help="Message bus: kafka [QALOOP_BUS]")
@click.option("--kafka-bootstrap", default=None, help="Kafka bootstrap servers")
@click.option("--topic-prefix", default=None, help="Prefix of every topic name")
@click.option("--url", default=None, help="Or a running gateway (its admin route; either mode)")
@click.option("--key-file", default=None, help="File holding an admin API key (with --url)")
def replay_command(
    keys: tuple[str, ...],
    replay_all: bool,
    force: bool,
    dry_run: bool,
    url: str | None,
    key_file: str | None,
    **flags: Any,
) -> None:
    """Re-publish dead letters (by KEY, or --all) and mark them replayed."""
    from qaloop.distributed import make_bus
    from qaloop.wiring import topics_for

    if not keys and not replay_all:
        raise click.UsageError("give dead-letter KEYs (see `qaloop dlq list`) or --all")
    if url is not None:  # the gateway publishes on its own bus: embedded mode too
        _replay_through(url, key_file, keys, replay_all, force=force, dry_run=dry_run)
        return
    settings = build_settings(**flags)
    # No bus named (memory, the default): replays go to Kafka, except for an embedded (SQLite)
    # database, whose stages run inside `qaloop serve` (below).
    embedded = settings.bus == "memory"
    if embedded:
        settings = build_settings(**{**flags, "bus": "kafka"})
    topics = topics_for(settings)
    if not dry_run:
        from qaloop.cli.errors import install_hint
        from qaloop.cli.serve import sqlite_path

        try:
            import confluent_kafka  # noqa: F401  (before anything is read or marked)
        except ImportError:
            raise click.ClickException(
                f"replaying publishes to Kafka, which needs the kafka extra: "
                f"{install_hint('confluent_kafka')} (or use --dry-run)"
            ) from None
        if embedded and sqlite_path(settings.db) is not None:
            # Embedded: the stages run inside `qaloop serve`, on its in-process bus.
            raise click.ClickException(
                f"{settings.db} is an embedded database: replay through its running gateway "
                "with --url <its address> (or --bus kafka if a distributed stack uses it)"
            )
    repo = open_storage(settings.db, must_exist=True)
    try:
        if keys:
            wanted = set(keys)
            letters = repo.dead_letters_by_key(sorted(wanted))
            missing = wanted - {letter.dedup_key for letter in letters}
            if missing:
                raise click.ClickException(f"no dead letter with key {', '.join(sorted(missing))}")
        else:
            letters = repo.dead_letters(limit=1_000_000)
        if dry_run:  # says what would happen: no bus
            steps = plan_replays(letters, topics, repo, force=force)
        else:
            try:
                steps = asyncio.run(_replay(make_bus(settings), repo, topics, letters, force=force))
            except ValueError as exc:
                raise click.ClickException(str(exc)) from exc
        for step in steps:
            click.echo(f"{step.key}  {'replay' if step.message else 'skip  '}  {step.why}")
        planned = sum(step.message is not None for step in steps)
        if dry_run or not planned:
            click.echo(f"{planned} to replay" + (" (dry run)" if dry_run else ""))
            return
        click.echo(f"replayed {planned} dead letters")
    finally:
        repo.close()
