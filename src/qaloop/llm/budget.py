"""Spend budgets: a global and a per-API-key limit in USD per period (hour, UTC day or UTC
calendar month), counted in a ledger that every worker process shares (PostgreSQL, like the
rate limit: qaloop.llm.budget_pg) or that lives in this process (`LocalLedger`).

- soft limit (`soft_fraction` of a limit): a warning log line and a metric, once per scope and
  period; calls go on.
- hard limit: no new LLM call. The worker parks the question with error class `spend` and a
  detail starting "budget:" until the period ends (`SpendBudgetError`, qaloop.core.retry); with
  `action="reject"` the gateway also answers 429 to new questions (`BudgetAdmission`).

The check reads the ledger before a call and the charge adds the priced usage after it, so
calls already in flight when the limit is crossed still finish: the overshoot is bounded by
the calls in flight times the cost of one call.
"""

from __future__ import annotations

import calendar
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from qaloop.core.model import ErrorClass
from qaloop.llm.base import LLMError

log = logging.getLogger(__name__)

PERIODS = ("hour", "day", "month")
GLOBAL = "global"


class SpendBudgetError(LLMError):
    """A spend budget is reached: park the question until the period ends."""

    error_class = ErrorClass.SPEND


def period_bounds(period: str, now: float) -> tuple[float, float]:
    """[start, end) of the UTC period holding `now` (epoch seconds)."""
    if period == "hour":
        start = now - now % 3600
        return start, start + 3600
    if period == "day":
        start = now - now % 86400
        return start, start + 86400
    if period == "month":
        t = time.gmtime(now)
        start = calendar.timegm((t.tm_year, t.tm_mon, 1, 0, 0, 0))
        year, month = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
        return float(start), float(calendar.timegm((year, month, 1, 0, 0, 0)))
    raise ValueError(f"budget period must be one of {PERIODS}, got {period!r}")


@dataclass(frozen=True, slots=True)
class BudgetConfig:
    limit_usd: float = 0.0  # global, per period; 0 = none
    per_key_usd: float = 0.0  # per API key (the envelope's caller), per period; 0 = none
    period: str = "day"
    soft_fraction: float = 0.8
    action: str = "park"  # or "reject": the gateway answers 429 to new questions too

    def __post_init__(self) -> None:
        period_bounds(self.period, 0.0)  # validates the period
        if self.limit_usd < 0 or self.per_key_usd < 0:
            raise ValueError("budgets must be >= 0 USD (0 = no budget)")
        if not 0 < self.soft_fraction <= 1:
            raise ValueError("budget soft_fraction must be in (0, 1]")
        if self.action not in ("park", "reject"):
            raise ValueError("budget action must be park or reject")

    @property
    def enabled(self) -> bool:
        return self.limit_usd > 0 or self.per_key_usd > 0


class SpendLedger(Protocol):
    async def spent(self, scopes: Sequence[str], period_start: float) -> dict[str, float]: ...

    async def charge(
        self, scopes: Sequence[str], usd: float, period_start: float
    ) -> dict[str, float]:
        """Add `usd` to every scope; return the new totals."""
        ...

    async def aclose(self) -> None: ...


