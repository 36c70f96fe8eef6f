"""Helpers shared by CLI commands: settings from env + flags, logging setup."""

from __future__ import annotations

import logging
import sys
from typing import Any

import click
from pydantic import ValidationError

from qaloop.observability.logs import JsonFormatter  # extra fields (question_id, ...) too
from qaloop.settings import Settings


def build_settings(**overrides: Any) -> Settings:
    """Environment (QALOOP_*) first, then the flags the user actually passed."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        raise click.ClickException(f"invalid configuration:\n{exc}") from exc


def setup_logging(level: str = "INFO", json_lines: bool = False, prefix: str = "") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter(f"{prefix}%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
