"""`qaloop keys add|revoke` (API keys, docs/security.md) and `qaloop reset` (ask a failed
question again, in either mode)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping

import click
import httpx

from qaloop.cli.common import build_settings
from qaloop.gateway.auth import ApiKey, db_add_key, db_revoke_key, format_key, hash_token, new_token
from qaloop.storage.base import Resettable
from qaloop.storage.factory import open_repository


@click.group("keys")
def keys() -> None:
    """Create and revoke API keys (stored hashed: the key is shown once)."""


@keys.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(["user", "admin"]), default="user", show_default=True)
@click.option("--rate", type=float, default=None, help="Requests per second (token bucket)")
@click.option("--burst", type=float, default=None, help="Requests at once after idling")
@click.option("--quota", type=int, default=None, help="New questions per day (0 = none)")
@click.option("--file", "path", default=None, help="Append to this keys file")
@click.option("--db", default=None, help="Or store in this database's api_keys table")
def add_key(
    name: str,
    role: str,
    rate: float | None,
    burst: float | None,
    quota: int | None,
    path: str | None,
    db: str | None,
) -> None:
    """Create a key NAME; prints the key (once) on stdout."""
    if (path is None) == (db is None):
        raise click.UsageError("give exactly one of --file or --db")
    token = new_token()
    key = ApiKey(name, hash_token(token), role, rate, burst, quota)  # type: ignore[arg-type]
    try:
        if path is not None:
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(format_key(key) + "\n")
        else:
            assert db is not None
            db_add_key(db, key)
    except Exception as exc:
        raise click.ClickException(f"cannot store the key: {exc}") from None
    click.echo(token)


@keys.command("revoke")
@click.argument("name")
@click.option("--file", "path", default=None, help="The keys file")
@click.option("--db", default=None, help="Or this database's api_keys table")
def revoke_key(name: str, path: str | None, db: str | None) -> None:
    """Revoke key NAME (gateways notice within seconds)."""
    if (path is None) == (db is None):
        raise click.UsageError("give exactly one of --file or --db")
    if db is not None:
        if not db_revoke_key(db, name):
            raise click.ClickException(f"no key named {name!r}")
        click.echo(f"revoked {name}")
        return
    assert path is not None
    with open(path, encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    found = False
    for i, line in enumerate(lines):
        fields = line.split("#", 1)[0].split()
        if fields and fields[0] == name and "revoked" not in fields:
            lines[i] = line.rstrip() + "  revoked"
            found = True
    if not found:
        raise click.ClickException(f"no active key named {name!r} in {path}")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    click.echo(f"revoked {name}")


def admin_call(
    url: str,
    method: str,
    path: str,
    key_file: str | None,
    body: Mapping[str, object] | None = None,
    expect: int = 200,
) -> httpx.Response:
    """One call to a running gateway's admin route (`--url`, `--key-file`); any other answer
    than `expect` is a one-line error with the gateway's message."""
    headers = {}
    if key_file:
        try:
            with open(key_file, encoding="utf-8") as fh:
                headers["Authorization"] = f"Bearer {fh.read().strip()}"
        except OSError as exc:
            raise click.ClickException(f"cannot read --key-file: {exc}") from None
    try:
        r = httpx.request(
            method, f"{url.rstrip('/')}{path}", json=body, headers=headers, timeout=60
        )
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach {url}: {exc}") from None
    if r.status_code != expect:
        try:
            message = r.json()["error"]["message"]
        except Exception:
            message = r.text[:200]
        raise click.ClickException(f"{r.status_code}: {message}")
    return r


@click.command("reset")
@click.argument("question_id")
@click.option("--url", default=None, help="A running gateway (its admin endpoint)")
@click.option("--key-file", default=None, help="File holding an admin API key (with --url)")
@click.option("--db", default=None, help="Or the storage URL (gateway stopped, or distributed)")
@click.option("--bus", default=None, help="memory (embedded: resumed at next start) | kafka")
@click.option("--reference", default=None, help="Replace the reference answer")
def reset(
    question_id: str,
    url: str | None,
    key_file: str | None,
    db: str | None,
    bus: str | None,
    reference: str | None,
) -> None:
    """Ask the failed question QUESTION_ID again (a new run)."""
    if url is not None:
        body = {} if reference is None else {"reference_answer": reference}
        admin_call(url, "POST", f"/v1/admin/questions/{question_id}/reset", key_file, body, 202)
        click.echo(f"{question_id}: queued again")
        return
    settings = build_settings(db=db, bus=bus)
    asyncio.run(_reset_in_storage(settings.db, settings, question_id, reference))


async def _reset_in_storage(url: str, settings: object, qid: str, reference: str | None) -> None:
    from qaloop.cli.serve import sqlite_path
    from qaloop.settings import Settings
    from qaloop.storage.sqlite import DatabaseLock, DatabaseLocked

    assert isinstance(settings, Settings)
    lock = None
    path = sqlite_path(url)
    if path is not None and settings.bus == "memory":
        try:  # a running `qaloop serve` owns it: go through its endpoint instead
            lock = DatabaseLock(path).acquire()
        except DatabaseLocked as exc:
            raise click.ClickException(f"{exc}: use --url of that gateway") from None
    repo = open_repository(url)
    try:
        if not isinstance(repo, Resettable):
            raise click.ClickException("this storage cannot reset questions")
        current = repo.get(qid)
        if current is None:
            raise click.ClickException(f"no question with id {qid!r}")
        new = repo.reset_failed(
            qid,
            at=time.time(),
            trace_id=uuid.uuid4().hex,
            reference_answer=reference if reference is not None else current.reference_answer,
            by="admin (qaloop reset)",
        )
        if new is None:
            raise click.ClickException(f"question {qid} is {current.state.value}, not failed")
        if settings.bus == "kafka":
            from qaloop.core.wire import out
            from qaloop.distributed import make_bus
            from qaloop.wiring import topics_for

            kafka = make_bus(settings)
            await kafka.start()
            try:
                await kafka.publish_many([out(topics_for(settings).questions, new)])
            finally:
                await kafka.close()
            click.echo(f"{qid}: queued again")
        else:
            click.echo(f"{qid}: queued again (runs when `qaloop serve` starts on this database)")
    finally:
        repo.close()
        if lock is not None:
            lock.release()


commands = [keys, reset]
