"""The gateway's HTTP contract: answers, queueing, coalescing, long-poll and bad input
(every bad input gets a 4xx JSON error that says what is wrong — never a 500)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from qaloop.core.ids import question_id
from qaloop.gateway.http import create_app
from qaloop.pipeline import EmbeddedPipeline
from qaloop.settings import Settings

REFERENCE = "Rayleigh scattering makes the sky look blue during the day"


@pytest.fixture
async def pipeline(tmp_path: Path) -> AsyncIterator[EmbeddedPipeline]:
    settings = Settings(
        db=f"sqlite:///{tmp_path / 'g.db'}",
        max_body_bytes=2048,
        max_question_chars=200,
        max_wait_s=5,
        sim_latency_ms=5,
    )
    p = EmbeddedPipeline(settings)
    await p.start()
    yield p
    await p.stop()


@pytest.fixture
async def client(pipeline: EmbeddedPipeline) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(pipeline.service, pipeline.settings, stats=pipeline.stats)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
        yield c


async def test_new_question_is_queued_then_answered_from_storage_then_cache(
    client: httpx.AsyncClient,
) -> None:
    body = {"question": "Why is the sky blue?", "reference_answer": REFERENCE}
    first = await client.post("/v1/questions", json=body)
    assert first.status_code == 202
    qid = first.json()["id"]
    assert first.json() == {"id": qid, "status": "queued"}
    assert qid == question_id("why is the SKY blue?")
    final = await client.get(f"/v1/questions/{qid}", params={"wait": 5})
    assert final.status_code == 200
    assert final.json()["status"] in ("validated", "failed")
    assert final.json()["attempts"] >= 1
    second = await client.post("/v1/questions", json={"question": "  why is the sky BLUE? "})
    assert second.status_code == 200
    assert second.json()["id"] == qid
    if final.json()["status"] == "validated":
        assert second.json()["source"] == "storage"
        third = await client.post("/v1/questions", json=body)
        assert third.json()["source"] == "cache"
        assert third.json()["answer"] == final.json()["answer"]


async def test_question_in_flight_is_coalesced(
    client: httpx.AsyncClient, pipeline: EmbeddedPipeline
) -> None:
    pipeline.pause_workers()
    body = {"question": "How do tides work?", "reference_answer": "the moon pulls the sea"}
    a = await client.post("/v1/questions", json=body)
    b = await client.post("/v1/questions", json={"question": "how do TIDES work?"})
    assert (a.status_code, b.status_code) == (202, 202)
    assert b.json() == {"id": a.json()["id"], "status": "queued", "joined": True}
    status = await client.get(f"/v1/questions/{a.json()['id']}")
    assert status.json()["status"] == "queued"
    pipeline.resume_workers()
    assert await pipeline.drain(10)
    assert pipeline.worker.stats.llm_calls >= 1
    assert pipeline.service.counters["coalesced"] == 1
    assert pipeline.service.counters["accepted"] == 1


async def test_stats_and_health(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    stats = (await client.get("/v1/stats")).json()
    assert {"gateway", "cache", "pipeline", "storage"} <= stats.keys()
    assert "hit_rate" in stats["cache"]


@pytest.mark.parametrize(
    ("content", "headers", "status", "code"),
    [
        (b"{not json", {}, 400, "invalid_json"),
        (b"", {}, 400, "empty_body"),
        (b"[1, 2]", {}, 422, "invalid_body"),
        (b'"just a string"', {}, 422, "invalid_body"),
        (b"{}", {}, 422, "missing_field"),
        (b'{"question": ""}', {}, 422, "invalid_field"),
        (b'{"question": "   "}', {}, 422, "invalid_field"),
        (b'{"question": 42}', {}, 422, "invalid_field"),
        (b'{"question": null}', {}, 422, "invalid_field"),
        (b'{"question": ["a"]}', {}, 422, "invalid_field"),
        (b'{"question": "ok?", "reference_answer": 3}', {}, 422, "invalid_field"),
        (b'{"question": "' + b"x" * 201 + b'"}', {}, 422, "question_too_long"),
        (b'{"question": "' + b"x" * 3000 + b'"}', {}, 413, "body_too_large"),
        (b'{"question": "\xff\xfe"}', {}, 400, "invalid_encoding"),
    ],
)
async def test_bad_input_gets_a_clear_4xx(
    client: httpx.AsyncClient, content: bytes, headers: dict[str, str], status: int, code: str
) -> None:
    response = await client.post(
        "/v1/questions", content=content, headers={"content-type": "application/json", **headers}
    )
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]


async def test_oversized_body_is_refused_from_its_declared_length(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/v1/questions", content=b"{}", headers={"content-length": "10000000"}
    )
    assert response.status_code in (400, 413)


async def test_unknown_ids_routes_and_methods(client: httpx.AsyncClient) -> None:
    missing = await client.get("/v1/questions/" + "0" * 32)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    malformed = await client.get("/v1/questions/../../etc")
    assert malformed.status_code == 404
    bad_id = await client.get("/v1/questions/xyz")
    assert bad_id.status_code == 404 and "32 hex" in bad_id.json()["error"]["message"]
    assert (await client.get("/nope")).status_code == 404
    assert (await client.delete("/v1/questions")).status_code == 405
    for wait in ("abc", "-1", "999", "nan"):
        r = await client.get("/v1/questions/" + "0" * 32, params={"wait": wait})
        assert r.status_code == 422, wait
        assert r.json()["error"]["code"] == "invalid_query"
