"""/v1/stats reports the stored spend (docs/spend.md) once questions have been answered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from qaloop.gateway.http import create_app
from qaloop.pipeline import EmbeddedPipeline
from qaloop.settings import Settings


async def _cost_after(db: Path, bodies: list[dict[str, str]]) -> dict[str, Any]:
    """/v1/stats' cost once these questions are final."""
    pipeline = EmbeddedPipeline(Settings(db=f"sqlite:///{db}"))
    await pipeline.start()
    try:
        app = create_app(pipeline.service, pipeline.settings, stats=pipeline.stats)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            for body in bodies:
                assert (await client.post("/v1/questions", json=body)).status_code == 202
            assert await pipeline.drain(20)
            cost: dict[str, Any] = (await client.get("/v1/stats")).json()["cost"]
    finally:
        await pipeline.stop()
    return cost


async def test_stats_report_cost_per_validated_answer(tmp_path: Path) -> None:
    bodies = [
        {"question": f"Question {i}?", "reference_answer": f"answer {i} " * 20} for i in range(5)
    ]
    cost = await _cost_after(tmp_path / "s.db", bodies)
    assert cost["calls"] >= 5 and cost["questions"] == 5
    assert cost["cost_usd"] > 0
    assert cost["estimated_calls"] == 0  # the simulated provider reports its usage
    assert set(cost["by_purpose"]) == {"generate"}
    if cost["validated"]:
        per = cost["cost_usd"] / cost["validated"]
        assert cost["per_validated_answer_usd"] == pytest.approx(per, rel=1e-6)


async def test_stats_show_the_llm_judges_share_and_cost(tmp_path: Path) -> None:
    """Questions without a reference are graded by the LLM judge: /v1/stats shows its calls,
    its share of the answers and of the spend, and its cost per validated answer."""
    bodies = [{"question": f"How do tides work, part {i}?"} for i in range(4)]
    cost = await _cost_after(tmp_path / "j.db", bodies)
    assert set(cost["by_purpose"]) == {"generate", "judge"}
    assert cost["judge_calls"] >= 4  # every answer to a question without a reference
    assert 0.5 < cost["judge_answer_share"] <= 1.0
    # (by_purpose is rounded to 1e-8 USD: compare within that rounding)
    assert cost["judge_share"] == pytest.approx(
        cost["by_purpose"]["judge"] / cost["cost_usd"], rel=0.02
    )
    if cost["validated"]:
        per = cost["by_purpose"]["judge"] / cost["validated"]
        assert cost["judge_per_validated_answer_usd"] == pytest.approx(per, abs=1e-8)
