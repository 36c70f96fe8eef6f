"""A rate limiter shared by every worker process, its buckets kept in PostgreSQL.

One row per (key, bucket) in `qaloop_llm_rate`. A reservation is one short transaction:
lock the key's rows (`SELECT ... FOR UPDATE`, always in bucket-name order, so two processes
never deadlock), apply the same pure token-bucket arithmetic as the in-process limiter
(qaloop.llm.protection.reserve_all) and write the rows back. Time is the database's
`clock_timestamp()`, so processes on machines with skewed clocks still share one timeline.

Why PostgreSQL rather than Redis: the distributed mode already runs PostgreSQL for storage, so
this adds no server to deploy, secure and monitor; a reservation is ~3 round trips on a row
lock, good for thousands per second, far above any LLM quota (Gemini's free tier is 15 RPM;
paid tiers a few thousand). If the database is unreachable the limiter fails closed
(ServerError: the worker backs off and parks) rather than open: a quota overrun costs money or
a day's lockout, a short stall costs nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from qaloop.llm.base import ServerError
from qaloop.llm.protection import BucketState, Limit, Reservation, refill, reserve_all

log = logging.getLogger(__name__)

TABLE = "qaloop_llm_rate"
_LOCK_ID = 0x71A1007  # advisory lock that serialises CREATE TABLE across processes

_DDL = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    key text NOT NULL,
    bucket text NOT NULL,
    tokens double precision NOT NULL,
    updated_at double precision NOT NULL,
    PRIMARY KEY (key, bucket)
)
"""


class PostgresRateLimiter:
    def __init__(self, dsn: str, key: str, limits: Sequence[Limit]) -> None:
        self.dsn = dsn
        self.key = key
        self.limits = sorted(limits, key=lambda lim: lim.name)
        self._by_name = {lim.name: lim for lim in self.limits}
        self._conn: Any = None  # psycopg.AsyncConnection, opened lazily
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:  # the DSN may carry a password: never show it
        return f"PostgresRateLimiter(key={self.key!r}, limits={[x.name for x in self.limits]})"

    async def _connection(self) -> Any:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        import psycopg  # optional extra "postgres"

        conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=False)
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
            await conn.execute(_DDL)
            for lim in self.limits:
                await conn.execute(
                    f"INSERT INTO {TABLE} (key, bucket, tokens, updated_at) "
                    "VALUES (%s, %s, %s, extract(epoch FROM clock_timestamp())) "
                    "ON CONFLICT (key, bucket) DO NOTHING",
                    (self.key, lim.name, lim.burst),
                )
        self._conn = conn
        return conn

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close()
            except Exception:  # already broken
                log.debug("closing a broken rate-limiter connection failed", exc_info=True)

    async def _locked_states(self, conn: Any) -> tuple[dict[str, BucketState], float]:
        cur = await conn.execute(
            f"SELECT bucket, tokens, updated_at, extract(epoch FROM clock_timestamp()) "
            f"FROM {TABLE} WHERE key = %s AND bucket = ANY(%s) ORDER BY bucket FOR UPDATE",
            (self.key, [lim.name for lim in self.limits]),
        )
        rows = await cur.fetchall()
        states = {str(b): BucketState(float(t), float(u)) for b, t, u, _ in rows}
        if rows:
            now = max(float(rows[0][3]), *(s.updated_at for s in states.values()))
        else:
            cur = await conn.execute("SELECT extract(epoch FROM clock_timestamp())")
            now = float((await cur.fetchone())[0])
        for lim in self.limits:  # a bucket row deleted behind our back: start it full
            states.setdefault(lim.name, BucketState(lim.burst, now))
        return states, now

    async def _write(self, conn: Any, states: Mapping[str, BucketState]) -> None:
        async with conn.cursor() as cur:
            await cur.executemany(
                f"INSERT INTO {TABLE} (key, bucket, tokens, updated_at) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (key, bucket) DO UPDATE "
                "SET tokens = EXCLUDED.tokens, updated_at = EXCLUDED.updated_at",
                [(self.key, name, st.tokens, st.updated_at) for name, st in states.items()],
            )

    async def reserve(self, costs: Mapping[str, float], max_wait_s: float) -> Reservation:
        async with self._lock:
            try:
                conn = await self._connection()
                async with conn.transaction():
                    states, now = await self._locked_states(conn)
                    new_states, reservation = reserve_all(
                        states, self.limits, costs, now, max_wait_s
                    )
                    await self._write(conn, new_states)
                return reservation
            except ServerError:
                raise
            except Exception as exc:  # psycopg.Error, OSError: fail closed
                await self._drop()
                raise ServerError(f"shared rate limiter unavailable: {type(exc).__name__}") from exc

    async def adjust(self, name: str, delta: float) -> None:
        lim = self._by_name.get(name)
        if lim is None or delta == 0:
            return
        async with self._lock:
            try:
                conn = await self._connection()
                async with conn.transaction():
                    states, now = await self._locked_states(conn)
                    st = refill(states[name], lim, now)
                    st = BucketState(min(lim.burst, st.tokens - delta), st.updated_at)
                    await self._write(conn, {name: st})
            except Exception:  # best effort: the next reservation still counts requests
                log.warning("could not adjust rate bucket %s by %.0f", name, delta, exc_info=True)
                await self._drop()

    async def reset(self) -> None:
        """Forget this key's buckets (tests and benchmarks start from full buckets)."""
        async with self._lock:
            conn = await self._connection()
            async with conn.transaction():
                await conn.execute(f"DELETE FROM {TABLE} WHERE key = %s", (self.key,))
            await self._drop()

    async def aclose(self) -> None:
        await self._drop()
