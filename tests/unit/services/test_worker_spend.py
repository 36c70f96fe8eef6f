"""The worker prices every answer into its generated event (docs/spend.md), and the usage
survives the trip through the codec (the envelope is what reaches storage)."""

from __future__ import annotations

from qaloop.core import codec
from qaloop.core.model import Envelope, EventKind
from qaloop.llm.accounting import Meter
from qaloop.llm.base import Generation, GenerationRequest
from qaloop.llm.pricing import PriceTable
from qaloop.services.worker import Worker, WorkerConfig
from tests.unit.services.test_worker import POLICY, TOPICS


class Fixed:
    name = "openai"
    model = "gpt-4o-mini"

    def __init__(self, generation: Generation) -> None:
        self.generation = generation

    async def generate(self, request: GenerationRequest) -> Generation:
        return self.generation

    async def aclose(self) -> None:
        return None


def _env(attempt: int = 1) -> Envelope:
    env = Envelope("q1", "Why is the sky blue?", "Rayleigh scattering.", "t1", 1.0, attempt=attempt)
    return env.with_event(EventKind.ACCEPTED, 1.0)


async def _generated(generation: Generation, attempt: int = 1) -> Envelope:
    worker = Worker(
        Fixed(generation), TOPICS, WorkerConfig(), POLICY, meter=Meter(PriceTable.load())
    )
    [message] = await worker.handle(_env(attempt))
    assert message.topic == TOPICS.generated
    return codec.decode(message.value)


async def test_answer_carries_its_priced_usage_through_the_codec() -> None:
    g = Generation("Light scatters.", 1.0, model="gpt-4o-mini", input_tokens=40, output_tokens=5)
    env = await _generated(g, attempt=2)
    usage = env.history[-1].usage
    assert usage is not None
    assert (usage.purpose, usage.provider, usage.model) == ("generate", "openai", "gpt-4o-mini")
    assert (usage.input_tokens, usage.output_tokens, usage.estimated) == (40, 5, False)
    assert usage.cost_usd == (40 * 0.15 + 5 * 0.60) / 1e6
    assert env.history[-1].attempt == 2  # a regeneration, for the report's share


async def test_answer_without_usage_is_estimated_not_free() -> None:
    env = await _generated(Generation("Light scatters off air molecules.", 1.0, model=""))
    usage = env.history[-1].usage
    assert usage is not None and usage.estimated
    assert usage.model == "gpt-4o-mini"  # the configured model, as nothing else was reported
    assert usage.input_tokens > 10 and usage.output_tokens > 0 and usage.cost_usd > 0


async def test_worker_without_a_meter_records_no_usage() -> None:
    worker = Worker(Fixed(Generation("x", 1.0)), TOPICS, WorkerConfig(), POLICY)
    [message] = await worker.handle(_env())
    assert codec.decode(message.value).history[-1].usage is None
