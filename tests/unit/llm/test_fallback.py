"""The fallback chain: which errors move a call on, resting after a daily quota, open circuits,
the error the worker sees when all fall through, escalation by attempt, settings and factory."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pytest
from pydantic import ValidationError

from qaloop.llm.accounting import meter_from_settings
from qaloop.llm.base import (
    CircuitOpenError,
    Generation,
    GenerationRequest,
    LLMError,
    OverloadError,
    PermanentError,
    QuotaDayError,
    QuotaMinuteError,
)
from qaloop.llm.deployments import Deployment, DeploymentError, parse
from qaloop.llm.escalation import Escalation, Step, escalation_from_settings
from qaloop.llm.factory import configured_deployments, make_provider
from qaloop.llm.fallback import FallbackProvider, fallback_stats
from qaloop.llm.pricing import PriceTableError
from qaloop.llm.protection import CircuitBreaker, ProtectedProvider
from qaloop.observability.metrics import Metrics
from qaloop.settings import Settings


class Scripted:
    def __init__(self, name: str, script: Sequence[LLMError | str]) -> None:
        self.name = name
        self.script = list(script)
        self.calls = 0

    async def generate(self, request: GenerationRequest) -> Generation:
        self.calls += 1
        step = self.script.pop(0) if self.script else "ok"
        if isinstance(step, LLMError):
            raise step
        return Generation(step, 1.0, input_tokens=3, output_tokens=1)

    async def aclose(self) -> None:
        return None


A = Deployment("gemini", "gemini-2.5-flash-lite")
B = Deployment("openai", "gpt-4o-mini")


def _req(attempt: int = 1) -> GenerationRequest:
    return GenerationRequest("q", "Why?", attempt, 1, "Question: Why?\n\nAnswer:")


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


async def test_daily_quota_moves_on_and_the_deployment_rests_until_reset() -> None:
    clock = Clock()
    a = Scripted("gemini", [QuotaDayError("per day", retry_after_s=600.0)])
    b = Scripted("openai", [])
    chain = FallbackProvider([(A, a), (B, b)], clock=clock)
    metrics = Metrics()
    chain.metrics = metrics
    g = await chain.generate(_req())
    assert (g.provider, g.model, g.requested_model) == ("openai", "gpt-4o-mini", "gpt-4o-mini")
    await chain.generate(_req())
    assert (a.calls, b.calls) == (1, 2)  # resting: not called again
    clock.t += 601
    g = await chain.generate(_req())
    assert g.provider == "gemini" and a.calls == 2
    assert fallback_stats(chain)["answered_by"] == {"openai/gpt-4o-mini": 2,
                                                    "gemini/gemini-2.5-flash-lite": 1}  # fmt: skip
    text = metrics.exposition().decode()
    assert 'qaloop_llm_fallbacks_total{deployment="gemini/gemini-2.5-flash-lite",' in text


async def test_open_circuit_moves_on_but_a_503_goes_back_to_the_worker() -> None:
    inner = Scripted("gemini", [OverloadError("503", status=503)])
    a = ProtectedProvider(inner, breaker=CircuitBreaker(1, 60.0))
    b = Scripted("openai", [])
    chain = FallbackProvider([(A, a), (B, b)])
    with pytest.raises(OverloadError) as first:
        await chain.generate(_req())  # the worker retries/parks a plain overload
    assert not isinstance(first.value, CircuitOpenError) and b.calls == 0
    g = await chain.generate(_req())  # the breaker is open now: fail fast, move on
    assert g.provider == "openai" and inner.calls == 1


@pytest.mark.parametrize(
    ("error", "moves"),
    [
        (PermanentError("openai-compatible 404: model not found", status=404), True),
        (PermanentError("401 bad key", status=401), True),
        (PermanentError("gemini stopped the answer: finishReason=SAFETY"), False),
        (QuotaMinuteError("per minute", retry_after_s=2.0), False),
    ],
)
async def test_which_errors_move_on(error: LLMError, moves: bool) -> None:
    b = Scripted("openai", [])
    chain = FallbackProvider([(A, Scripted("gemini", [error])), (B, b)])
    if moves:
        assert (await chain.generate(_req())).provider == "openai"
    else:
        with pytest.raises(type(error)):
            await chain.generate(_req())
        assert b.calls == 0


async def test_when_all_fall_through_the_soonest_retryable_error_wins() -> None:
    chain = FallbackProvider(
        [
            (A, Scripted("gemini", [QuotaDayError("day", retry_after_s=7200.0)])),
            (B, Scripted("openai", [CircuitOpenError("open", retry_after_s=4.0)])),
        ]
    )
    with pytest.raises(CircuitOpenError) as err:
        await chain.generate(_req())
    assert err.value.retry_after_s == 4.0  # parked 4 s, not dead-lettered, not a day
    only_permanent = FallbackProvider(
        [
            (A, Scripted("gemini", [PermanentError("404", status=404)])),
            (B, Scripted("openai", [PermanentError("403", status=403)])),
        ]
    )
    with pytest.raises(PermanentError, match="404"):
        await only_permanent.generate(_req())


async def test_escalation_by_attempt() -> None:
    a, b = Scripted("gemini", []), Scripted("openai", [])
    chain = FallbackProvider([(A, a), (B, b)], escalation=[A.key, B.key])
    escalation = Escalation((A.key, B.key))

    async def answered_by(attempt: int) -> str:
        step = escalation.step(attempt)
        request = dataclasses.replace(_req(attempt), deployment=step.deployment)
        return (await chain.generate(request)).provider

    assert [await answered_by(n) for n in (1, 2, 5)] == ["gemini", "openai", "openai"]
    assert escalation.step(9).deployment == B.key  # past the end: the last
    assert Escalation().step(2) == Step(None, None)
    with pytest.raises(DeploymentError, match="neither the primary"):
        FallbackProvider([(A, a)], escalation=["openai/gpt-5"])


async def test_an_escalation_only_deployment_is_never_a_fallback() -> None:
    a = Scripted("gemini", [QuotaDayError("day gone")] * 3)
    big, b = Scripted("gemini", []), Scripted("openai", [])
    BIG = Deployment("gemini", "gemini-2.5-pro")
    chain = FallbackProvider(
        [(A, a), (B, b), (BIG, big)], escalation=[A.key, BIG.key], escalation_only=[BIG.key]
    )
    assert (await chain.generate(_req(1))).provider == "openai"  # not the big model
    assert big.calls == 0
    request = dataclasses.replace(_req(2), deployment=BIG.key)
    assert (await chain.generate(request)).model == "gemini-2.5-pro"


def test_deployment_syntax() -> None:
    assert parse("gemini/gemini-2.5-flash, openai/gpt-4o-mini@http://127.0.0.1:1/v1") == [
        Deployment("gemini", "gemini-2.5-flash"),
        Deployment("openai", "gpt-4o-mini", "http://127.0.0.1:1/v1"),
    ]
    [d] = parse('[{"provider": "openai", "model": "m", "rpm": 5, "api_key_file": "/k"}]')
    assert (d.rpm, d.api_key_file, d.tpm) == (5, "/k", None)
    for bad, match in [
        ("gpt-4o-mini", "expected provider/model"),
        ("azure/gpt-4o", "unknown provider"),
        ('[{"provider": "openai"}]', "needs a provider and a model"),
        ('[{"provider": "openai", "model": "m", "rpm": -1}]', "rpm must be an integer"),
        ('[{"provider": "openai", "model": "m", "colour": 1}]', "unknown field"),
        ("[{", "not valid JSON"),
        ("openai/m,openai/m", "listed twice"),
    ]:
        with pytest.raises(DeploymentError, match=match):
            parse(bad)


def test_bad_fallbacks_setting_is_refused_at_start() -> None:
    with pytest.raises(ValidationError, match="expected provider/model"):
        Settings(llm_fallbacks="gpt-4o-mini")
    with pytest.raises(ValidationError, match="unknown provider"):
        Settings(llm_escalation="azure/x")


async def test_factory_builds_a_chain_with_its_own_limits_per_deployment() -> None:
    settings = Settings(
        llm_fallbacks='[{"provider": "simulated", "model": "big", "rpm": 7}]',
        llm_rpm=60,
        llm_escalation="simulated/simulated,simulated/big",
    )
    chain = make_provider(settings)
    assert isinstance(chain, FallbackProvider)
    (_, first), (second_dep, second) = chain.chain
    assert isinstance(first, ProtectedProvider) and isinstance(second, ProtectedProvider)
    assert first.limiter is not None and second.limiter is not None
    assert first.limiter is not second.limiter  # own buckets
    assert [lim.limit for lim in second.limiter.limits] == [7.0]
    assert second_dep.key == "simulated/big"
    await chain.aclose()
    assert configured_deployments(settings) == [("simulated", "simulated"), ("simulated", "big")]
    with pytest.raises(DeploymentError, match="primary model already"):
        make_provider(Settings(llm_fallbacks="simulated/simulated"))


def test_every_fallback_needs_a_price() -> None:
    with pytest.raises(PriceTableError, match="openai/gpt-9"):
        meter_from_settings(Settings(llm_fallbacks="gemini/gemini-2.5-flash,openai/gpt-9"))
    meter_from_settings(Settings(llm_fallbacks="gemini/gemini-2.5-flash,openai/gpt-4o-mini"))


async def test_last_attempt_model_is_an_alias_of_the_escalation() -> None:
    settings = Settings(last_attempt_model="big", max_attempts=3, attempt_temperatures=[0.2, 0.9])
    escalation = escalation_from_settings(settings)
    assert escalation.deployments == ("simulated/simulated", "simulated/simulated", "simulated/big")
    assert [escalation.step(n).temperature for n in (1, 2, 3)] == [0.2, 0.9, 0.9]
    chain = make_provider(settings)
    assert isinstance(chain, FallbackProvider)
    assert [d.key for d, _ in chain.chain] == ["simulated/simulated", "simulated/big"]
    assert chain.escalation_only == {"simulated/big"}  # not a fallback of attempts 1 and 2
    await chain.aclose()
    assert ("simulated", "big") in configured_deployments(settings)  # priced like any model
    same = Settings(llm_escalation="simulated/simulated,simulated/simulated,simulated/big")
    assert escalation_from_settings(same).deployments == escalation.deployments


def test_both_escalation_settings_at_once_is_a_start_up_error() -> None:
    with pytest.raises(ValidationError, match="both set: use one"):
        Settings(last_attempt_model="big", llm_escalation="simulated/simulated")
    with pytest.raises(ValidationError, match=r"in \[0, 2\]"):
        Settings(attempt_temperatures=[3.0])
