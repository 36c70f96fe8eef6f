"""The admin dead-letter routes in embedded mode (in-process bus, SQLite): list with reasons,
replay a poison message (dead-lettered again, with its reason, no row added), a gave-up
question skipped unless forced, bad requests answered with a 4xx and a message, and an admin
key needed when auth is on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from qaloop.bus.base import OutMessage
from qaloop.gateway.auth import ApiKey, AuthConfig, Authenticator, hash_token
from qaloop.gateway.http import create_app
from qaloop.pipeline import EmbeddedPipeline
from qaloop.storage.base import DeadLetter
from tests.unit.gateway.conftest import asgi_client

REFERENCE = "Rayleigh scattering makes the sky look blue during the day"


@pytest.fixture
async def client(failing: EmbeddedPipeline) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(create_app(failing.service, failing.settings)) as c:
        yield c


async def letters_where(
    failing: EmbeddedPipeline, predicate: object, n: int = 1, timeout_s: float = 10.0
) -> list[DeadLetter]:
    deadline = time.monotonic() + timeout_s
    while True:
        found = [
            d
            for d in failing.repo.dead_letters(limit=1000, include_replayed=True)
            if predicate(d)  # type: ignore[operator]
        ]
        if len(found) >= n or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.05)


async def test_a_replayed_poison_message_is_dead_lettered_again_with_its_reason(
    client: httpx.AsyncClient, failing: EmbeddedPipeline
) -> None:
    topics = failing.topics
    await failing.bus.publish_many([OutMessage(topics.questions, "bad", b"\xff not json", {})])
    poison = await letters_where(failing, lambda d: d.raw == b"\xff not json")
    assert poison, "the poison message was not dead-lettered"
    listed = (await client.get("/v1/admin/dead-letters")).json()
    row = next(r for r in listed["dead_letters"] if r["key"] == poison[0].dedup_key)
    assert row["source_topic"] == topics.questions and row["reason"] and not row["replayed"]
    rows_before = len(failing.repo.export_questions())

    dry = await client.post(
        "/v1/admin/dead-letters/replay", json={"keys": [row["key"]], "dry_run": True}
    )
    assert dry.status_code == 200 and dry.json()["would_replay"] == 1
    assert not failing.repo.dead_letters(limit=1000)[0].replayed  # a dry run changes nothing

    r = await client.post("/v1/admin/dead-letters/replay", json={"keys": [row["key"]]})
    assert r.status_code == 200, r.text
    assert r.json()["replayed"] == 1
    assert r.json()["results"] == [
        {"key": row["key"], "action": "replay", "detail": f"raw bytes -> {topics.questions}"}
    ]
    again = await letters_where(failing, lambda d: d.raw == b"\xff not json", n=2)
    assert len(again) == 2, again  # a new letter (a new offset), with the reason again
    new = next(d for d in again if d.dedup_key != row["key"])
    assert new.reason == poison[0].reason and not new.replayed
    old = next(d for d in again if d.dedup_key == row["key"])
    assert old.replayed
    assert len(failing.repo.export_questions()) == rows_before  # no row from a poison replay
    # listed by default: only what waits for a replay
    waiting = (await client.get("/v1/admin/dead-letters")).json()["dead_letters"]
    assert row["key"] not in {w["key"] for w in waiting}
    every = (await client.get("/v1/admin/dead-letters", params={"all": "true"})).json()
    assert row["key"] in {w["key"] for w in every["dead_letters"]}


async def test_a_gave_up_question_is_skipped_unless_forced_and_never_duplicated(
    client: httpx.AsyncClient, failing: EmbeddedPipeline
) -> None:
    body = {"question": "What fails for the replay?", "reference_answer": REFERENCE}
    qid = (await client.post("/v1/questions", json=body)).json()["id"]
    await failing.drain(10)
    (letter,) = await letters_where(failing, lambda d: d.question_id == qid)
    skip = await client.post("/v1/admin/dead-letters/replay", json={"all": True})
    assert skip.status_code == 200
    result = next(x for x in skip.json()["results"] if x["key"] == letter.dedup_key)
    assert result["action"] == "skip" and "failed in storage" in result["detail"]
    assert skip.json()["replayed"] == 0
    events_before = len(failing.repo.events(qid))

    forced = await client.post(
        "/v1/admin/dead-letters/replay", json={"keys": [letter.dedup_key], "force": True}
    )
    assert forced.json()["replayed"] == 1
    await failing.drain(10)
    twice = await client.post(
        "/v1/admin/dead-letters/replay", json={"keys": [letter.dedup_key], "force": True}
    )
    assert twice.json()["replayed"] == 1
    await failing.drain(10)
    rows = [q for q in failing.repo.export_questions() if q["question_id"] == qid]
    assert len(rows) == 1 and rows[0]["state"] == "failed"  # the first final state is kept
    seqs = [e.seq for e in failing.repo.events(qid)]
    assert len(seqs) == len(set(seqs)) and len(seqs) >= events_before


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"", 400, "empty_body"),
        (b"{nope", 400, "invalid_json"),
        (b"[1]", 422, "invalid_body"),
        (b"{}", 422, "missing_field"),
        (b'{"keys": ["a"], "all": true}', 422, "missing_field"),
        (b'{"keys": []}', 422, "invalid_field"),
        (b'{"keys": "abc"}', 422, "invalid_field"),
        (b'{"all": "yes"}', 422, "invalid_field"),
        (b'{"all": true, "extra": 1}', 422, "invalid_field"),
        (b'{"keys": ["no-such-key"]}', 404, "not_found"),
    ],
)
async def test_bad_replay_requests_get_a_4xx_with_a_message(
    client: httpx.AsyncClient, body: bytes, status: int, code: str
) -> None:
    r = await client.post("/v1/admin/dead-letters/replay", content=body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code and r.json()["error"]["message"]


async def test_an_oversized_replay_body_is_a_413(client: httpx.AsyncClient) -> None:
    keys = ["k" * 60] * 2000  # ~130 KB, over the 64 KiB body limit
    r = await client.post("/v1/admin/dead-letters/replay", json={"keys": keys})
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted while read
        for _ in range(100):
            yield b" " * 1024

    r = await client.post("/v1/admin/dead-letters/replay", content=chunked())
    assert r.status_code == 413


@pytest.mark.parametrize("query", [{"limit": "0"}, {"limit": "x"}, {"all": "maybe"}])
async def test_bad_list_queries_get_a_422(client: httpx.AsyncClient, query: dict[str, str]) -> None:
    r = await client.get("/v1/admin/dead-letters", params=query)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_query"


async def test_dead_letter_routes_need_an_admin_key_when_auth_is_on(
    failing: EmbeddedPipeline,
) -> None:
    class Keys:
        def load(self) -> list[ApiKey]:
            return [
                ApiKey("alice", hash_token("user-t")),
                ApiKey("ops", hash_token("admin-t"), "admin"),
            ]

    auth = Authenticator([Keys()], AuthConfig())
    async with asgi_client(create_app(failing.service, failing.settings, auth=auth)) as c:
        for method, path in (
            ("GET", "/v1/admin/dead-letters"),
            ("POST", "/v1/admin/dead-letters/replay"),
        ):
            kwargs = {"json": {"all": True}} if method == "POST" else {}
            assert (await c.request(method, path, **kwargs)).status_code == 401  # type: ignore[arg-type]
            user = await c.request(method, path, headers={"X-API-Key": "user-t"}, **kwargs)  # type: ignore[arg-type]
            assert user.status_code == 403 and user.json()["error"]["code"] == "admin_only"
            admin = await c.request(method, path, headers={"X-API-Key": "admin-t"}, **kwargs)  # type: ignore[arg-type]
            assert admin.status_code == 200, admin.text


async def test_openapi_documents_the_dead_letter_routes(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    listed = paths["/v1/admin/dead-letters"]["get"]
    assert {"200", "401", "403", "422"} <= set(listed["responses"])
    replay = paths["/v1/admin/dead-letters/replay"]["post"]
    assert {"200", "400", "403", "404", "413", "422"} <= set(replay["responses"])
    assert "keys" in replay["requestBody"]["content"]["application/json"]["schema"]["properties"]
