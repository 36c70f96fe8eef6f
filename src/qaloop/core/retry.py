"""What to do after an LLM call fails, by error class. Pure: the caller supplies time and rng.

- overload / server (503, 500, 504, timeouts): retry in-process with capped exponential backoff
  and full jitter; after `overload_tries` calls, park the question for `backoff_cap_s` and try
  again later rather than hold a worker slot.
- quota per minute (429): park until the server's retry delay (or a default), never sleep in a
  consumer loop.
- quota per day / zero quota: park until the reset time (or `quota_day_delay_s`), don't spin.
- permanent (400-class, safety block, unknown question): fail at once with the reason.
- spend budget reached (our own stop, not a provider failure): park until the budget's period
  ends; such parks don't count against the question's budget.
Every question has a budget: at most `max_parks` parks and `max_total_s` since first seen.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from qaloop.core.model import Envelope, ErrorClass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    overload_tries: int = 4
    backoff_base_s: float = 0.25
    backoff_cap_s: float = 8.0
    quota_default_delay_s: float = 30.0
    quota_day_delay_s: float = 3600.0
    max_parks: int = 6
    max_total_s: float = 6 * 3600.0


@dataclass(frozen=True, slots=True)
class RetryNow:
    delay_s: float


@dataclass(frozen=True, slots=True)
class Park:
    due_at: float


@dataclass(frozen=True, slots=True)
class GiveUp:
    reason: str


RetryAction = RetryNow | Park | GiveUp


def full_jitter_backoff(try_no: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """AWS 'full jitter': uniform in [0, min(cap, base * 2^(try-1))]."""
    return rng.uniform(0.0, min(cap_s, base_s * (2 ** max(0, try_no - 1))))


def parks_so_far(envelope: Envelope) -> int:
    return sum(
        1 for e in envelope.history if e.kind == "parked" and e.error_class is not ErrorClass.SPEND
    )


def on_llm_error(
    envelope: Envelope,
    error_class: ErrorClass,
    retry_after_s: float | None,
    tries_in_attempt: int,
    policy: RetryPolicy,
    now: float,
    rng: random.Random,
) -> RetryAction:
    """`tries_in_attempt` counts the calls already made for this attempt, the failed one too."""
    if error_class in (ErrorClass.PERMANENT, ErrorClass.BUDGET):
        return GiveUp(f"{error_class.value} error")
    if error_class is ErrorClass.SPEND:
        delay = retry_after_s if retry_after_s is not None else policy.quota_day_delay_s
        return Park(due_at=now + max(0.0, delay))
    if now - envelope.first_seen > policy.max_total_s:
        return GiveUp(f"retry budget spent: {policy.max_total_s:.0f} s since first seen")
    if error_class in (ErrorClass.OVERLOAD, ErrorClass.SERVER):
        if tries_in_attempt < policy.overload_tries:
            return RetryNow(
                full_jitter_backoff(
                    tries_in_attempt, policy.backoff_base_s, policy.backoff_cap_s, rng
                )
            )
        # A circuit breaker that is open says how long it stays open: wait at least that.
        delay = max(policy.backoff_cap_s, retry_after_s or 0.0)
    elif error_class is ErrorClass.QUOTA_MINUTE:
        delay = retry_after_s if retry_after_s is not None else policy.quota_default_delay_s
    else:  # QUOTA_DAY
        delay = retry_after_s if retry_after_s is not None else policy.quota_day_delay_s
    if parks_so_far(envelope) >= policy.max_parks:
        return GiveUp(f"retry budget spent: {policy.max_parks} parks ({error_class.value})")
    return Park(due_at=now + max(0.0, delay))
