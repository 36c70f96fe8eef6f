"""storage.pg_arrays against PostgreSQL: array_recv reads every encoded column back as the
values it was built from (the columns of tests/unit/storage/test_pg_arrays.py)."""

from __future__ import annotations

import os
from typing import Any

import psycopg
import pytest

from qaloop.storage.pg_arrays import adapters, encode_array
from tests.unit.storage.test_pg_arrays import COLUMNS

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(("element", "values"), COLUMNS)
def test_postgresql_reads_the_values_back(element: str, values: list[Any]) -> None:
    dsn = os.environ.get("QALOOP_PG_DSN")
    if not dsn:
        pytest.skip("no PostgreSQL (QALOOP_PG_DSN)")
    with psycopg.connect(dsn, context=adapters()) as conn:
        (back,) = conn.execute(
            f"SELECT %b::{element}[]", (encode_array(values, element),)
        ).fetchone()  # type: ignore[misc]
    assert [bytes(v) if isinstance(v, memoryview) else v for v in back] == values
