"""The worker routes each LLM outcome by error class: answer -> generated, 503 -> backoff
retries then park, 429 -> park until due, permanent -> dead letter with the reason."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from qaloop.bus.base import OutMessage, Topics
from qaloop.core import codec
from qaloop.core.model import Envelope, ErrorClass, EventKind, QuestionState
from qaloop.core.retry import RetryPolicy
from qaloop.llm.base import (
    Generation,
    GenerationRequest,
    LLMError,
    OverloadError,
    PermanentError,
    QuotaDayError,
    QuotaMinuteError,
    ServerError,
)
from qaloop.services.worker import Worker, WorkerConfig

TOPICS = Topics()
POLICY = RetryPolicy(
    overload_tries=3,
    backoff_base_s=0.001,
    backoff_cap_s=5.0,
    quota_default_delay_s=30.0,
    quota_day_delay_s=3600.0,
    max_parks=3,
)


class ScriptedProvider:
    name = "scripted"

    def __init__(self, script: Sequence[LLMError | str]) -> None:
        self.script = list(script)
        self.requests: list[GenerationRequest] = []

    async def generate(self, request: GenerationRequest) -> Generation:
        self.requests.append(request)
        step = self.script.pop(0)
        if isinstance(step, LLMError):
            raise step
        return Generation(text=step, latency_ms=1.0, input_tokens=5, output_tokens=2)

    async def aclose(self) -> None:
        return None


def _worker(script: Sequence[LLMError | str]) -> tuple[Worker, ScriptedProvider]:
    provider = ScriptedProvider(script)
    return Worker(provider, TOPICS, WorkerConfig(), POLICY, clock=lambda: 100.0), provider


def _env() -> Envelope:
    return Envelope("c" * 32, "Why is the sky blue?", "Rayleigh scattering", "t", 90.0)


def _only(outputs: list[OutMessage]) -> tuple[str, Envelope]:
    assert len(outputs) == 1
    return outputs[0].topic, codec.decode(outputs[0].value)


async def test_answer_goes_to_generated() -> None:
    worker, provider = _worker(["Because of Rayleigh scattering"])
    topic, env = _only(await worker.handle(_env()))
    assert topic == TOPICS.generated
    assert env.state is QuestionState.SCORING and env.answer == "Because of Rayleigh scattering"
    assert env.llm_calls == 1
    assert env.history[-1].kind is EventKind.GENERATED
    assert env.history[-1].detail == "tokens in=5 out=2"
    assert "Why is the sky blue?" in provider.requests[0].prompt


async def test_overload_retries_then_recovers() -> None:
    worker, provider = _worker([OverloadError("503"), ServerError("500"), "ok"])
    topic, env = _only(await worker.handle(_env()))
    assert topic == TOPICS.generated
    assert env.llm_calls == 3
    assert [e.error_class for e in env.history if e.kind == "llm_error"] == [
        ErrorClass.OVERLOAD,
        ErrorClass.SERVER,
    ]
    assert [r.try_no for r in provider.requests] == [1, 2, 3]
    assert worker.stats.retried_now == {"overload": 1, "server": 1}
    assert worker.stats.recovered == {"overload": 1, "server": 1}


async def test_overload_exhausted_parks_for_the_cap() -> None:
    worker, _ = _worker([OverloadError("503")] * 3)
    topic, env = _only(await worker.handle(_env()))
    assert topic == TOPICS.delayed
    assert env.due_at == 105.0 and env.tries_in_attempt == 0
    assert env.history[-1].kind is EventKind.PARKED


@pytest.mark.parametrize(
    ("error", "due_at"),
    [
        (QuotaMinuteError("429", retry_after_s=17.0), 117.0),
        (QuotaMinuteError("429"), 130.0),
        (QuotaDayError("429 per day"), 3700.0),
    ],
)
async def test_quota_parks_without_blocking(error: LLMError, due_at: float) -> None:
    worker, provider = _worker([error])
    topic, env = _only(await worker.handle(_env()))
    assert topic == TOPICS.delayed
    assert env.due_at == due_at
    assert env.error_class is error.error_class
    assert len(provider.requests) == 1  # no in-process retry for quota


async def test_permanent_error_is_dead_lettered_with_reason() -> None:
    worker, _ = _worker([PermanentError("400 invalid argument: prompt too long")])
    topic, env = _only(await worker.handle(_env()))
    assert topic == TOPICS.dead_letter
    assert env.state is QuestionState.FAILED
    assert env.error_class is ErrorClass.PERMANENT
    assert "invalid argument" in (env.error_detail or "")


async def test_park_budget_ends_in_dead_letter() -> None:
    worker, _ = _worker([QuotaMinuteError("429", retry_after_s=1)])
    env = _env()
    for _ in range(3):
        env = env.with_event(EventKind.PARKED, 95.0)
    topic, out_env = _only(await worker.handle(env))
    assert topic == TOPICS.dead_letter
    assert "budget" in (out_env.error_detail or "")


async def test_timeout_is_a_server_error() -> None:
    class Slow(ScriptedProvider):
        async def generate(self, request: GenerationRequest) -> Generation:
            import asyncio

            self.requests.append(request)
            if len(self.requests) == 1:
                await asyncio.sleep(10)
            return Generation("late but fine", 1.0)

    provider = Slow([])
    worker = Worker(
        provider, TOPICS, WorkerConfig(request_timeout_s=0.05), POLICY, clock=lambda: 100.0
    )
    topic, env = _only(await worker.handle(_env()))
    assert topic == TOPICS.generated
    assert env.history[0].error_class is ErrorClass.SERVER
