"""Helpers shared by CLI commands: settings from env + flags, logging setup, progress."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from qaloop.cli.errors import check_storage, settings_error, storage_problem

if TYPE_CHECKING:
    from qaloop.settings import Settings
    from qaloop.storage.base import Repository


def build_settings(**overrides: Any) -> Settings:
    """Environment (QALOOP_*) first, then the flags the user actually passed. A bad value
    (or a storage URL qaloop can't open: unknown scheme, extra not installed) is a one-line
    error naming the flag or variable."""
    from pydantic import ValidationError

    from qaloop.settings import Settings

    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        settings = Settings(**given)
    except ValidationError as exc:
        raise settings_error(exc, given) from exc
    problem = storage_problem(settings.db, files=False)
    if problem is not None:
        raise click.ClickException(problem)
    return settings


def open_storage(url: str, *, must_exist: bool = False) -> Repository:
    """The repository at `url`, checked first: a read-only command (`must_exist`) never
    creates an empty database for a mistyped path."""
    check_storage(url, must_exist=must_exist)
    from qaloop.storage.factory import open_repository

    return open_repository(url)


def setup_logging(level: str = "INFO", json_lines: bool = False, prefix: str = "") -> None:
    from qaloop.observability.logs import configure

    configure(level, json_lines=json_lines, prefix=prefix)


class Progress:
    """Progress on stderr: click's bar on a terminal; otherwise a plain line at most every
    `every_s` seconds (and at the end), so piped or logged output shows the run is alive."""

    def __init__(
        self,
        length: int,
        label: str,
        *,
        every_s: float = 5.0,
        tty: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.length = length
        self.label = label
        self.every_s = every_s
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.clock = clock
        self.done = 0
        self._bar: Any = None
        self._started = 0.0
        self._last = 0.0
        self._printed = 0

    def __enter__(self) -> Progress:
        self._started = self._last = self.clock()
        if self.tty:
            self._bar = click.progressbar(
                length=self.length, label=self.label, file=sys.stderr
            ).__enter__()
        return self

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = self.clock()
        if now - self._last >= self.every_s:
            self._last = now
            self._line(now)

    def _line(self, now: float) -> None:
        self._printed = self.done
        total = f"/{self.length}" if self.length else ""
        click.echo(f"{self.label}: {self.done}{total} ({now - self._started:.0f} s)", err=True)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
        elif self.done != self._printed:
            self._line(self.clock())


@contextmanager
def progress(length: int, label: str) -> Iterator[Callable[[], None]]:
    """A progress display on stderr (stdout stays for the results)."""
    with Progress(length, label) as bar:
        yield lambda: bar.update(1)
