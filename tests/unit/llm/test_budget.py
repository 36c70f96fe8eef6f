"""Spend budgets: periods, soft limit (log line + metric, once), hard stop (the worker parks
with class `spend` until the period ends, without calling the LLM), per-key scopes, the
admission check for the gateway, and the retry rule for spend parks."""

from __future__ import annotations

import logging
import random
import time
from calendar import timegm

import pytest
from pydantic import ValidationError

from qaloop.bus.base import Topics
from qaloop.core import codec
from qaloop.core.model import Envelope, ErrorClass, EventKind
from qaloop.core.retry import Park, RetryPolicy, on_llm_error, parks_so_far
from qaloop.llm.accounting import Meter
from qaloop.llm.base import Generation, GenerationRequest, ServerError
from qaloop.llm.budget import (
    Budget,
    BudgetAdmission,
    BudgetConfig,
    LocalLedger,
    budget_from_settings,
    period_bounds,
)
from qaloop.llm.pricing import PriceTable
from qaloop.observability.metrics import Metrics
from qaloop.services.worker import Worker, WorkerConfig
from qaloop.settings import Settings

TOPICS = Topics()
POLICY = RetryPolicy(backoff_base_s=0.001, backoff_cap_s=0.01)
NOON = float(timegm((2026, 12, 31, 12, 0, 0)))


class Clock:
    def __init__(self, t: float = NOON) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_period_bounds() -> None:
    assert period_bounds("hour", NOON + 61) == (NOON, NOON + 3600)
    assert period_bounds("day", NOON) == (NOON - 43200, NOON + 43200)
    start, end = period_bounds("month", NOON)  # December rolls over into January
    assert time.gmtime(start)[:3] == (2026, 12, 1) and time.gmtime(end)[:3] == (2027, 1, 1)
    with pytest.raises(ValueError, match="budget period"):
        period_bounds("week", NOON)
    with pytest.raises(ValidationError):
        Settings(budget_period="week")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=">= 0"):
        BudgetConfig(limit_usd=-1.0)


