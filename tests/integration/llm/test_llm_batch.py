"""The batch clients against the fake server's batch protocols (tests/fakes/llm_batch.py):
submit, status polls, results, a partial failure, a failed job, an expired job. OpenAI over
httpx; Gemini through google-genai (skipped without the gemini extra)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from qaloop.llm.base import Generation, GenerationRequest, PermanentError
from qaloop.llm.batch import (
    BatchClient,
    BatchExpired,
    BatchItem,
    BatchState,
    GeminiBatchClient,
    OpenAIBatchClient,
)
from tests.fakes.llm_server import FakeConfig, FakeLLMServer

PROVIDERS = ["openai", "gemini"]


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
        return OpenAIBatchClient(base_url=f"{base_url}/v1", model="gpt-4o-mini", api_key="k")
    pytest.importorskip("google.genai", reason="the gemini extra is not installed")
    return GeminiBatchClient("k", model="gemini-2.5-flash-lite", base_url=base_url)


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[FakeLLMServer]:
    with FakeLLMServer(FakeConfig(batch_polls=2, batch_outcome=request.param)) as fake:
        yield fake


@pytest.mark.parametrize("server", ["complete"], indirect=True)
@pytest.mark.parametrize("kind", PROVIDERS)
async def test_submit_poll_results_with_a_partial_failure(kind: str, server: FakeLLMServer) -> None:
    client = _client(kind, server.base_url)
    try:
        job = await client.submit(_items())
        assert (await client.poll(job)).state is BatchState.RUNNING
        assert (await client.poll(job)).state is BatchState.RUNNING
        done = await client.poll(job)
    finally:
        await client.aclose()
    assert done.state is BatchState.DONE
    assert set(done.results) == {"q0", "q1", "q2", "q3"}
    ok = done.results["q0"]
    assert isinstance(ok, Generation) and "Why is the sky blue?" in ok.text
    assert ok.input_tokens is not None and ok.output_tokens is not None  # usage, for the price
    bad = done.results["q1"]
    assert isinstance(bad, PermanentError) and bad.status == 400
    assert server.batch.submitted == 1 and server.batch.status_reads == 3
    assert len(server.stats.arrivals) == 0  # no interactive call


@pytest.mark.parametrize("server", ["fail"], indirect=True)
@pytest.mark.parametrize("kind", PROVIDERS)
async def test_a_failed_job(kind: str, server: FakeLLMServer) -> None:
    client = _client(kind, server.base_url)
    try:
        job = await client.submit(_items())
        polls = [await client.poll(job) for _ in range(3)]
    finally:
        await client.aclose()
    assert polls[-1].state is BatchState.FAILED and not polls[-1].results
    assert "fail" in polls[-1].detail.lower()


@pytest.mark.parametrize("server", ["expire"], indirect=True)
@pytest.mark.parametrize("kind", PROVIDERS)
async def test_an_expired_job(kind: str, server: FakeLLMServer) -> None:
    client = _client(kind, server.base_url)
    try:
        job = await client.submit(_items())
        polls = [await client.poll(job) for _ in range(3)]
    finally:
        await client.aclose()
    last = polls[-1]
    assert last.state is BatchState.EXPIRED
    if kind == "openai":  # the first half ran; the rest is in the error file, batch_expired
        assert isinstance(last.results["q0"], Generation)
        assert isinstance(last.results["q2"], BatchExpired)
        assert isinstance(last.results["q3"], BatchExpired)
    else:  # Gemini gives no results for an expired job
        assert last.results == {}