class LocalLedger:
    """Spend in this process's memory (one process, or tests)."""

    def __init__(self) -> None:
        self._spent: dict[tuple[str, float], float] = {}

    async def spent(self, scopes: Sequence[str], period_start: float) -> dict[str, float]:
        return {s: self._spent.get((s, period_start), 0.0) for s in scopes}

    async def charge(
        self, scopes: Sequence[str], usd: float, period_start: float
    ) -> dict[str, float]:
        for s in scopes:
            self._spent[(s, period_start)] = self._spent.get((s, period_start), 0.0) + usd
        return await self.spent(scopes, period_start)

    async def aclose(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class BudgetStop:
    scope: str
    spent_usd: float
    limit_usd: float
    retry_after_s: float  # until the period ends

    @property
    def message(self) -> str:
        who = "the global" if self.scope == GLOBAL else f"{self.scope}'s"
        return (
            f"budget: {who} spend budget is reached ({self.spent_usd:.4f} of "
            f"{self.limit_usd:.4f} USD this period); resumes in {self.retry_after_s:.0f} s"
        )


class Budget:
    def __init__(
        self,
        config: BudgetConfig,
        ledger: SpendLedger,
        *,
        clock: Callable[[], float] = time.time,
        metrics: Any | None = None,
    ) -> None:
        self.config = config
        self.ledger = ledger
        self.clock = clock
        self.metrics = metrics
        self._soft_warned: set[tuple[str, float]] = set()
        self.stops = 0
        self.last_spent: dict[str, float] = {}  # scope -> spend this period, as last charged

    def limits(self, caller: str | None) -> list[tuple[str, float]]:
        found = []
        if self.config.limit_usd > 0:
            found.append((GLOBAL, self.config.limit_usd))
        if self.config.per_key_usd > 0 and caller:
            found.append((f"key:{caller}", self.config.per_key_usd))
        return found

    async def check(self, caller: str | None, *, count: bool = True) -> BudgetStop | None:
        """The first hard limit reached for this caller, or None. `count`: a stop of an LLM
        call (the gateway's admission counts its refusals itself)."""
        limits = self.limits(caller)
        if not limits:
            return None
        now = self.clock()
        start, end = period_bounds(self.config.period, now)
        spent = await self.ledger.spent([s for s, _ in limits], start)
        for scope, limit in limits:
            if spent[scope] >= limit:
                if not count:
                    return BudgetStop(scope, spent[scope], limit, max(0.0, end - now))
                self.stops += 1
                if self.metrics is not None:
                    self.metrics.budget_stops.labels(_label(scope)).inc()
                return BudgetStop(scope, spent[scope], limit, max(0.0, end - now))
        return None

    async def charge(self, caller: str | None, usd: float) -> None:
        limits = self.limits(caller)
        if not limits or usd <= 0:
            return
        start, _ = period_bounds(self.config.period, self.clock())
        totals = await self.ledger.charge([s for s, _ in limits], usd, start)
        for scope, limit in limits:
            total = totals[scope]
            self.last_spent[scope] = total
            if self.metrics is not None:
                self.metrics.budget_spent.labels(_label(scope)).set(total)
            if (
                total >= limit * self.config.soft_fraction
                and (scope, start) not in self._soft_warned
            ):
                self._soft_warned.add((scope, start))
                if self.metrics is not None:
                    self.metrics.budget_soft.labels(_label(scope)).inc()
                log.warning(
                    "budget: %s spent %.4f USD this %s, over the soft limit %.4f (hard %.4f)",
                    scope,
                    total,
                    self.config.period,
                    limit * self.config.soft_fraction,
                    limit,
                )

    def as_dict(self) -> dict[str, Any]:
        """For /v1/stats: the limits and what this process last saw charged (the ledger
        itself is the truth when several processes share it)."""
        c = self.config
        return {
            "period": c.period,
            "limit_usd": c.limit_usd,
            "per_key_usd": c.per_key_usd,
            "soft_fraction": c.soft_fraction,
            "action": c.action,
            "stops": self.stops,
            "spent_usd": {k: round(v, 8) for k, v in sorted(self.last_spent.items())},
        }

    async def aclose(self) -> None:
        await self.ledger.aclose()


def _label(scope: str) -> str:
    """Metric label: "global" or "key" (key names would make the series unbounded)."""
    return GLOBAL if scope == GLOBAL else "key"


class BudgetAdmission:
    """The spend budget as a gateway admission check (qaloop.gateway.admission's protocol:
    `name`, `async check(ask) -> rejection | None`, `admitted(ask)`): with action "reject",
    a new question whose caller (or everyone) is over a hard limit gets 429 + Retry-After.

    `rejection` builds the gateway's rejection object from (reason, message, retry_after_s):
    pass qaloop.gateway.admission.Rejection. `refresh_s`: how long a caller's answer is reused
    (a shared ledger costs a database round trip per read; the worker still checks before
    every call, so reuse only delays a 429, never lets a call past the budget). A ledger that
    can't be read admits: the question is stored and the worker, which fails closed, parks it."""

    name = "budget"

    def __init__(
        self,
        budget: Budget,
        rejection: Callable[[str, str, float], Any],
        *,
        refresh_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.budget = budget
        self.rejection = rejection
        self.refresh_s = refresh_s
        self.clock = clock
        self._seen: dict[str | None, tuple[float, BudgetStop | None]] = {}
        self._unreadable_logged = 0.0

    async def _stop(self, caller: str | None) -> BudgetStop | None:
        now = self.clock()
        seen = self._seen.get(caller)
        if seen is not None and now - seen[0] < self.refresh_s:
            at, stop = seen
            if stop is None:
                return None
            return BudgetStop(
                stop.scope, stop.spent_usd, stop.limit_usd, stop.retry_after_s - (now - at)
            )
        try:
            stop = await self.budget.check(caller, count=False)
        except Exception as exc:  # fail open here: the worker fails closed
            if now - self._unreadable_logged > 60:
                self._unreadable_logged = now
                log.warning("budget: cannot read the spend ledger (admitting): %s", exc)
            return None
        if self.refresh_s > 0:
            if len(self._seen) > 10_000:  # one entry per key: bounded anyway, but be safe
                self._seen.clear()
            self._seen[caller] = (now, stop)
        return stop

    async def check(self, ask: Any) -> Any | None:
        if self.budget.config.action != "reject":
            return None
        stop = await self._stop(getattr(ask, "caller", None))
        if stop is None:
            return None
        return self.rejection("budget", stop.message, max(1.0, stop.retry_after_s))

    def admitted(self, ask: Any) -> None:
        return None


def budget_from_settings(settings: Any, metrics: Any | None = None) -> Budget | None:
    config = BudgetConfig(
        limit_usd=settings.budget_usd,
        per_key_usd=settings.budget_key_usd,
        period=settings.budget_period,
        soft_fraction=settings.budget_soft_fraction,
        action=settings.budget_action,
    )
    if not config.enabled:
        return None
    ledger: SpendLedger
    if settings.budget_backend == "postgres":
        dsn = settings.budget_dsn or (
            settings.db if settings.db.startswith(("postgresql://", "postgres://")) else None
        )
        if not dsn:
            raise ValueError(
                "budget_backend=postgres needs QALOOP_BUDGET_DSN (or a postgresql:// QALOOP_DB)"
            )
        from qaloop.llm.budget_pg import PostgresLedger

        ledger = PostgresLedger(dsn)
    else:
        ledger = LocalLedger()
    return Budget(config, ledger, metrics=metrics)
