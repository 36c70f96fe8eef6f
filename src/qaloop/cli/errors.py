"""Errors a user can cause, as one line each: what is wrong and what to do (exit code 1).

Three places turn them into `click.ClickException`:
- `settings_error`: a pydantic ValidationError of Settings, named by the flag the user passed
  or the QALOOP_* variable that set it, without pydantic's links;
- `storage_problem`: a storage URL checked before anything opens it (scheme, the extra it
  needs, a directory that exists and can be written, a file that must already exist);
- `explain`: the edge around every command, for what only shows once running (an optional
  extra not installed, a server not reachable, SQLite refusing a file).
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import click

# top-level module -> the extra of pyproject.toml that installs it
EXTRAS = {
    "psycopg": "postgres",
    "psycopg_pool": "postgres",
    "confluent_kafka": "kafka",
    "matplotlib": "report",
    "google": "gemini",
    "onnxruntime": "embeddings",
    "tokenizers": "embeddings",
    "numpy": "embeddings",
    "pyflink": "flink (make flink-venv)",
}


def install_hint(module: str) -> str | None:
    extra = EXTRAS.get(module.split(".")[0])
    if extra is None:
        return None
    if " " in extra:
        return extra
    return f"pip install 'qaloop[{extra}]'"


def settings_error(exc: Any, given: Mapping[str, object]) -> click.ClickException:
    """One line per invalid field; flags the user typed are named as flags."""
    parts = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error.get("loc") else None
        if field is None:  # a check across fields: its input is every setting, secrets too
            where = "settings"
        elif field in given:
            where = f"--{field.replace('_', '-')} {given[field]!s}"
        else:
            where = f"QALOOP_{field.upper()}={error.get('input')!s}"
        message = str(error.get("msg", "invalid value"))
        ctx = error.get("ctx") or {}
        if error.get("type") == "literal_error" and "expected" in ctx:
            message = f"expected one of {ctx['expected']}"
        parts.append(f"invalid {where}: {message}")
    return click.ClickException("; ".join(parts))


def _sqlite_path(url: str) -> str | None:
    if url.startswith(("postgresql://", "postgres://")):
        return None
    path = url.removeprefix("sqlite:///").removeprefix("sqlite://")
    return None if path in ("", ":memory:") else path


def storage_problem(url: str, *, must_exist: bool = False, files: bool = True) -> str | None:
    """Why `url` can't be opened as storage, in one line (or None if it looks fine); with
    files=False only the URL itself and the installed extras are checked."""
    redacted = redact(url)
    if "://" in url and not url.startswith(("sqlite://", "postgresql://", "postgres://")):
        scheme = url.split("://", 1)[0]
        return (
            f"unknown storage URL {redacted!r} (scheme {scheme!r}): use sqlite:///path.db "
            "or postgresql://user@host:port/db"
        )
    if url.startswith(("postgresql://", "postgres://")):
        if find_spec("psycopg") is None or find_spec("psycopg_pool") is None:
            return "PostgreSQL storage needs the postgres extra: pip install 'qaloop[postgres]'"
        return _postgres_problem(url) if files else None
    path = _sqlite_path(url)
    if path is None or not files:
        return None
    file = Path(path)
    if must_exist and not file.is_file():
        return (
            f"no database at {path} (nothing was created): check --db / QALOOP_DB, e.g. "
            "the sqlite:///qaloop.db that `qaloop serve` writes in its working directory"
        )
    if file.is_dir():
        return f"{path} is a directory, not a SQLite database file: give a file path to --db"
    parent = file.parent if str(file.parent) else Path(".")
    if not file.exists():
        if not parent.is_dir():
            return f"directory {parent} does not exist: create it or choose another --db path"
        if not _can_create_in(parent):
            return (
                f"cannot create {path}: directory {parent} is not writable; "
                "choose another --db path"
            )
    elif not must_exist and not os.access(file, os.W_OK):
        return f"database {path} is read-only: fix its permissions or choose another --db path"
    return None


def _postgres_problem(url: str) -> str | None:
    """One connection first: the pool would retry a wrong role or database for 30 s and then
    call it "not reachable"; the server's own first line says what is wrong."""
    import psycopg

    try:
        psycopg.connect(url, connect_timeout=5).close()
    except psycopg.Error as exc:
        text = " ".join(str(exc).split())
        return f"PostgreSQL at {redact(url)}: {text} (check --db / QALOOP_DB)"
    return None


def _can_create_in(directory: Path) -> bool:
    """Try it (os.access says yes to root, and to /proc): create and remove a probe file."""
    try:
        fd, name = tempfile.mkstemp(dir=directory, prefix=".qaloop-probe-")
    except OSError:
        return False
    os.close(fd)
    os.unlink(name)
    return True


def check_storage(url: str, *, must_exist: bool = False) -> None:
    problem = storage_problem(url, must_exist=must_exist)
    if problem is not None:
        raise click.ClickException(problem)


def check_port(host: str, port: int) -> None:
    """Refuse a port that is taken before anything starts (uvicorn would say "[Errno 98]")."""
    import socket

    if port == 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise click.ClickException(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}; stop what holds it or "
                "choose another --port"
            ) from None


def redact(url: str) -> str:
    """Never print a password that may sit in a database URL."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return url


@contextmanager
def explain() -> Iterator[None]:
    """Turn the errors a user can cause while a command runs into one-line CLI errors."""
    try:
        yield
    except ModuleNotFoundError as exc:
        hint = install_hint(exc.name or "")
        if hint is None:
            raise
        raise click.ClickException(
            f"this needs {exc.name}, which is not installed: {hint}"
        ) from exc
    except sqlite3.OperationalError as exc:
        raise click.ClickException(
            f"SQLite: {exc} (check that the --db / QALOOP_DB file's directory exists and is "
            "writable)"
        ) from exc
    except ConnectionError as exc:
        text = str(exc) or type(exc).__name__
        raise click.ClickException(
            f"{text}: is the server running? (`scripts/infra status`; `scripts/infra up` "
            "starts Kafka and PostgreSQL)"
        ) from exc
    except OSError as exc:
        if exc.filename is None:
            raise
        raise click.ClickException(f"{exc.strerror or exc}: {exc.filename}") from exc
    except Exception as exc:
        server = _server_error(exc)
        if server is None:
            raise
        raise click.ClickException(server) from exc


def _server_error(exc: Exception) -> str | None:
    """A Kafka or PostgreSQL client error (their libraries are optional: matched by module)."""
    module = type(exc).__module__ or ""
    if module.startswith(("confluent_kafka", "cimpl")):
        detail = exc.args[0].str() if exc.args and hasattr(exc.args[0], "str") else str(exc)
        return (
            f"Kafka: {detail}: is the broker at --kafka-bootstrap / QALOOP_KAFKA_BOOTSTRAP "
            "running? (`scripts/infra status`)"
        )
    if module.startswith("psycopg"):
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"PostgreSQL: {first} (check --db / QALOOP_DB; `scripts/infra status`)"
    return None
