"""One-dimensional PostgreSQL arrays in the binary wire format, built for a whole column at once.

The set-based writes of the PostgreSQL repository send each column of a batch as one array
parameter and unnest them on the server. psycopg's list dumper works element by element in
Python (~0.3-1 µs per number: it picks a type from the values first); a column of numbers here
is one struct.pack call, and text/bytes one join. The format (PostgreSQL's array_recv): ndim,
has-null flag, element type oid, then per dimension its length and lower bound; then each
element as a 4-byte length (-1: NULL) and its bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.adapt import AdaptersMap, Dumper
from psycopg.pq import Format

_HEAD = struct.Struct(">iiIii")
_LENGTH = struct.Struct(">i").pack
_NULL = _LENGTH(-1)

# element type -> (element oid, array oid, struct code and size of a fixed-size element)
_TYPES: dict[str, tuple[int, int, str, int]] = {
    "text": (25, 1009, "", 0),
    "bytea": (17, 1001, "", 0),
    "int4": (23, 1007, "i", 4),
    "float8": (701, 1022, "d", 8),
    "bool": (16, 1000, "?", 1),
}
_packers: dict[tuple[str, int], struct.Struct] = {}


class PgArray:
    """An encoded array parameter (`data`: the binary format); a subclass per element type
    tells psycopg the array's type oid."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class _ArrayDumper(Dumper):
    format = Format.BINARY

    def dump(self, obj: Any) -> bytes:
        data: bytes = obj.data
        return data


_CLASSES: dict[str, type[PgArray]] = {}
_DUMPERS: list[tuple[type[PgArray], type[Dumper]]] = []
for _element, _spec in _TYPES.items():
    _cls = type(f"PgArray_{_element}", (PgArray,), {"__slots__": ()})
    _CLASSES[_element] = _cls
    _DUMPERS.append((_cls, type(f"_ArrayDumper_{_element}", (_ArrayDumper,), {"oid": _spec[1]})))


def adapters() -> AdaptersMap:
    """psycopg's adapters plus the dumpers of the PgArray classes (a connection's `context`)."""
    context = AdaptersMap(psycopg.adapters)
    for cls, dumper in _DUMPERS:
        context.register_dumper(cls, dumper)
    return context


def encode_array(values: Sequence[Any], element: str) -> PgArray:
    """`values` (None = NULL) as an array of `element` (text, bytea, int4, float8, bool).
    Numbers go through struct (an int in a float8 column becomes a float; an int4 out of range
    raises struct.error), text is UTF-8."""
    element_oid, _, code, size = _TYPES[element]
    n = len(values)
    nulls = values.count(None)
    head = _HEAD.pack(1, int(nulls > 0), element_oid, n, 1)
    if nulls == n:
        return _CLASSES[element](head + _NULL * n)
    # map() over C functions: no Python bytecode per element where a column has no NULL
    if code:
        if nulls:
            one = struct.Struct(">i" + code).pack
            body = b"".join(_NULL if v is None else one(size, v) for v in values)
        else:
            items: list[Any] = [size, None] * n
            items[1::2] = values
            body = _packer(code, n).pack(*items)
        return _CLASSES[element](head + body)
    raw: Sequence[Any]
    if element == "text":
        raw = (
            list(map(str.encode, values))
            if not nulls
            else [None if v is None else v.encode() for v in values]
        )
    else:
        raw = values
    parts: list[bytes] = [b""] * (2 * n)
    if nulls:
        parts[0::2] = [_NULL if b is None else _LENGTH(len(b)) for b in raw]
        parts[1::2] = [b or b"" for b in raw]
    else:
        parts[0::2] = map(_LENGTH, map(len, raw))
        parts[1::2] = raw
    return _CLASSES[element](head + b"".join(parts))


def _packer(code: str, n: int) -> struct.Struct:
    """The struct of n (length, number) pairs, kept for the batch sizes seen (a batch has at
    most a few thousand rows; past 4,096 formats the cache starts again)."""
    packer = _packers.get((code, n))
    if packer is None:
        if len(_packers) >= 4096:
            _packers.clear()
        packer = _packers[(code, n)] = struct.Struct(">" + ("i" + code) * n)
    return packer
