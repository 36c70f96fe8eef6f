"""Admission control: whether the gateway takes a *new* question now (every accepted question
costs LLM calls). Known answers, and questions already in flight (joining costs nothing), are
served whatever admission says; only a question that would be inserted and sent to the LLM is
refused, with 429 and a `Retry-After`.

A check is anything with `name` and `async check(ask) -> Rejection | None`, plus `admitted(ask)`
called once the question is stored (for checks that count). A check that takes something
when it passes (the per-key quota reserves a slot) also has `async released(ask)`, called when
the question was not stored after all (known, in flight, refused by a later check, or an
error). `Admission` runs the checks in order; the first rejection wins. It is counted in
`qaloop_gateway_admission_rejected_total` only when the question is refused (not when it
turns out to be known or in flight).
Built in: `BacklogLimit` (questions accepted and not final), `DailyCallBudget` (LLM calls per
UTC day against `llm_rpd`) and the per-key quota of qaloop.gateway.auth; the spend budget
(qaloop.llm.budget.BudgetAdmission) plugs in the same way (`Admission.add`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter

log = logging.getLogger(__name__)

DAY_S = 86400.0


@dataclass(frozen=True, slots=True)
class Ask:
    """What a check may look at: the question about to be accepted and who asks."""

    question_id: str
    question: str
    reference_answer: str | None
    caller: str | None = None  # the API key's name when auth is on


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: str  # short, for the metric label and the error code: "backlog", "budget", ...
    message: str
    retry_after_s: float


class Rejected(Exception):
    """Raised by the question service; the HTTP adapter answers 429 with Retry-After."""

    def __init__(self, rejection: Rejection) -> None:
        super().__init__(rejection.message)
        self.rejection = rejection


class AdmissionCheck(Protocol):
    name: str

    async def check(self, ask: Ask) -> Rejection | None: ...

    def admitted(self, ask: Ask) -> None: ...


class Admission:
    def __init__(
        self, checks: list[AdmissionCheck] | None = None, registry: CollectorRegistry | None = None
    ) -> None:
        self.checks: list[AdmissionCheck] = list(checks or [])
        self.rejected = Counter(
            "qaloop_gateway_admission_rejected",
            "New questions refused with 429 by admission control, by reason",
            ["reason"],
            registry=registry,
        )

    def add(self, check: AdmissionCheck) -> None:
        self.checks.append(check)

    async def check(self, ask: Ask) -> Rejection | None:
        for i, check in enumerate(self.checks):
            rejection = await check.check(ask)
            if rejection is not None:
                await self._release(self.checks[:i], ask)
                return rejection
        return None

    async def released(self, ask: Ask) -> None:
        """The question that passed `check` was not stored: give back what checks took."""
        await self._release(self.checks, ask)

    @staticmethod
    async def _release(checks: list[AdmissionCheck], ask: Ask) -> None:
        for check in checks:
            release = getattr(check, "released", None)  # optional (see the module doc)
            if release is not None:
                await release(ask)

    def refused(self, rejection: Rejection) -> Rejected:
        """Count a refusal (a rejection for a question storage did not know) and raise it."""
        self.rejected.labels(rejection.reason).inc()
        return Rejected(rejection)

    def admitted(self, ask: Ask) -> None:
        for check in self.checks:
            check.admitted(ask)


class BacklogLimit:
    """At most `limit` questions accepted and not yet final. `count` is cheap (embedded: the
    in-flight set) or slow (distributed: a storage count, run in a thread at most every
    `refresh_s` while requests use the last value)."""

    name = "backlog"

    def __init__(
        self,
        limit: int,
        count: Callable[[], int],
        *,
        slow: bool = False,
        refresh_s: float = 2.0,
        retry_after_s: float = 5.0,
    ) -> None:
        self.limit = limit
        self.count = count
        self.slow = slow
        self.refresh_s = refresh_s
        self.retry_after_s = retry_after_s
        self._last = 0
        self._at = -1e18
        self._refreshing: asyncio.Task[None] | None = None

    async def _current(self) -> int:
        if not self.slow:
            return self.count()
        if time.monotonic() - self._at > self.refresh_s and self._refreshing is None:
            self._refreshing = asyncio.create_task(self._refresh())
            if self._at < 0:  # no value yet: wait for the first one
                await asyncio.shield(self._refreshing)
        return self._last

    async def _refresh(self) -> None:
        try:
            self._last = await asyncio.to_thread(self.count)
            self._at = time.monotonic()
        except Exception:
            log.exception("admission: could not count the backlog (keeping the last value)")
        finally:
            self._refreshing = None

    async def check(self, ask: Ask) -> Rejection | None:
        backlog = await self._current()
        if backlog >= self.limit:
            return Rejection(
                "backlog",
                f"{backlog} questions are waiting for an answer (limit {self.limit}); retry later",
                self.retry_after_s,
            )
        return None

    def admitted(self, ask: Ask) -> None:
        if self.slow:
            self._last += 1


class DailyCallBudget:
    """LLM calls per UTC day (`llm_rpd`): once today's calls reach the budget, a new question
    would only be parked until tomorrow, so it is refused until the day turns."""

    name = "daily_calls"

    def __init__(
        self, limit: int, calls: Callable[[], int], clock: Callable[[], float] = time.time
    ) -> None:
        self.limit = limit
        self.calls = calls
        self.clock = clock
        self._day = int(clock() // DAY_S)
        self._at_day_start = calls()

    async def check(self, ask: Ask) -> Rejection | None:
        now = self.clock()
        day = int(now // DAY_S)
        if day != self._day:
            self._day, self._at_day_start = day, self.calls()
        used = self.calls() - self._at_day_start
        if used >= self.limit:
            return Rejection(
                "daily_calls",
                f"today's LLM budget is spent ({used} of {self.limit} calls); retry tomorrow",
                max(1.0, (day + 1) * DAY_S - now),
            )
        return None

    def admitted(self, ask: Ask) -> None:
        return None