async def test_soft_limit_logs_once_and_counts(caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()
    budget = Budget(BudgetConfig(limit_usd=1.0), LocalLedger(), clock=Clock(), metrics=metrics)
    with caplog.at_level(logging.WARNING, logger="qaloop.llm.budget"):
        await budget.charge(None, 0.5)
        assert not caplog.records
        await budget.charge(None, 0.35)  # 0.85 >= 0.8
        await budget.charge(None, 0.05)
    assert [r.getMessage() for r in caplog.records] == [
        "budget: global spent 0.8500 USD this day, over the soft limit 0.8000 (hard 1.0000)"
    ]
    assert await budget.check(None) is None  # soft: calls go on
    text = metrics.exposition().decode()
    assert 'qaloop_budget_soft_exceeded_total{scope="global"} 1.0' in text
    assert 'qaloop_budget_spent_usd{scope="global"} 0.9' in text


async def test_hard_limit_per_key_and_global() -> None:
    clock = Clock()
    budget = Budget(BudgetConfig(limit_usd=1.0, per_key_usd=0.3), LocalLedger(), clock=clock)
    await budget.charge("alice", 0.3)
    stop = await budget.check("alice")
    assert stop is not None and stop.scope == "key:alice"
    assert stop.retry_after_s == pytest.approx(43200)  # until midnight UTC
    assert "key:alice's spend budget is reached" in stop.message
    assert await budget.check("bob") is None
    assert await budget.check(None) is None
    await budget.charge("bob", 0.29)
    await budget.charge(None, 0.5)
    stop = await budget.check("bob")
    assert stop is not None and stop.scope == "global"  # 1.09 in all
    stats = budget.as_dict()
    assert stats["spent_usd"]["global"] == pytest.approx(1.09) and stats["stops"] == 2
    clock.t += 43200  # a new day
    assert await budget.check("alice") is None


class Counting:
    name = "openai"
    model = "gpt-4o-mini"

    def __init__(self) -> None:
        self.calls = 0

    async def generate(self, request: GenerationRequest) -> Generation:
        self.calls += 1
        return Generation("an answer", 1.0, model="gpt-4o-mini", input_tokens=10_000,
                          output_tokens=10_000)  # fmt: skip

    async def aclose(self) -> None:
        return None


def _env(qid: str, caller: str | None = None) -> Envelope:
    env = Envelope(qid, f"Question {qid}?", None, "t", NOON, caller=caller)
    return env.with_event(EventKind.ACCEPTED, NOON)


async def test_worker_parks_at_the_hard_limit_without_calling_the_llm() -> None:
    clock = Clock()
    provider = Counting()
    # one call costs 10k x 0.15 + 10k x 0.60 per 1M = 0.0075 USD
    budget = Budget(BudgetConfig(limit_usd=0.015), LocalLedger(), clock=clock)
    worker = Worker(provider, TOPICS, WorkerConfig(), POLICY, clock=clock,
                    meter=Meter(PriceTable.load()), budget=budget)  # fmt: skip
    for qid in ("a", "b"):
        [out] = await worker.handle(_env(qid))
        assert out.topic == TOPICS.generated
    [out] = await worker.handle(_env("c"))
    assert out.topic == TOPICS.delayed and provider.calls == 2
    parked = codec.decode(out.value)
    assert parked.error_class is ErrorClass.SPEND
    assert parked.error_detail is not None and parked.error_detail.startswith("budget:")
    assert parked.due_at == pytest.approx(NOON + 43200)
    assert parked.llm_calls == 0  # no call was made
    assert worker.stats.parked == {"spend": 1}
    clock.t = NOON + 43200  # the retrier resumes it when the day is over
    [out] = await worker.handle(parked.evolve(due_at=None))
    assert out.topic == TOPICS.generated and provider.calls == 3


async def test_an_unreadable_ledger_fails_closed() -> None:
    class Broken(LocalLedger):
        async def spent(self, scopes: object, period_start: float) -> dict[str, float]:
            raise ServerError("shared spend ledger unavailable: OperationalError")

    provider = Counting()
    worker = Worker(provider, TOPICS, WorkerConfig(), POLICY,
                    budget=Budget(BudgetConfig(limit_usd=1.0), Broken()))  # fmt: skip
    [out] = await worker.handle(_env("x"))
    assert out.topic == TOPICS.delayed and provider.calls == 0
    assert codec.decode(out.value).error_detail == "budget: spend ledger unavailable"


def test_spend_parks_dont_spend_the_questions_retry_budget() -> None:
    env = _env("p")
    for _ in range(10):
        env = env.with_event(EventKind.PARKED, NOON, error_class=ErrorClass.SPEND, wait_s=1.0)
    assert parks_so_far(env) == 0
    action = on_llm_error(env, ErrorClass.SPEND, 99.0, 1, POLICY, NOON, random.Random(1))
    assert action == Park(due_at=NOON + 99.0)


async def test_admission_check_rejects_only_in_reject_mode() -> None:
    class Ask:
        caller = "alice"

    for action, rejected in (("park", False), ("reject", True)):
        budget = Budget(BudgetConfig(per_key_usd=0.1, action=action), LocalLedger(), clock=Clock())
        await budget.charge("alice", 0.2)
        check = BudgetAdmission(budget, lambda reason, message, after: (reason, message, after))
        got = await check.check(Ask())
        if rejected:
            assert got is not None and got[0] == "budget" and got[2] > 0
        else:
            assert got is None


def test_caller_round_trips_through_the_codec() -> None:
    env = _env("r", caller="alice")
    assert codec.decode(codec.encode(env)).caller == "alice"
    assert codec.decode(codec.encode(env).decode()).caller == "alice"  # the strict path too
    assert codec.decode(codec.encode(_env("s"))).caller is None


def test_budget_from_settings() -> None:
    assert budget_from_settings(Settings()) is None
    budget = budget_from_settings(Settings(budget_usd=5.0, budget_period="month"))
    assert budget is not None and budget.config.period == "month"
    with pytest.raises(ValueError, match="QALOOP_BUDGET_DSN"):
        budget_from_settings(Settings(budget_usd=5.0, budget_backend="postgres"))
