"""The batch clients against the fake server's batch protocols (tests/fakes/llm_batch.py):
submit, status polls, results, a partial failure, a failed job, an expired job; and the batch
lane's regenerations, which get the interactive lane's escalation (model and temperature per
attempt) and feedback prompt. OpenAI over httpx; Gemini through google-genai (skipped without
the gemini extra)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import pytest

from qaloop.bus.base import OutMessage, Topics
from qaloop.core import codec
from qaloop.core.model import Envelope, EventKind, QuestionState
from qaloop.core.routing import FEEDBACK, GateConfig, judge
from qaloop.llm.accounting import Meter
from qaloop.llm.base import Generation, GenerationRequest, PermanentError
from qaloop.llm.batch import (
    BatchClient,
    BatchExpired,
    BatchItem,
    BatchPoll,
    BatchState,
    GeminiBatchClient,
    OpenAIBatchClient,
)
from qaloop.llm.pricing import PriceTable
from qaloop.quality.verdict import Outcome, Reason, Verdict
from qaloop.services.batch_lane import BatchLane, BatchLaneConfig
from qaloop.settings import Settings
from qaloop.wiring import batch_lane_for
from tests.fakes.llm_server import FakeConfig, FakeLLMServer

PROVIDERS = ["openai", "gemini"]
MODELS = {"openai": "gpt-4o-mini", "gemini": "gemini-2.5-flash-lite"}


def _items() -> list[BatchItem]:
    prompts = [
        "Question: Why is the sky blue?\n\nAnswer:",
        "Question: Bad one [[fake:400]]?",
        "Question: How do tides work?\n\nAnswer:",
        "Question: What is rain?\n\nAnswer:",
    ]
    return [
        BatchItem(f"q{i}", GenerationRequest(f"q{i}", p, 1, 1, p)) for i, p in enumerate(prompts)
    ]


def _client(kind: str, base_url: str) -> BatchClient:
    if kind == "openai":
        return OpenAIBatchClient(base_url=f"{base_url}/v1", model=MODELS[kind], api_key="k")
    pytest.importorskip("google.genai", reason="the gemini extra is not installed")
    return GeminiBatchClient("k", model=MODELS[kind], base_url=base_url)


@dataclass
class Job:
    """One job of `_items()` submitted to the fake server, and every status poll's answer."""

    kind: str
    server: FakeLLMServer
    polls: list[BatchPoll]


@pytest.fixture
def outcome() -> str:
    """The fake batch's outcome; a test parametrises it to "fail" or "expire"."""
    return "complete"


@pytest.fixture(params=PROVIDERS)
async def job(request: pytest.FixtureRequest, outcome: str) -> AsyncIterator[Job]:
    """`_items()` submitted to the fake server and polled three times, per provider."""
    with FakeLLMServer(FakeConfig(batch_polls=2, batch_outcome=outcome)) as server:
        client = _client(request.param, server.base_url)
        try:
            job_id = await client.submit(_items())
            polls = [await client.poll(job_id) for _ in range(3)]
        finally:
            await client.aclose()
        yield Job(request.param, server, polls)


async def test_submit_poll_results_with_a_partial_failure(job: Job) -> None:
    assert [p.state for p in job.polls] == [BatchState.RUNNING, BatchState.RUNNING, BatchState.DONE]
    done = job.polls[-1]
    assert set(done.results) == {"q0", "q1", "q2", "q3"}
    ok = done.results["q0"]
    assert isinstance(ok, Generation) and "Why is the sky blue?" in ok.text
    assert ok.input_tokens is not None and ok.output_tokens is not None  # usage, for the price
    bad = done.results["q1"]
    assert isinstance(bad, PermanentError) and bad.status == 400
    assert job.server.batch.submitted == 1 and job.server.batch.status_reads == 3
    assert len(job.server.stats.arrivals) == 0  # no interactive call


@pytest.mark.parametrize("outcome", ["fail"])
async def test_a_failed_job(job: Job) -> None:
    last = job.polls[-1]
    assert last.state is BatchState.FAILED and not last.results
    assert "fail" in last.detail.lower()


@pytest.mark.parametrize("outcome", ["expire"])
async def test_an_expired_job(job: Job) -> None:
    last = job.polls[-1]
    assert last.state is BatchState.EXPIRED
    if job.kind == "openai":  # the first half ran; the rest is in the error file, batch_expired
        assert isinstance(last.results["q0"], Generation)
        assert isinstance(last.results["q2"], BatchExpired)
        assert isinstance(last.results["q3"], BatchExpired)
    else:  # Gemini gives no results for an expired job
        assert last.results == {}


