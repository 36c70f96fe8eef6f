"""The shared protection: token buckets (window guarantee, all-or-nothing reservations),
circuit breaker transitions, and the wrapper's budget, fail-fast, rate refusal, timeout and
concurrency bound."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qaloop.core.model import ErrorClass
from qaloop.llm import protection
from qaloop.llm.base import (
    BudgetError,
    Generation,
    GenerationRequest,
    LLMError,
    OverloadError,
    PermanentError,
    QuotaDayError,
    QuotaMinuteError,
    ServerError,
)
from qaloop.llm.factory import limits_from_settings, protect
from qaloop.llm.protection import (
    BreakerState,
    BucketState,
    CircuitBreaker,
    Limit,
    LocalRateLimiter,
    ProtectedProvider,
    Reservation,
    reserve_all,
)
from qaloop.llm.simulated import SimulatedProvider
from qaloop.settings import Settings


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _request(try_no: int = 1, prompt: str = "Question: q\n\nAnswer:") -> GenerationRequest:
    return GenerationRequest("q" * 32, "q", 1, try_no, prompt)


# ------------------------------------------------------------------------------ buckets


def test_default_burst_and_rate_keep_every_window_under_the_limit() -> None:
    rpm = Limit.make("rpm", 600, 60)
    assert rpm.burst == 10
    assert rpm.burst + rpm.rate * 60 <= 600
    assert rpm.rate * 60 >= 0.95 * 600 - rpm.burst  # throughput stays near the limit
    assert Limit.make("rpm", 15, 60).burst == 1
    assert Limit.make("rpm", 1, 60).burst == 0.5  # below 1: requests wait off the debt
    day = Limit.make("rpd", 2400, 86400, per_day=True)
    assert day.burst == 100 and day.per_day


def test_bad_limits_are_rejected() -> None:
    with pytest.raises(ValueError):
        Limit("rpm", 10, 60, burst=10)
    with pytest.raises(ValueError):
        Limit("rpm", 0, 60, burst=0.5)


@settings(max_examples=60, deadline=None)
@given(
    limit=st.integers(2, 50),
    period=st.sampled_from([1.0, 2.0, 60.0]),
    gaps=st.lists(st.floats(0, 3), min_size=1, max_size=300),
)
def test_no_window_ever_holds_more_than_the_limit(
    limit: int, period: float, gaps: list[float]
) -> None:
    """Requests arrive at arbitrary times; each starts when its reservation says. Whatever the
    arrival pattern, no window of `period` seconds contains more than `limit` starts."""
    lim = Limit.make("rpm", limit, period)
    state = {"rpm": BucketState(lim.burst, 0.0)}
    now, starts = 0.0, []
    for gap in gaps:
        now += gap * period / 3
        state, res = reserve_all(state, [lim], {"rpm": 1}, now, max_wait_s=1e9)
        assert res.granted
        starts.append(now + res.wait_s)
    starts.sort()
    lo = 0
    for hi, t in enumerate(starts):
        while t - starts[lo] >= period:
            lo += 1
        assert hi - lo + 1 <= limit


def test_refused_reservation_consumes_nothing() -> None:
    lim = Limit.make("rpm", 60, 60, burst=2)
    state = {"rpm": BucketState(2, 0.0)}
    for _ in range(2):
        state, res = reserve_all(state, [lim], {"rpm": 1}, 0.0, max_wait_s=0)
        assert res.granted and res.wait_s == 0
    before = state
    state, res = reserve_all(state, [lim], {"rpm": 1}, 0.0, max_wait_s=0.5)
    assert not res.granted and res.blocking == "rpm"
    assert res.wait_s == pytest.approx(1 / lim.rate)
    assert state == before


def test_all_or_nothing_over_several_buckets_and_per_day_flag() -> None:
    rpm = Limit.make("rpm", 600, 60)
    rpd = Limit("rpd", 3, 86400, burst=1, per_day=True)
    state = {"rpm": BucketState(rpm.burst, 0.0), "rpd": BucketState(1, 0.0)}
    state, res = reserve_all(state, [rpm, rpd], {"rpm": 1, "rpd": 1}, 0.0, 10)
    assert res.granted
    state2, res = reserve_all(state, [rpm, rpd], {"rpm": 1, "rpd": 1}, 0.0, 10)
    assert not res.granted and res.per_day and res.blocking == "rpd"
    assert state2["rpm"].tokens == state["rpm"].tokens  # the rpm token was not taken


async def test_local_limiter_spaces_requests_and_adjust_charges_debt() -> None:
    clock = Clock(0.0)
    limiter = LocalRateLimiter([Limit("tpm", 1000, 60, burst=100, headroom=0)], clock=clock)
    res = await limiter.reserve({"tpm": 100}, 5)
    assert res.granted and res.wait_s == 0
    await limiter.adjust("tpm", 50)  # the call used 50 more tokens than reserved
    res = await limiter.reserve({"tpm": 10}, 100)
    assert res.granted
    assert res.wait_s == pytest.approx(60 / 15)  # 60 tokens of debt at 15 tokens/s
    await limiter.adjust("unknown", 5)  # ignored


# ------------------------------------------------------------------------------ breaker


def test_breaker_opens_half_opens_and_closes() -> None:
    clock = Clock()
    breaker = CircuitBreaker(3, cooldown_s=10, clock=clock)
    for _ in range(2):
        assert breaker.before_call() is False
        breaker.record(OverloadError("503"), probe=False)
    breaker.record(PermanentError("400"), probe=False)  # the provider answered: reset
    assert breaker.consecutive_failures == 0
    for _ in range(3):
        breaker.before_call()
        breaker.record(ServerError("500"), probe=False)
    assert breaker.state is BreakerState.OPEN and breaker.opens == 1
    with pytest.raises(OverloadError, match="circuit open") as info:
        breaker.before_call()
    assert info.value.retry_after_s == pytest.approx(10)
    clock.t += 10
    assert breaker.before_call() is True  # the probe
    assert breaker.state is BreakerState.HALF_OPEN
    with pytest.raises(OverloadError, match="half-open"):
        breaker.before_call()  # only one probe at a time
    breaker.record(OverloadError("503"), probe=True)  # probe failed: open again
    assert breaker.state is BreakerState.OPEN and breaker.opens == 2
    clock.t += 10
    probe = breaker.before_call()
    breaker.record(None, probe=probe)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.before_call() is False


def test_breaker_ignores_quota_errors() -> None:
    breaker = CircuitBreaker(1, cooldown_s=10, clock=Clock())
    breaker.record(QuotaMinuteError("429"), probe=False)
    assert breaker.state is BreakerState.CLOSED


# ------------------------------------------------------------------------------ wrapper


class Scripted:
    name = "scripted"

    def __init__(self, *steps: LLMError | str | float) -> None:
        self.steps = list(steps)
        self.calls = 0
        self.in_flight = 0
        self.max_in_flight = 0

    async def generate(self, request: GenerationRequest) -> Generation:
        self.calls += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            step = self.steps.pop(0) if self.steps else "ok"
            if isinstance(step, float):
                await asyncio.sleep(step)
                step = "ok"
            if isinstance(step, LLMError):
                raise step
            return Generation(step, 1.0, input_tokens=10, output_tokens=5)
        finally:
            self.in_flight -= 1

    async def aclose(self) -> None:
        return None


async def test_budget_refuses_calls_past_the_cap() -> None:
    inner = Scripted()
    provider = ProtectedProvider(inner, max_calls_per_question=3)
    assert (await provider.generate(_request(try_no=3))).text == "ok"
    with pytest.raises(BudgetError) as info:
        await provider.generate(_request(try_no=4))
    assert info.value.error_class is ErrorClass.BUDGET
    assert inner.calls == 1


async def test_open_breaker_fails_fast_without_calling() -> None:
    inner = Scripted(OverloadError("503"), OverloadError("503"))
    provider = ProtectedProvider(inner, breaker=CircuitBreaker(2, cooldown_s=60))
    for _ in range(2):
        with pytest.raises(OverloadError):
            await provider.generate(_request())
    with pytest.raises(OverloadError, match="circuit open"):
        await provider.generate(_request())
    assert inner.calls == 2 and provider.stats.breaker_fast_fails == 1


async def test_rate_refusal_is_a_quota_error_with_the_wait() -> None:
    clock = Clock(0.0)
    minute = LocalRateLimiter([Limit("rpm", 60, 60, burst=1, headroom=0)], clock=clock)
    provider = ProtectedProvider(Scripted(), limiter=minute, max_queue_wait_s=0.5)
    await provider.generate(_request())
    with pytest.raises(QuotaMinuteError, match="client-side rate limit rpm") as info:
        await provider.generate(_request())
    assert info.value.retry_after_s == pytest.approx(60 / 59)
    day = LocalRateLimiter([Limit("rpd", 10, 86400, burst=1, per_day=True)], clock=clock)
    provider = ProtectedProvider(Scripted(), limiter=day, max_queue_wait_s=0.5)
    await provider.generate(_request())
    with pytest.raises(QuotaDayError):
        await provider.generate(_request())


async def test_rate_wait_is_slept_then_the_call_goes_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock(0.0)
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:  # time passes only when we sleep
        slept.append(seconds)
        clock.t += seconds

    monkeypatch.setattr(protection, "_sleep", fake_sleep)
    limiter = LocalRateLimiter([Limit("rpm", 120, 1, burst=1, headroom=0)], clock=clock)
    provider = ProtectedProvider(Scripted(), limiter=limiter, max_queue_wait_s=5)
    for _ in range(3):
        await provider.generate(_request())
    assert slept == [pytest.approx(1 / 119), pytest.approx(1 / 119)]
    assert provider.stats.rate_waits == 2


async def test_timeout_becomes_a_server_error_and_feeds_the_breaker() -> None:
    breaker = CircuitBreaker(1, cooldown_s=60)
    provider = ProtectedProvider(Scripted(5.0), timeout_s=0.05, breaker=breaker)
    with pytest.raises(ServerError, match="did not answer within"):
        await provider.generate(_request())
    assert provider.stats.timeouts == 1 and breaker.state is BreakerState.OPEN


async def test_concurrency_is_bounded() -> None:
    inner = Scripted(*[0.02] * 20)
    provider = ProtectedProvider(inner, max_in_flight=3)
    await asyncio.gather(*(provider.generate(_request()) for _ in range(20)))
    assert inner.max_in_flight == 3


async def test_tokens_per_minute_is_corrected_after_the_call() -> None:
    clock = Clock(0.0)
    limiter = LocalRateLimiter([Limit("tpm", 10_000, 60, burst=5_000)], clock=clock)
    provider = ProtectedProvider(Scripted(), limiter=limiter, expected_output_tokens=100)
    await provider.generate(_request(prompt="x" * 400))  # estimate 100 + 100, used 15
    assert limiter._states["tpm"].tokens == pytest.approx(5_000 - 15)


def test_protect_from_settings() -> None:
    plain = protect(SimulatedProvider(), Settings())
    assert plain.limiter is None and plain.breaker is None and plain.max_in_flight is None
    tuned = protect(
        SimulatedProvider(),
        Settings(
            llm_rpm=600,
            llm_tpm=100_000,
            llm_rpd=1000,
            llm_breaker_failures=4,
            llm_max_in_flight=8,
            llm_max_calls=9,
        ),
    )
    assert tuned.limiter is not None
    assert [lim.name for lim in tuned.limiter.limits] == ["rpm", "tpm", "rpd"]
    assert tuned.breaker is not None and tuned.breaker.failure_threshold == 4
    assert tuned.max_in_flight == 8 and tuned.max_calls_per_question == 9
    assert [x.name for x in limits_from_settings(Settings(llm_rpm=15))] == ["rpm"]
    with pytest.raises(ValueError, match="postgres"):
        protect(SimulatedProvider(), Settings(llm_rpm=10, llm_rate_backend="postgres"))


def test_the_call_bound_is_known_only_when_nothing_in_the_call_waits_unbounded() -> None:
    limits = [Limit("rpm", 600, 60, burst=10)]
    assert ProtectedProvider(Scripted(), timeout_s=5.0).call_bound_s == 5.0
    local = ProtectedProvider(
        Scripted(), timeout_s=5.0, limiter=LocalRateLimiter(limits), max_queue_wait_s=2.0
    )
    assert local.call_bound_s == 7.0  # the limiter's longest wait, then the call
    assert ProtectedProvider(Scripted()).call_bound_s is None  # no timeout
    # a concurrency bound queues without limit
    assert ProtectedProvider(Scripted(), timeout_s=5.0, max_in_flight=4).call_bound_s is None

    class Remote:  # a limiter elsewhere (PostgreSQL): its reservation is a round trip
        def __init__(self) -> None:
            self.limits = limits

        async def reserve(self, costs: object, max_wait_s: float) -> Reservation:
            return Reservation(True, 0.0)

        async def adjust(self, name: str, delta: float) -> None: ...

        async def aclose(self) -> None: ...

    assert ProtectedProvider(Scripted(), timeout_s=5.0, limiter=Remote()).call_bound_s is None


async def test_with_a_call_bound_the_caller_sees_the_providers_timeout() -> None:
    """The worker adds no timeout of its own over a bounded provider: a slow call still ends
    as the provider's ServerError, at the provider's bound."""
    from qaloop.bus.base import Topics
    from qaloop.core.model import Envelope
    from qaloop.core.retry import RetryPolicy
    from qaloop.services.worker import Worker, WorkerConfig

    provider = ProtectedProvider(Scripted(5.0), timeout_s=0.05)
    policy = RetryPolicy(overload_tries=1, backoff_base_s=0.0, backoff_cap_s=0.0)
    worker = Worker(provider, Topics(), WorkerConfig(request_timeout_s=60.0), policy)
    assert not worker._own_timeout
    [record] = await worker.handle(Envelope("0" * 32, "Why?", None, "t", 1.0))
    assert provider.stats.timeouts == 1
    assert b"did not answer within 0.05 s" in record.value
    # a bound at or past the worker's own timeout keeps the worker's
    assert Worker(provider, Topics(), WorkerConfig(request_timeout_s=0.05), policy)._own_timeout
