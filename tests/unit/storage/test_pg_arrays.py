"""storage.pg_arrays: each encoded column is the bytes psycopg's own binary list dumper sends
for an array of that type (checked without a server: a Transformer with no connection). The
round trip through PostgreSQL is tests/integration/test_pg_arrays.py."""

from __future__ import annotations

from typing import Any

import pytest
from psycopg.adapt import PyFormat, Transformer
from psycopg.types.numeric import Int4

from qaloop.storage.pg_arrays import encode_array

COLUMNS: list[tuple[str, list[Any]]] = [
    ("text", ["a", "", "é ünï 字", None, "x" * 300]),
    ("text", [None, None]),
    ("bytea", [b"", b"\x00\xff", None, b"{}" * 800]),
    ("int4", [0, -1, 2**31 - 1, -(2**31)]),
    ("int4", [7, None, 3]),
    ("float8", [0.0, -1.5, 1.7e9 + 0.123456, float("inf")]),
    ("float8", [None, 2.5, None]),
    ("bool", [True, False, None]),
]


def _psycopg_bytes(element: str, values: list[Any]) -> bytes:
    if element == "int4":  # psycopg would pick int2 for small numbers: say int4
        values = [None if v is None else Int4(v) for v in values]
    dumped = Transformer().dump_sequence([values], [PyFormat.BINARY])[0]
    assert dumped is not None
    return bytes(dumped)


@pytest.mark.parametrize(("element", "values"), COLUMNS)
def test_an_array_is_what_psycopg_would_send(element: str, values: list[Any]) -> None:
    encoded = encode_array(values, element).data
    if all(v is None for v in values):  # psycopg can't type it: compare from the lengths on
        assert encoded[:4] == b"\x00\x00\x00\x01" and encoded[12:] == (
            len(values).to_bytes(4, "big") + b"\x00\x00\x00\x01" + b"\xff\xff\xff\xff" * 2
        )
        return
    assert encoded == _psycopg_bytes(element, values)


def test_an_int_in_a_float_column_is_a_float_and_an_out_of_range_int4_raises() -> None:
    assert encode_array([1, 2.5], "float8").data == encode_array([1.0, 2.5], "float8").data
    with pytest.raises(Exception, match="format requires"):
        encode_array([2**31], "int4")
