"""The per-key quota of new questions, shared by every gateway on one PostgreSQL database
(table `qaloop_key_quota`, one row per key and UTC day), built the way the spend ledger is
(qaloop.llm.budget_pg): one statement per request, no read-then-write race.

A reservation is one conditional upsert: it adds 1 only while the count is below the quota
and returns the new count, so two gateways can never both take the last slot. A request
that turns out not to need its slot (the question was known or already in flight) gives it
back. An unreachable database fails closed: the request gets a 503 (storage is the same
database, so the question could not be accepted anyway).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)

TABLE = "qaloop_key_quota"
_LOCK_ID = 0x71A1017  # advisory lock that serialises CREATE TABLE across processes
_DDL = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    key_name text NOT NULL,
    day bigint NOT NULL,
    used bigint NOT NULL,
    PRIMARY KEY (key_name, day)
)
"""


class PostgresQuota:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._conn: Any = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:  # the DSN may carry a password
        return "PostgresQuota()"

    async def _connection(self) -> Any:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        import psycopg  # optional dependency (the postgres extra)

        conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
            await conn.execute(_DDL)
        self._conn = conn
        return conn

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close()
            except Exception:
                log.debug("closing a broken quota connection failed", exc_info=True)

    async def reserve(self, name: str, day: int, quota: int) -> bool:
        async with self._lock:
            try:
                conn = await self._connection()
                cur = await conn.execute(
                    f"INSERT INTO {TABLE} (key_name, day, used) VALUES (%s, %s, 1) "
                    f"ON CONFLICT (key_name, day) DO UPDATE SET used = {TABLE}.used + 1 "
                    f"WHERE {TABLE}.used < %s RETURNING used",
                    (name, day, quota),
                )
                row = await cur.fetchone()
            except Exception:
                await self._drop()
                raise
        return row is not None

    async def release(self, name: str, day: int) -> None:
        async with self._lock:
            try:
                conn = await self._connection()
                await conn.execute(
                    f"UPDATE {TABLE} SET used = used - 1 WHERE key_name = %s AND day = %s "
                    "AND used > 0",
                    (name, day),
                )
            except Exception:  # the slot stays taken: the key loses one question today
                log.warning("quota: could not give back a slot of key %r", name, exc_info=True)
                await self._drop()

    async def used(self, name: str, day: int) -> int:
        async with self._lock:
            conn = await self._connection()
            cur = await conn.execute(
                f"SELECT used FROM {TABLE} WHERE key_name = %s AND day = %s", (name, day)
            )
            row = await cur.fetchone()
        return 0 if row is None else int(row[0])

    async def aclose(self) -> None:
        await self._drop()
