"""A spend ledger shared by every worker process, kept in PostgreSQL (`qaloop_llm_spend`,
one row per scope and period). A charge is one upsert that adds and returns the new total;
a check is one SELECT. Like the shared rate limit (qaloop.llm.ratelimit_pg), an unreachable
database fails closed: the check raises ServerError (the worker backs off and parks) rather
than let calls run past a budget unseen. A failed charge is logged and dropped."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from qaloop.llm.base import ServerError

log = logging.getLogger(__name__)

TABLE = "qaloop_llm_spend"
_LOCK_ID = 0x71A1016  # advisory lock that serialises CREATE TABLE across processes
_DDL = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    scope text NOT NULL,
    period_start double precision NOT NULL,
    spent_usd double precision NOT NULL,
    PRIMARY KEY (scope, period_start)
)
"""


class PostgresLedger:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._conn: Any = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:  # the DSN may carry a password
        return "PostgresLedger()"

    async def _connection(self) -> Any:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        import psycopg

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
                log.debug("closing a broken spend-ledger connection failed", exc_info=True)

    async def spent(self, scopes: Sequence[str], period_start: float) -> dict[str, float]:
        async with self._lock:
            try:
                conn = await self._connection()
                cur = await conn.execute(
                    f"SELECT scope, spent_usd FROM {TABLE} "
                    "WHERE scope = ANY(%s) AND period_start = %s",
                    (list(scopes), period_start),
                )
                rows = await cur.fetchall()
            except Exception as exc:  # fail closed
                await self._drop()
                raise ServerError(f"shared spend ledger unavailable: {type(exc).__name__}") from exc
        found = {str(s): float(v) for s, v in rows}
        return {s: found.get(s, 0.0) for s in scopes}

    async def charge(
        self, scopes: Sequence[str], usd: float, period_start: float
    ) -> dict[str, float]:
        totals: dict[str, float] = {}
        async with self._lock:
            try:
                conn = await self._connection()
                for scope in sorted(scopes):  # one order: no deadlock between processes
                    cur = await conn.execute(
                        f"INSERT INTO {TABLE} (scope, period_start, spent_usd) VALUES (%s, %s, %s) "
                        f"ON CONFLICT (scope, period_start) DO UPDATE "
                        f"SET spent_usd = {TABLE}.spent_usd + EXCLUDED.spent_usd "
                        "RETURNING spent_usd",
                        (scope, period_start, usd),
                    )
                    totals[scope] = float((await cur.fetchone())[0])
            except Exception:  # the answer is already paid for; don't lose it over a counter
                log.warning("budget: could not charge %.6f USD to %s", usd, scopes, exc_info=True)
                await self._drop()
                return {s: totals.get(s, 0.0) for s in scopes}
        return totals

    async def reset(self, scopes: Sequence[str]) -> None:
        """Forget these scopes' spend (tests)."""
        async with self._lock:
            conn = await self._connection()
            await conn.execute(f"DELETE FROM {TABLE} WHERE scope = ANY(%s)", (list(scopes),))

    async def aclose(self) -> None:
        await self._drop()
