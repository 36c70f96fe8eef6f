"""Settings for tests against the real Kafka broker and PostgreSQL: one topic prefix and one
fresh schema per call, every schema dropped after the test."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from qaloop.settings import Settings
from tests.e2e.distributed_stack import pg_schema, require_servers

StackSettings = Callable[..., Settings]


@pytest.fixture
def stack_settings() -> Iterator[StackSettings]:
    """`stack_settings(**overrides)`: Settings on the shared servers (skips without them), a
    fresh topic prefix and a fresh schema (the DSN's search_path) each time it is called."""
    bootstrap, pg = require_servers()
    with contextlib.ExitStack() as schemas:

        def make(**overrides: Any) -> Settings:
            _, db = schemas.enter_context(pg_schema(pg))
            fields: dict[str, Any] = {
                "bus": "kafka",
                "kafka_bootstrap": bootstrap,
                "topic_prefix": f"t{uuid.uuid4().hex[:10]}",
                "kafka_partitions": 1,
                "db": db,
            }
            return Settings(**(fields | overrides))

        yield make
