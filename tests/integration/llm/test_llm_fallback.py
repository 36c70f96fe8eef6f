"""Fallbacks over real protocols: two fake servers stand for two deployments (the first one
out of daily quota, or refusing the model), the real providers and the real Worker; the
generated answer records the deployment that answered, and its price."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from qaloop.bus.base import Topics
from qaloop.core import codec
from qaloop.core.ids import question_id
from qaloop.core.model import Envelope
from qaloop.core.retry import RetryPolicy
from qaloop.llm.accounting import Meter
from qaloop.llm.deployments import Deployment
from qaloop.llm.fallback import FallbackProvider
from qaloop.llm.openai_compat import OpenAICompatProvider
from qaloop.llm.pricing import PriceTable
from qaloop.llm.protection import ProtectedProvider
from qaloop.services.worker import Worker, WorkerConfig
from tests.fakes.llm_server import FakeConfig, FakeLLMServer

TOPICS = Topics()
POLICY = RetryPolicy(overload_tries=2, backoff_base_s=0.01, backoff_cap_s=0.05)


@pytest.fixture
def servers(request: pytest.FixtureRequest) -> Iterator[tuple[FakeLLMServer, FakeLLMServer]]:
    with (
        FakeLLMServer(FakeConfig(force=request.param)) as first,
        FakeLLMServer(FakeConfig()) as second,
    ):
        yield first, second


def _openai(base_url: str, model: str) -> ProtectedProvider:
    return ProtectedProvider(OpenAICompatProvider(base_url=f"{base_url}/v1", model=model))


def _envelope(question: str) -> Envelope:
    return Envelope(question_id(question), question, None, "trace", time.time())


@pytest.mark.parametrize("servers", ["429day", "404"], indirect=True)
async def test_openai_primary_falls_back_to_the_second_deployment(
    servers: tuple[FakeLLMServer, FakeLLMServer],
) -> None:
    first, second = servers
    primary = Deployment("openai", "gpt-4o-mini")
    backup = Deployment("gemini", "gemini-2.5-flash")  # priced as Gemini, served by the fake
    chain = FallbackProvider(
        [
            (primary, _openai(first.base_url, primary.model)),
            (backup, _openai(second.base_url, backup.model)),
        ]
    )
    worker = Worker(chain, TOPICS, WorkerConfig(), POLICY, meter=Meter(PriceTable.load()))
    try:
        for i in range(3):
            [out] = await worker.handle(_envelope(f"Why is the sky blue, {i}?"))
            assert out.topic == TOPICS.generated
            usage = codec.decode(out.value).history[-1].usage
            assert usage is not None and usage.model == "gemini-2.5-flash"
            assert usage.provider == "gemini" and usage.cost_usd > 0
    finally:
        await chain.aclose()
    # a daily quota rests the first deployment: it was asked once, not three times
    expected_first = 1 if first.config.force == "429day" else 3
    assert len(first.stats.arrivals) == expected_first
    assert len(second.stats.arrivals) == 3


async def test_gemini_sdk_model_error_falls_back_to_openai() -> None:
    pytest.importorskip("google.genai", reason="the gemini extra is not installed")
    from qaloop.llm.gemini import GeminiProvider

    with (
        FakeLLMServer(FakeConfig(force="404")) as gone,
        FakeLLMServer(FakeConfig()) as ok,
    ):
        gemini = ProtectedProvider(GeminiProvider("k", base_url=gone.base_url, timeout_s=2.0))
        chain = FallbackProvider(
            [
                (Deployment("gemini", "gemini-2.5-flash-lite"), gemini),
                (Deployment("openai", "gpt-4o-mini"), _openai(ok.base_url, "gpt-4o-mini")),
            ]
        )
        worker = Worker(chain, TOPICS, WorkerConfig(), POLICY, meter=Meter(PriceTable.load()))
        try:
            [out] = await worker.handle(_envelope("How do tides work?"))
        finally:
            await chain.aclose()
    env = codec.decode(out.value)
    assert out.topic == TOPICS.generated
    assert env.history[-1].usage is not None
    assert env.history[-1].usage.model == "gpt-4o-mini"
    assert chain.moves == {("gemini/gemini-2.5-flash-lite", "model_error"): 1}
