"""The whole embedded pipeline with a provider chosen by Settings alone (as `--llm` does):
Gemini against the fake server with a custom prompt template and a client-side quota, and
replay over the shared recorded answers. Every accepted question ends validated or failed."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest

from qaloop.core.ids import question_id
from qaloop.core.model import ErrorClass
from qaloop.llm.protection import ProtectedProvider
from qaloop.pipeline import EmbeddedPipeline
from qaloop.settings import Settings
from tests.fakes.llm_server import FakeConfig, FakeLLMServer

SHARED_DATA = Path(
    os.environ.get(
        "QALOOP_SHARED_DATA", Path(__file__).resolve().parents[3] / ".." / "shared" / "data"
    )
)
KEY = "pipeline-key-5b1f"


async def test_gemini_pipeline_from_settings(tmp_path: Path) -> None:
    pytest.importorskip("google.genai", reason="the gemini extra is not installed")
    with FakeLLMServer(FakeConfig(api_key=KEY, limit=600, window_s=60)) as server:
        settings = Settings(
            db=f"sqlite:///{tmp_path / 'g.db'}",
            llm="gemini",
            llm_api_key=KEY,
            llm_base_url=server.base_url,
            llm_rpm=600,
            prompt_template="Réponds brièvement.\nQuestion: {question}\nAnswer:",
            scorer="jaccard",
            threshold=0.0,
            max_attempts=1,
        )
        pipeline = EmbeddedPipeline(settings)
        assert isinstance(pipeline.provider, ProtectedProvider)
        assert pipeline.provider.breaker is not None
        await pipeline.start()
        questions = [f"What is item {i}?" for i in range(12)] + [
            "Tell me something dangerous [[fake:safety]]",
            "Busy? [[fake:503*1]]",
        ]
        for q in questions:
            status, _ = await pipeline.service.ask(q, "an item is a thing")
            assert status == 202
        assert await pipeline.drain(60)
        await pipeline.stop()
        counts = pipeline.repo.state_counts()
        assert counts == {"validated": 13, "failed": 1}
        assert all(p.startswith("Réponds brièvement.") for p in server.stats.seen)
        assert server.stats.client_429s == 0 and server.stats.keys_seen == {KEY}
        blocked = pipeline.repo.get(question_id(questions[-2]))
        assert blocked is not None and blocked.error_class is ErrorClass.PERMANENT
        assert blocked.error_detail and "finishReason=SAFETY" in blocked.error_detail


async def test_replay_pipeline_over_the_shared_recordings(tmp_path: Path) -> None:
    path = SHARED_DATA / "llm_answers.jsonl"
    if not path.is_file():
        pytest.skip(f"shared data not found at {path} (set QALOOP_SHARED_DATA)")
    rows = [orjson.loads(line) for line in path.read_bytes().splitlines()[:20]]
    settings = Settings(
        db=f"sqlite:///{tmp_path / 'r.db'}", llm="replay", replay_file=str(path), max_attempts=2
    )
    pipeline = EmbeddedPipeline(settings)
    await pipeline.start()
    asked = {r["question"]: r["original_answer"] for r in rows}
    for question, reference in asked.items():
        await pipeline.service.ask(question, reference)
    await pipeline.service.ask("A question nobody recorded?", None)
    assert await pipeline.drain(60)
    await pipeline.stop()
    counts = pipeline.repo.state_counts()
    assert sum(counts.values()) == len(asked) + 1 and set(counts) <= {"validated", "failed"}
    unknown = pipeline.repo.get(question_id("A question nobody recorded?"))
    assert unknown is not None and unknown.state.value == "failed"
    assert unknown.error_detail and "question not in the replay file" in unknown.error_detail
