"""The paraphrase cache in the gateway: off by default; on, a reworded question gets the
validated answer of the one it means (source "paraphrase"), a negated one doesn't, and a
request can opt out with "paraphrase": false."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from qaloop.gateway.http import create_app
from qaloop.pipeline import EmbeddedPipeline
from qaloop.settings import Settings

ASKED = {
    "question": "Why is the sky blue?",
    "reference_answer": "Sunlight is scattered by air molecules, and blue light is scattered much "
    "more than red light. This is called Rayleigh scattering.",
}
REWORDED = "Does anyone know why the sky is blue? Thanks!"


async def _client(tmp_path: Path, **settings: object) -> AsyncIterator[httpx.AsyncClient]:
    pipeline = EmbeddedPipeline(
        # Good simulated answers only: this test is about the cache, not the gate.
        Settings(  # type: ignore[arg-type]
            db=f"sqlite:///{tmp_path / 'p.db'}", sim_kinds={"good": 1.0}, **settings
        )
    )
    await pipeline.start()
    try:
        app = create_app(pipeline.service, pipeline.settings, stats=pipeline.stats)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            first = await client.post("/v1/questions", json=ASKED)
            qid = first.json()["id"]
            done = await client.get(f"/v1/questions/{qid}", params={"wait": 10})
            assert done.json()["status"] == "validated"
            yield client
    finally:
        await pipeline.stop()


@pytest.fixture
async def on(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async for client in _client(tmp_path, paraphrase_cache=True):
        yield client


async def test_a_rewording_is_served_the_answer(on: httpx.AsyncClient) -> None:
    r = await on.post("/v1/questions", json={"question": REWORDED})
    assert r.status_code == 200
    body = r.json()
    assert body["source"] == "paraphrase" and body["similarity"] == 1.0
    assert body["id"] != body["asked_id"]
    stats = (await on.get("/v1/stats")).json()
    assert stats["gateway"]["answered_paraphrase"] == 1


async def test_negation_and_opt_out_are_not_served(on: httpx.AsyncClient) -> None:
    r = await on.post("/v1/questions", json={"question": "Why is the sky not blue?"})
    assert r.status_code == 202
    r = await on.post("/v1/questions", json={"question": REWORDED, "paraphrase": False})
    assert r.status_code == 202
    r = await on.post("/v1/questions", json={"question": "x y z?", "paraphrase": "no"})
    assert r.status_code == 422


async def test_off_by_default(tmp_path: Path) -> None:
    async for client in _client(tmp_path):
        r = await client.post("/v1/questions", json={"question": REWORDED})
        assert r.status_code == 202
