"""Build the configured repository from its URL (the only place that knows every adapter;
kept out of storage.base so the adapters can import the interface without a cycle)."""

from __future__ import annotations

from qaloop.storage.base import Repository


def open_repository(url: str) -> Repository:
    """`sqlite:///path.db`, `sqlite://:memory:` or a plain path; `postgresql://...`."""
    if url.startswith(("postgresql://", "postgres://")):
        from qaloop.storage.postgres import PostgresRepository  # optional dependency

        return PostgresRepository(url)
    from qaloop.storage.sqlite import SQLiteRepository

    path = url.removeprefix("sqlite:///").removeprefix("sqlite://")
    return SQLiteRepository(path or ":memory:")
