"""The batch lane end to end in the embedded pipeline over the real OpenAI protocol (fake
server): batch-priority questions go through one Batch API job, interactive ones through chat
completions; every question ends final; storage and the report tell the lanes apart (batch
tokens at half price). And the gateway's `priority` field."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from qaloop.gateway.http import create_app
from qaloop.pipeline import EmbeddedPipeline
from qaloop.report.cost import cost
from qaloop.settings import Settings
from tests.fakes.llm_server import FakeConfig, FakeLLMServer

REFERENCE = "a concise answer to the question about the subject " * 3
# The fake answers "A concise answer to: <what follows Question:>": more than the question,
# so the gate's echo check passes it at the first attempt.
TEMPLATE = (
    "Question: {question}\nThe subject of the question, explained with its main facts.\n\nAnswer:"
)


def _settings(db: Path, server: FakeLLMServer, **overrides: object) -> Settings:
    """The embedded pipeline on the fake OpenAI server, with its batch lane on."""
    return Settings(
        db=f"sqlite:///{db}",
        llm="openai",
        llm_base_url=f"{server.base_url}/v1",
        llm_model="gpt-4o-mini",
        batch_lane=True,
        batch_max_wait_s=60,
        batch_poll_s=0.2,
        threshold=0.0,  # any answer validates: these tests are about the lanes
        prompt_template=TEMPLATE,
        **overrides,  # type: ignore[arg-type]
    )


async def test_two_lanes_through_one_pipeline(tmp_path: Path) -> None:
    with FakeLLMServer(FakeConfig(batch_polls=1)) as server:
        # Submitted when all four are pending (by size, not by age: a loaded machine can
        # take longer than a short wait between two asks and split the job).
        settings = _settings(tmp_path / "b.db", server, batch_max_size=4)
        pipeline = EmbeddedPipeline(settings)
        await pipeline.start()
        try:
            for i in range(4):
                await pipeline.service.ask(f"Interactive question {i}?", REFERENCE)
                await pipeline.service.ask(f"Batch question {i}?", REFERENCE, lane="batch")
            assert await pipeline.drain(30)
            stats = pipeline.stats()
            usage = pipeline.repo.export_usage()
            questions = pipeline.repo.export_questions()
        finally:
            await pipeline.stop()
        assert server.batch.submitted == 1  # the four batch questions in one job
        assert len(server.stats.arrivals) == 4  # chat completions: interactive ones only
    assert stats["batch_lane"]["answered"] == 4
    assert stats["storage"] == {"validated": 8}
    lanes = {u["lane"] for u in usage}
    assert lanes == {"interactive", "batch"}
    per_token = {
        u["lane"]: u["cost_usd"] / (u["input_tokens"] * 0.15 + u["output_tokens"] * 0.60)
        for u in usage
    }
    assert per_token["batch"] == pytest.approx(per_token["interactive"] / 2 / 1e6 * 1e6)
    report = {r.lane: r for r in cost(usage, questions).lanes}
    assert report["batch"].questions == 4 and report["interactive"].questions == 4
    assert report["batch"].answer_p50_s is not None


async def test_priority_field(tmp_path: Path) -> None:
    pipeline = EmbeddedPipeline(Settings(db=f"sqlite:///{tmp_path / 'p.db'}"))
    await pipeline.start()
    try:
        app = create_app(pipeline.service, pipeline.settings, stats=pipeline.stats)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            bad = await client.post("/v1/questions", json={"question": "q?", "priority": "now"})
            assert bad.status_code == 422 and "priority" in bad.json()["error"]["message"]
            pipeline.pause_workers()
            ok = await client.post("/v1/questions", json={"question": "q?", "priority": "batch"})
            assert ok.status_code == 202
            record = pipeline.repo.unfinished()
            assert [e.lane for e in record] == ["batch"]
            pipeline.resume_workers()
            assert await pipeline.drain(10)  # no batch lane configured: answered interactively
    finally:
        await pipeline.stop()


async def test_a_job_in_flight_is_reattached_after_a_restart(tmp_path: Path) -> None:
    """The process stops with its job running at the provider; the next one, on the same
    journal, polls the job again and stores its answers (the safety copies are 25 h away)."""
    with FakeLLMServer(FakeConfig(batch_polls=10_000)) as server:
        settings = _settings(
            tmp_path / "r.db", server, batch_max_size=2, batch_journal=str(tmp_path / "batch.json")
        )
        first = EmbeddedPipeline(settings)
        await first.start()
        try:
            for i in range(2):
                await first.service.ask(f"Reattached question {i}?", REFERENCE, lane="batch")
            for _ in range(100):  # until the job is submitted
                if server.batch.submitted:
                    break
                await asyncio.sleep(0.05)
            assert server.batch.submitted == 1
        finally:
            await first.stop()
        server.config.batch_polls = 0  # the provider finishes the job meanwhile
        second = EmbeddedPipeline(settings)
        await second.start()
        try:
            assert await second.drain(30)
            states = {q["state"] for q in second.repo.export_questions()}
            lanes = {u["lane"] for u in second.repo.export_usage()}
        finally:
            await second.stop()
        # No new job: the old one was polled again. (Without the journal the restarted
        # pipeline resumes the unfinished questions into a second job, paying twice.)
        assert server.batch.submitted == 1
        assert len(server.stats.arrivals) == 0  # and nothing went interactive
    assert states == {"validated"} and lanes == {"batch"}
