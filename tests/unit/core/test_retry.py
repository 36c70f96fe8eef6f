from __future__ import annotations

import random

import pytest

from qaloop.core.model import Envelope, ErrorClass, EventKind
from qaloop.core.retry import (
    GiveUp,
    Park,
    RetryNow,
    RetryPolicy,
    full_jitter_backoff,
    on_llm_error,
)

POLICY = RetryPolicy(
    overload_tries=3,
    backoff_base_s=1.0,
    backoff_cap_s=8.0,
    quota_default_delay_s=30.0,
    quota_day_delay_s=3600.0,
    max_parks=2,
    max_total_s=1000.0,
)


def _env(parks: int = 0) -> Envelope:
    env = Envelope("a" * 32, "q", "r", "t", first_seen=0.0)
    for _ in range(parks):
        env = env.with_event(EventKind.PARKED, 1.0)
    return env


def test_full_jitter_is_bounded_by_cap_and_exponent() -> None:
    rng = random.Random(1)
    for try_no in range(1, 12):
        bound = min(8.0, 1.0 * 2 ** (try_no - 1))
        assert all(0 <= full_jitter_backoff(try_no, 1.0, 8.0, rng) <= bound for _ in range(200))


@pytest.mark.parametrize("cls", [ErrorClass.OVERLOAD, ErrorClass.SERVER])
def test_overload_retries_in_process_then_parks(cls: ErrorClass) -> None:
    rng = random.Random(0)
    assert isinstance(on_llm_error(_env(), cls, None, 1, POLICY, 10.0, rng), RetryNow)
    assert isinstance(on_llm_error(_env(), cls, None, 2, POLICY, 10.0, rng), RetryNow)
    action = on_llm_error(_env(), cls, None, 3, POLICY, 10.0, rng)
    assert action == Park(due_at=18.0)
    # an open breaker's remaining cool-down is honoured when longer than the cap
    assert on_llm_error(_env(), cls, 20.0, 3, POLICY, 10.0, rng) == Park(due_at=30.0)


def test_quota_minute_honours_retry_after_or_default() -> None:
    rng = random.Random(0)
    assert on_llm_error(_env(), ErrorClass.QUOTA_MINUTE, 17.0, 1, POLICY, 10.0, rng) == Park(27.0)
    assert on_llm_error(_env(), ErrorClass.QUOTA_MINUTE, None, 1, POLICY, 10.0, rng) == Park(40.0)


def test_quota_day_parks_until_reset() -> None:
    rng = random.Random(0)
    assert on_llm_error(_env(), ErrorClass.QUOTA_DAY, None, 1, POLICY, 10.0, rng) == Park(3610.0)


def test_permanent_gives_up_at_once() -> None:
    action = on_llm_error(_env(), ErrorClass.PERMANENT, None, 1, POLICY, 10.0, random.Random(0))
    assert isinstance(action, GiveUp)


def test_budget_of_parks_and_time() -> None:
    rng = random.Random(0)
    assert isinstance(
        on_llm_error(_env(2), ErrorClass.QUOTA_MINUTE, 1.0, 1, POLICY, 10.0, rng), GiveUp
    )
    late = on_llm_error(_env(), ErrorClass.QUOTA_MINUTE, 1.0, 1, POLICY, 2000.0, rng)
    assert isinstance(late, GiveUp) and "budget" in late.reason
