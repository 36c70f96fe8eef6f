"""The per-key quota of new questions, shared by every gateway on one PostgreSQL database.
It is kept in the spend ledger itself (qaloop.llm.budget_pg: table `qaloop_llm_spend`, one
row per scope and period): scope `quota:<key name>`, period the UTC day, the amount a count
of questions. One table and one connection code for what a key may spend and ask.

A reservation is one conditional upsert: it adds 1 only while the count is below the quota
and returns the new count, so two gateways can never both take the last slot (a read, then
a write, would let both through). A request that turns out not to need its slot (the
question was known or already in flight) gives it back. An unreachable database fails
closed: the request gets a 503 (storage is the same database, so the question could not be
accepted anyway).
"""

from __future__ import annotations

import logging

from qaloop.gateway.admission import DAY_S
from qaloop.llm.budget_pg import TABLE, PostgresLedger

log = logging.getLogger(__name__)

SCOPE = "quota:"


class PostgresQuota(PostgresLedger):
    def __repr__(self) -> str:  # the DSN may carry a password
        return "PostgresQuota()"

    async def reserve(self, name: str, day: int, quota: int) -> bool:
        async with self._lock:
            try:
                conn = await self._connection()
                cur = await conn.execute(
                    f"INSERT INTO {TABLE} (scope, period_start, spent_usd) VALUES (%s, %s, 1) "
                    f"ON CONFLICT (scope, period_start) DO UPDATE "
                    f"SET spent_usd = {TABLE}.spent_usd + 1 "
                    f"WHERE {TABLE}.spent_usd < %s RETURNING spent_usd",
                    (SCOPE + name, day * DAY_S, quota),
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
                    f"UPDATE {TABLE} SET spent_usd = spent_usd - 1 "
                    "WHERE scope = %s AND period_start = %s AND spent_usd >= 1",
                    (SCOPE + name, day * DAY_S),
                )
            except Exception:  # the slot stays taken: the key loses one question today
                log.warning("quota: could not give back a slot of key %r", name, exc_info=True)
                await self._drop()

    async def used(self, name: str, day: int) -> int:
        spent = await self.spent([SCOPE + name], day * DAY_S)
        return int(spent[SCOPE + name])
