"""/v1/stats reports the stored spend (docs/spend.md) once questions have been answered."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from qaloop.gateway.http import create_app
from qaloop.pipeline import EmbeddedPipeline
from qaloop.settings import Settings


async def test_stats_report_cost_per_validated_answer(tmp_path: Path) -> None:
    pipeline = EmbeddedPipeline(Settings(db=f"sqlite:///{tmp_path / 's.db'}"))
    await pipeline.start()
    try:
        app = create_app(pipeline.service, pipeline.settings, stats=pipeline.stats)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            for i in range(5):
                body = {"question": f"Question {i}?", "reference_answer": f"answer {i} " * 20}
                assert (await client.post("/v1/questions", json=body)).status_code == 202
            assert await pipeline.drain(20)
            cost = (await client.get("/v1/stats")).json()["cost"]
    finally:
        await pipeline.stop()
    assert cost["calls"] >= 5 and cost["questions"] == 5
    assert cost["cost_usd"] > 0
    assert cost["estimated_calls"] == 0  # the simulated provider reports its usage
    assert set(cost["by_purpose"]) == {"generate"}
    if cost["validated"]:
        per = cost["cost_usd"] / cost["validated"]
        assert cost["per_validated_answer_usd"] == pytest.approx(per, rel=1e-6)
