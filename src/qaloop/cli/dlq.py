"""`qaloop dlq list|replay`: inspect and re-inject dead letters (the repository's dead_letters
table, which the storage consumer fills from the dead-letter topic).

Replay puts a dead letter back where it can be handled again and marks it replayed:
- a poison message (bytes a stage could not read or handle): its original bytes, to the topic
  it came from;
- an unfinished question's envelope: to the topic its state says (as after a restart);
- a question storage already holds as final (it gave up): skipped unless --force, because
  storage keeps a question's first final state, so a new run changes only its history.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from typing import Any

import click
import orjson

from qaloop.bus.base import Bus, OutMessage, Topics
from qaloop.cli.common import build_settings, open_storage
from qaloop.core import codec
from qaloop.core.model import QuestionState
from qaloop.services.recovery import resume_message
from qaloop.storage.base import DeadLetter, Repository


def _iso(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def letter_row(letter: DeadLetter) -> dict[str, Any]:
    return {
        "key": letter.dedup_key,
        "at": _iso(letter.at),
        "source_topic": letter.source_topic,
        "question_id": letter.question_id,
        "reason": letter.reason,
        "bytes": None if letter.raw is None else len(letter.raw),
        "replayed": letter.replayed,
    }


def plan_replay(
    letter: DeadLetter, topics: Topics, repo: Repository, *, force: bool
) -> tuple[OutMessage | None, str]:
    """The message that re-injects `letter` (or None) and a one-line explanation."""
    if letter.raw is None:
        return None, "no payload recorded"
    if letter.source_topic != topics.dead_letter:  # poison: original bytes, original topic
        return (
            OutMessage(
                letter.source_topic,
                letter.question_id or "",
                letter.raw,
                {"qaloop-replayed-from": letter.dedup_key},
            ),
            f"raw bytes -> {letter.source_topic}",
        )
    try:
        envelope = codec.decode(letter.raw)
    except codec.InvalidMessage as exc:
        return None, f"undecodable and without a source topic: {exc}"
    record = repo.get(envelope.question_id)
    final = record is not None and record.state.is_final
    if final and not force:
        assert record is not None
        return None, f"question is {record.state.value} in storage (use --force to re-run it)"
    if envelope.state.is_final or final:
        envelope = envelope.evolve(state=QuestionState.QUEUED, due_at=None)
    message = resume_message(envelope, topics)
    headers = {**message.headers, "qaloop-replayed-from": letter.dedup_key}
    return OutMessage(message.topic, message.key, message.value, headers), f"-> {message.topic}"


async def _publish(bus: Bus, messages: Sequence[OutMessage]) -> None:
    await bus.start()
    try:
        await bus.publish_many(messages)
    finally:
        await bus.close()


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
def replay_command(
    keys: tuple[str, ...], replay_all: bool, force: bool, dry_run: bool, **flags: Any
) -> None:
    """Re-publish dead letters (by KEY, or --all) and mark them replayed."""
    from qaloop.distributed import make_bus
    from qaloop.wiring import topics_for

    if not keys and not replay_all:
        raise click.UsageError("give dead-letter KEYs (see `qaloop dlq list`) or --all")
    if flags.get("bus") is None:
        flags["bus"] = "kafka"
    settings = build_settings(**flags)
    topics = topics_for(settings)
    if not dry_run:
        from qaloop.cli.errors import install_hint

        try:
            import confluent_kafka  # noqa: F401  (before anything is read or marked)
        except ImportError:
            raise click.ClickException(
                f"replaying publishes to Kafka, which needs the kafka extra: "
                f"{install_hint('confluent_kafka')} (or use --dry-run)"
            ) from None
    repo = open_storage(settings.db, must_exist=True)
    try:
        letters = repo.dead_letters(limit=1_000_000, include_replayed=bool(keys))
        if keys:
            wanted = set(keys)
            letters = [letter for letter in letters if letter.dedup_key in wanted]
            missing = wanted - {letter.dedup_key for letter in letters}
            if missing:
                raise click.ClickException(f"no dead letter with key {', '.join(sorted(missing))}")
        planned: list[tuple[DeadLetter, OutMessage]] = []
        for letter in letters:
            message, why = plan_replay(letter, topics, repo, force=force)
            click.echo(f"{letter.dedup_key}  {'replay' if message else 'skip  '}  {why}")
            if message is not None:
                planned.append((letter, message))
        if dry_run or not planned:
            click.echo(f"{len(planned)} to replay" + (" (dry run)" if dry_run else ""))
            return
        try:
            asyncio.run(_publish(make_bus(settings), [m for _, m in planned]))
        except ValueError as exc:
            raise click.ClickException(str(exc)) from exc
        repo.mark_replayed([letter.dedup_key for letter, _ in planned])
        click.echo(f"replayed {len(planned)} dead letters")
    finally:
        repo.close()