# ---------------------------------------------------------------- the lane's per-attempt settings

# The escalated model of each provider; the openai one is priced by the test's own table (an
# input of the test, not a public price).
STRONGER = {"openai": "gpt-4o-test", "gemini": "gemini-2.5-flash"}


def _price_table(tmp_path: Path) -> str:
    path = tmp_path / "prices.toml"
    text = resources.files("qaloop.llm").joinpath("prices.toml").read_text("utf-8")
    path.write_text(
        text + '\n[[price]]\nprovider = "openai"\nmodel = "gpt-4o-test"\ninput = 2.5\n'
        "output = 10.0\ncached_input = 1.25\nbatch_input = 1.25\nbatch_output = 5.0\n"
        'source = "a test price"\nread_on = "2026-12-01"\n',
        encoding="utf-8",
    )
    return str(path)


def _rejected(question_id: str) -> Envelope:
    """Attempt 1 rejected as an echo, in the feedback arm: the regeneration is attempt 2."""
    env = Envelope(question_id, "Why is the sky blue?", "Rayleigh scattering.", "t", 1.0)
    env = env.with_event(EventKind.ACCEPTED, 1.0).evolve(
        state=QuestionState.SCORING, answer="Why is the sky blue?", lane="batch"
    )
    verdict = Verdict(0.1, Outcome.FAIL, Reason.ECHO, "repeats the question", "gate")
    _, routed = judge(env, verdict, GateConfig(0.5, 2, control_share=0.0), 2.0)
    assert routed.attempt == 2 and routed.arm == FEEDBACK
    return routed


@pytest.mark.parametrize("kind", PROVIDERS)
async def test_a_batch_regeneration_is_escalated_like_an_interactive_one(
    kind: str, tmp_path: Path
) -> None:
    if kind == "gemini":
        pytest.importorskip("google.genai", reason="the gemini extra is not installed")
    sink: list[OutMessage] = []

    async def publish(messages: Sequence[OutMessage]) -> None:
        sink.extend(messages)

    with FakeLLMServer(FakeConfig(batch_polls=0)) as server:
        settings = Settings(
            llm=kind,
            llm_model=MODELS[kind],
            llm_base_url=f"{server.base_url}/v1" if kind == "openai" else server.base_url,
            llm_api_key="k",
            batch_lane=True,
            max_attempts=2,
            attempt_temperatures=[0.1, 0.9],
            last_attempt_model=STRONGER[kind],  # the alias of QALOOP_LLM_ESCALATION
            price_table=_price_table(tmp_path),
        )
        topics = Topics()
        meter = Meter(PriceTable.load(settings.price_table))
        built = batch_lane_for(settings, topics, _Bus(publish), meter)  # type: ignore[arg-type]
        assert built is not None
        lane: BatchLane = built
        lane.config = BatchLaneConfig(max_size=10, max_wait_s=0.0, poll_every_s=0.0)
        first = Envelope("a1", "How do tides work?", "The moon.", "t", 1.0, lane="batch")
        lane.take(first.with_event(EventKind.ACCEPTED, 1.0))
        lane.take(_rejected("b2"))
        try:
            for _ in range(6):  # submit both jobs, poll them to the end
                await lane.step()
        finally:
            await lane.aclose()
        batches = list(server.batch.batches.values())
    by_model = {b.model: b for b in batches}
    assert set(by_model) == {MODELS[kind], STRONGER[kind]}  # one job per model
    plain, stronger = by_model[MODELS[kind]], by_model[STRONGER[kind]]
    assert plain.temperatures == [0.1] and stronger.temperatures == [0.9]
    [(_, plain_prompt)] = plain.items
    [(_, feedback_prompt)] = stronger.items
    assert "rejected" not in plain_prompt
    assert "An earlier answer to this question was rejected" in feedback_prompt
    assert Reason.ECHO.feedback in feedback_prompt and "Rayleigh" not in feedback_prompt
    generated = {
        e.question_id: e for e in (codec.decode(m.value) for m in sink) if e.answer is not None
    }
    assert set(generated) == {"a1", "b2"}
    usage = generated["b2"].history[-1].usage
    assert usage is not None and usage.lane == "batch"
    assert usage.model.startswith(STRONGER[kind])  # priced as the model that answered


class _Bus:
    """Only what batch_lane_for reads of a bus: its publish_many."""

    def __init__(self, publish: object) -> None:
        self.publish_many = publish
