"""Protection shared by every provider: a wrapper Provider that adds, in this order,

1. a per-question LLM-call budget (BudgetError once `try_no` passes it),
2. a circuit breaker (fail fast with OverloadError while the provider cools down),
3. bounded concurrency (at most `max_in_flight` calls at once in this process),
4. a token-bucket rate limit (requests/minute, tokens/minute, requests/day), in-process or
   shared by every worker process through PostgreSQL (qaloop.llm.ratelimit_pg),
5. a timeout on the call itself (ServerError when it expires).

The limiter *reserves* capacity: a reservation either comes with a wait (sleep it, then call)
or, when the wait would exceed `max_queue_wait_s`, is refused without consuming anything and the
call fails with QuotaMinuteError / QuotaDayError carrying the wait as retry_after_s, so the
worker parks the question instead of holding a slot. Our own limiter thus never lets a request
reach the provider that would exceed the configured quota (zero self-inflicted 429s).

Window guarantee: a bucket of capacity `burst` refilled at `rate` admits at most
`burst + rate * T` units in any interval of length T. With rate = (limit - burst) / period,
shaved by `headroom` to absorb timer and network lateness, no window of `period` seconds ever
holds more than `limit`, whether the provider counts sliding or calendar windows.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from qaloop.core.model import ErrorClass
from qaloop.llm.base import (
    BudgetError,
    CircuitOpenError,
    Generation,
    GenerationRequest,
    LLMError,
    OverloadError,
    Provider,
    QuotaDayError,
    QuotaMinuteError,
    ServerError,
)

log = logging.getLogger(__name__)

DAY_S = 86400.0
_sleep = asyncio.sleep  # the limiter's waits (tests replace it with a fake clock's)


# --------------------------------------------------------------------------- token buckets


@dataclass(frozen=True, slots=True)
class Limit:
    """At most `limit` units (requests or tokens) in any window of `period_s` seconds."""

    name: str  # "rpm", "tpm", "rpd" (the key of the cost in a reservation)
    limit: float
    period_s: float
    burst: float  # bucket capacity: what may go at once after an idle spell
    headroom: float = 0.01  # fraction of the refill rate kept in reserve for timer lateness
    per_day: bool = False  # refused -> QuotaDayError (park until reset), else QuotaMinuteError

    def __post_init__(self) -> None:
        if self.limit <= 0 or self.period_s <= 0:
            raise ValueError(f"limit {self.name}: limit and period must be positive")
        if not 0 < self.burst < self.limit:
            raise ValueError(f"limit {self.name}: need 0 < burst < limit, got {self.burst}")
        if not 0 <= self.headroom < 1:
            raise ValueError(f"limit {self.name}: headroom must be in [0, 1)")

    @property
    def rate(self) -> float:
        """Refill per second, such that burst + rate * period <= limit."""
        return (self.limit - self.burst) / self.period_s * (1.0 - self.headroom)

    @classmethod
    def make(
        cls,
        name: str,
        limit: float,
        period_s: float,
        *,
        burst: float | None = None,
        headroom: float = 0.01,
        per_day: bool = False,
    ) -> Limit:
        """Default burst: one second's worth of the limit (one hour's for a per-day limit),
        at least 1 and at most half the limit (a burst below 1 is fine: requests then wait
        for the bucket to pay off its debt)."""
        if burst is None or burst <= 0:
            unit_s = 3600.0 if per_day else 1.0
            burst = min(max(1.0, limit * unit_s / period_s), limit / 2)
        return cls(name, float(limit), float(period_s), float(burst), headroom, per_day)


@dataclass(frozen=True, slots=True)
class BucketState:
    tokens: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class Reservation:
    granted: bool
    wait_s: float  # granted: sleep this long, then call; refused: when it could be granted
    blocking: str | None = None  # name of the limit that refused (or imposed the longest wait)
    per_day: bool = False


def refill(state: BucketState, limit: Limit, now: float) -> BucketState:
    now = max(now, state.updated_at)  # a clock that steps back never mints tokens
    tokens = min(limit.burst, state.tokens + (now - state.updated_at) * limit.rate)
    return BucketState(tokens, now)


def reserve_all(
    states: Mapping[str, BucketState],
    limits: Sequence[Limit],
    costs: Mapping[str, float],
    now: float,
    max_wait_s: float,
) -> tuple[dict[str, BucketState], Reservation]:
    """All-or-nothing reservation over several buckets (pure: the caller keeps the state).

    Tokens may go negative (debt): a request that takes the bucket to -d waits d / rate, by
    which time the bucket has paid for it. A refusal changes nothing but the refill clock."""
    refilled = {lim.name: refill(states[lim.name], lim, now) for lim in limits}
    wait = 0.0
    blocking: Limit | None = None
    for lim in limits:
        after = refilled[lim.name].tokens - costs.get(lim.name, 0.0)
        need = max(0.0, -after / lim.rate)
        if need > wait:
            wait, blocking = need, lim
    if wait > max_wait_s:
        assert blocking is not None
        return refilled, Reservation(False, wait, blocking.name, blocking.per_day)
    taken = {
        name: BucketState(st.tokens - costs.get(name, 0.0), st.updated_at)
        for name, st in refilled.items()
    }
    return taken, Reservation(
        True,
        wait,
        None if blocking is None else blocking.name,
        False if blocking is None else blocking.per_day,
    )


class RateLimiter(Protocol):
    @property
    def limits(self) -> Sequence[Limit]: ...

    async def reserve(self, costs: Mapping[str, float], max_wait_s: float) -> Reservation: ...

    async def adjust(self, name: str, delta: float) -> None:
        """Charge `delta` more units (negative: give back) once the real cost is known."""
        ...

    async def aclose(self) -> None: ...


class LocalRateLimiter:
    """Token buckets in this process's memory (one worker process, or per-process limits)."""

    def __init__(
        self, limits: Sequence[Limit], *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limits = list(limits)
        self.clock = clock
        now = clock()
        self._states = {lim.name: BucketState(lim.burst, now) for lim in self.limits}

    async def reserve(self, costs: Mapping[str, float], max_wait_s: float) -> Reservation:
        self._states, reservation = reserve_all(
            self._states, self.limits, costs, self.clock(), max_wait_s
        )
        return reservation

    async def adjust(self, name: str, delta: float) -> None:
        lim = next((x for x in self.limits if x.name == name), None)
        if lim is None or delta == 0:
            return
        st = refill(self._states[name], lim, self.clock())
        self._states[name] = BucketState(min(lim.burst, st.tokens - delta), st.updated_at)

    async def aclose(self) -> None:
        return None


# --------------------------------------------------------------------------- circuit breaker


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """closed --N consecutive overload/server failures--> open --cooldown--> half-open
    --probe succeeds--> closed (or --probe fails--> open again).

    While open (and while the half-open probe is out), calls fail fast with OverloadError, so
    the worker backs off and then parks instead of hammering a provider that is down. Any
    answer that isn't an overload/server failure (success, quota, permanent) proves the
    provider is reachable and closes the breaker."""

    def __init__(
        self,
        failure_threshold: int,
        cooldown_s: float,
        *,
        half_open_probes: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be >= 1")
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self.half_open_probes = half_open_probes
        self.clock = clock
        self.state = BreakerState.CLOSED
        self.consecutive_failures = 0
        self.opened_at = 0.0
        self.probes_out = 0
        self.opens = 0
        self.fast_fails = 0

    def before_call(self) -> bool:
        """Raise OverloadError to fail fast; else return True if this call is a probe."""
        if self.state is BreakerState.OPEN:
            remaining = self.opened_at + self.cooldown_s - self.clock()
            if remaining > 0:
                self.fast_fails += 1
                raise CircuitOpenError(
                    f"circuit open after {self.consecutive_failures} consecutive failures; "
                    f"cooling down {remaining:.1f} s more",
                    retry_after_s=remaining,
                )
            self.state = BreakerState.HALF_OPEN
            self.probes_out = 0
            log.info("circuit half-open: probing the provider")
        if self.state is BreakerState.HALF_OPEN:
            if self.probes_out >= self.half_open_probes:
                self.fast_fails += 1
                raise CircuitOpenError("circuit half-open: waiting for the probe call")
            self.probes_out += 1
            return True
        return False

    def release_probe(self, probe: bool) -> None:
        """A probe that never reached the provider (rate limited, cancelled)."""
        if probe and self.probes_out > 0:
            self.probes_out -= 1

    def record(self, error: LLMError | None, probe: bool) -> None:
        if probe and self.probes_out > 0:
            self.probes_out -= 1
        failed = error is not None and error.error_class in (ErrorClass.OVERLOAD, ErrorClass.SERVER)
        if not failed:
            if self.state is not BreakerState.CLOSED:
                log.info("circuit closed: the provider answered")
            self.state = BreakerState.CLOSED
            self.consecutive_failures = 0
            return
        self.consecutive_failures += 1
        if self.state is BreakerState.HALF_OPEN or (
            self.state is BreakerState.CLOSED
            and self.consecutive_failures >= self.failure_threshold
        ):
            self.state = BreakerState.OPEN
            self.opened_at = self.clock()
            self.opens += 1
            log.warning(
                "circuit open: %d consecutive failures, cooling down %.1f s",
                self.consecutive_failures,
                self.cooldown_s,
            )


# --------------------------------------------------------------------------- the wrapper


def estimate_tokens(request: GenerationRequest, expected_output_tokens: int) -> float:
    """Before the call: ~4 characters per token of prompt, plus the expected answer."""
    return float(math.ceil(len(request.prompt) / 4) + expected_output_tokens)


@dataclass
class ProtectionStats:
    calls: int = 0  # calls that reached the provider
    budget_refused: int = 0
    breaker_fast_fails: int = 0
    rate_refused: int = 0  # reservations refused (-> quota error, parked)
    rate_waits: int = 0  # calls that slept for the limiter
    rate_wait_s: float = 0.0
    timeouts: int = 0
    errors: dict[str, int] = field(default_factory=dict)


class ProtectedProvider:
    """Wraps any Provider with budget, breaker, concurrency bound, rate limit and timeout."""

    def __init__(
        self,
        inner: Provider,
        *,
        limiter: RateLimiter | None = None,
        breaker: CircuitBreaker | None = None,
        max_in_flight: int | None = None,
        timeout_s: float | None = None,
        max_queue_wait_s: float = 10.0,
        max_calls_per_question: int | None = None,
        expected_output_tokens: int = 256,
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.limiter = limiter
        self.breaker = breaker
        self.max_in_flight = max_in_flight
        self._slots = asyncio.Semaphore(max_in_flight) if max_in_flight else None
        self.timeout_s = timeout_s
        self.max_queue_wait_s = max_queue_wait_s
        self.max_calls_per_question = max_calls_per_question
        self.expected_output_tokens = expected_output_tokens
        self.stats = ProtectionStats()
        self._limit_names = {lim.name for lim in limiter.limits} if limiter else set()

    @property
    def call_bound_s(self) -> float | None:
        """The longest a `generate` call can take (None: unbounded): the limiter's longest
        wait plus the call's timeout, when nothing else in it waits -- no concurrency bound
        (its semaphore queues without limit) and a limiter in this process's memory (the
        PostgreSQL one's reservation is a database round trip). A caller whose own timeout
        is longer need not add one (qaloop.services.worker)."""
        if self.timeout_s is None or self._slots is not None:
            return None
        if self.limiter is None:
            return self.timeout_s
        if isinstance(self.limiter, LocalRateLimiter):
            return self.timeout_s + self.max_queue_wait_s
        return None

    def __repr__(self) -> str:
        return (
            f"ProtectedProvider({self.inner!r}, max_in_flight={self.max_in_flight}, "
            f"timeout_s={self.timeout_s}, limits={sorted(self._limit_names)})"
        )

    async def generate(self, request: GenerationRequest) -> Generation:
        budget = self.max_calls_per_question
        if budget is not None and request.try_no > budget:
            self.stats.budget_refused += 1
            raise BudgetError(f"LLM-call budget spent: {budget} calls for this question")
        probe = False
        if self.breaker is not None:
            try:
                probe = self.breaker.before_call()
            except OverloadError:
                self.stats.breaker_fast_fails += 1
                raise
        reached = False
        try:
            if self._slots is not None:
                async with self._slots:
                    reached = await self._limited(request)
                    return await self._call(request, probe)
            reached = await self._limited(request)
            return await self._call(request, probe)
        finally:
            if self.breaker is not None and not reached:
                self.breaker.release_probe(probe)

    async def _limited(self, request: GenerationRequest) -> bool:
        """Wait for the rate limiter; True once the call may go out."""
        if self.limiter is None:
            return True
        costs: dict[str, float] = {"rpm": 1.0, "rpd": 1.0}
        if "tpm" in self._limit_names:
            costs["tpm"] = estimate_tokens(request, self.expected_output_tokens)
        reservation = await self.limiter.reserve(costs, self.max_queue_wait_s)
        if not reservation.granted:
            self.stats.rate_refused += 1
            detail = (
                f"client-side rate limit {reservation.blocking}: next slot in "
                f"{reservation.wait_s:.1f} s (longer than the {self.max_queue_wait_s:.1f} s "
                "queue wait allowed)"
            )
            log.info("question %s: %s", request.question_id, detail)
            error = QuotaDayError if reservation.per_day else QuotaMinuteError
            raise error(detail, retry_after_s=reservation.wait_s)
        if reservation.wait_s > 0:
            self.stats.rate_waits += 1
            self.stats.rate_wait_s += reservation.wait_s
            await _sleep(reservation.wait_s)
        return True

    async def _call(self, request: GenerationRequest, probe: bool) -> Generation:
        self.stats.calls += 1
        try:
            if self.timeout_s is None:
                generation = await self.inner.generate(request)
            else:
                # asyncio.timeout, not wait_for: wait_for wraps the call in one more task
                async with asyncio.timeout(self.timeout_s):
                    generation = await self.inner.generate(request)
        except TimeoutError as exc:
            self.stats.timeouts += 1
            error = ServerError(f"the provider did not answer within {self.timeout_s} s")
            self._record(error, probe)
            raise error from exc
        except LLMError as exc:
            self._record(exc, probe)
            raise
        except BaseException:  # cancelled, or a provider bug: says nothing about its health
            if self.breaker is not None:
                self.breaker.release_probe(probe)
            raise
        self._record(None, probe)
        if "tpm" in self._limit_names and self.limiter is not None:
            used = (generation.input_tokens or 0) + (generation.output_tokens or 0)
            if used:
                delta = used - estimate_tokens(request, self.expected_output_tokens)
                await self.limiter.adjust("tpm", delta)
        return generation

    def _record(self, error: LLMError | None, probe: bool) -> None:
        if error is not None:
            cls = error.error_class.value
            self.stats.errors[cls] = self.stats.errors.get(cls, 0) + 1
        if self.breaker is not None:
            self.breaker.record(error, probe)

    async def aclose(self) -> None:
        try:
            await self.inner.aclose()
        finally:
            if self.limiter is not None:
                await self.limiter.aclose()


# --------------------------------------------------------------------------- from settings
