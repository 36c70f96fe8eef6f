"""Completion push: SSE state streams and signed, retried, recorded callback webhooks, against
the real HTTP app, the embedded pipeline and a real HTTP receiver on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import pytest

from qaloop.core.ids import question_id
from qaloop.gateway.http import create_app
from qaloop.pipeline import EmbeddedPipeline
from qaloop.services.webhooks import SIGNATURE_HEADER, WebhookOutbox, verify_signature
from qaloop.settings import Settings

SECRET = "test-secret-not-a-real-one"
REFERENCE = "Rayleigh scattering makes the sky look blue during the day"


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 that answers `statuses` in turn (then 200)."""

    statuses: list[int] = field(default_factory=list)
    hang_s: float = 0.0
    calls: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    got: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            await self._handle(reader, writer)
        finally:
            writer.close()
            self.tasks.discard(task)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        headers = {
            k.strip().lower(): v.strip()
            for k, v in (line.split(":", 1) for line in head.split("\r\n")[1:] if ":" in line)
        }
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        self.calls.append((headers, body))
        self.got.set()
        if self.hang_s:
            await asyncio.sleep(self.hang_s)
        status = self.statuses.pop(0) if self.statuses else 200
        writer.write(
            f"HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".encode()
        )
        await writer.drain()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    server = await asyncio.start_server(r.handle, "127.0.0.1", 0)
    r.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook"
    yield r
    server.close()
    for task in list(r.tasks):
        task.cancel()
    await asyncio.gather(*r.tasks, return_exceptions=True)
    await server.wait_closed()


def settings_for(tmp_path: Path, **extra: object) -> Settings:
    values: dict[str, object] = {
        "db": f"sqlite:///{tmp_path / 'push.db'}",
        "sim_latency_ms": 30,
        "webhook_secret": SECRET,
        "webhook_backoff_base_s": 0.05,
        "webhook_backoff_cap_s": 0.1,
        "webhook_timeout_s": 0.5,
        "max_wait_s": 5,
        # push is under test, not the gate: every simulated answer is of the good kind, so a
        # question validates whatever the seeded draw of bad kinds would have been
        "sim_kinds": {"good": 1.0},
    }
    values.update(extra)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[tuple[EmbeddedPipeline, httpx.AsyncClient]]:
    pipeline = EmbeddedPipeline(settings_for(tmp_path))
    await pipeline.start()
    app = create_app(pipeline.service, pipeline.settings, stats=pipeline.stats)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        yield pipeline, client
    await pipeline.stop()


def parse_sse(text: str) -> list[tuple[str, dict[str, object]]]:
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
        if "event" in lines:
            events.append((lines["event"], orjson.loads(lines["data"])))
    return events


async def test_events_stream_state_changes_until_final(stack: tuple) -> None:  # type: ignore[type-arg]
    _, client = stack
    r = await client.post(
        "/v1/questions", json={"question": "Why blue?", "reference_answer": REFERENCE}
    )
    assert r.status_code == 202
    qid = r.json()["id"]
    async with client.stream("GET", f"/v1/questions/{qid}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        text = (await response.aread()).decode()
    events = parse_sse(text)
    statuses = [data["status"] for _, data in events]
    assert all(kind == "state" for kind, _ in events)
    assert statuses[0] in ("queued", "generating")
    assert statuses[-1] == "validated"
    assert len(set(statuses)) == len(statuses)  # one event per change, no repeats
    assert events[-1][1]["answer"]


async def test_events_of_a_final_question_is_one_event(stack: tuple) -> None:  # type: ignore[type-arg]
    pipeline, client = stack
    r = await client.post(
        "/v1/questions", json={"question": "Why blue?", "reference_answer": REFERENCE}
    )
    qid = r.json()["id"]
    assert await pipeline.drain(10)
    r = await client.get(f"/v1/questions/{qid}/events")
    assert [data["status"] for _, data in parse_sse(r.text)] == ["validated"]
    r = await client.get(f"/v1/questions/{'0' * 32}/events")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


async def test_events_time_out_with_a_last_event(tmp_path: Path) -> None:
    pipeline = EmbeddedPipeline(settings_for(tmp_path, sse_max_s=0.3))
    await pipeline.start()
    pipeline.pause_workers()  # the question stays queued
    try:
        app = create_app(pipeline.service, pipeline.settings)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            qid = (await client.post("/v1/questions", json={"question": "Stuck?"})).json()["id"]
            r = await client.get(f"/v1/questions/{qid}/events")
        kinds = [kind for kind, _ in parse_sse(r.text)]
        assert kinds == ["state", "timeout"]
    finally:
        pipeline.resume_workers()
        await pipeline.stop()


async def test_callback_is_signed_retried_and_recorded(stack: tuple, receiver: Receiver) -> None:  # type: ignore[type-arg]
    pipeline, client = stack
    receiver.statuses = [500, 503]  # two failures, then 200
    body = {"question": "Why blue?", "reference_answer": REFERENCE, "callback_url": receiver.url}
    r = await client.post("/v1/questions", json=body)
    assert r.status_code == 202
    qid = r.json()["id"]
    deadline = time.monotonic() + 10
    outbox = WebhookOutbox(pipeline.settings.db)
    try:
        while time.monotonic() < deadline:
            deliveries = outbox.deliveries(qid)
            if deliveries and deliveries[0].state == "delivered":
                break
            await asyncio.sleep(0.05)
        [delivery] = outbox.deliveries(qid)
    finally:
        outbox.close()
    assert delivery.state == "delivered" and delivery.attempts == 3
    assert delivery.last_status == 200 and delivery.delivered_at is not None
    assert len(receiver.calls) == 3
    headers, raw = receiver.calls[-1]
    assert verify_signature(SECRET, raw, headers[SIGNATURE_HEADER.lower()])
    assert not verify_signature("another-secret", raw, headers[SIGNATURE_HEADER.lower()])
    assert not verify_signature(SECRET, raw + b" ", headers[SIGNATURE_HEADER.lower()])
    payload = orjson.loads(raw)
    assert payload["event"] == "question.final" and payload["id"] == qid
    assert payload["status"] == "validated"
    assert headers["x-qaloop-delivery"].startswith(qid)


async def test_callback_for_an_answer_already_known_fires_too(
    stack: tuple, receiver: Receiver
) -> None:  # type: ignore[type-arg]
    pipeline, client = stack
    await client.post(
        "/v1/questions", json={"question": "Why blue?", "reference_answer": REFERENCE}
    )
    assert await pipeline.drain(10)
    r = await client.post(
        "/v1/questions", json={"question": "why BLUE?", "callback_url": receiver.url}
    )
    assert r.status_code == 200 and r.json()["status"] == "answered"
    await asyncio.wait_for(receiver.got.wait(), 5)
    assert orjson.loads(receiver.calls[0][1])["id"] == question_id("Why blue?")


async def test_a_hanging_receiver_never_blocks_the_pipeline(
    stack: tuple, receiver: Receiver
) -> None:  # type: ignore[type-arg]
    pipeline, client = stack
    receiver.hang_s = 3.0  # longer than webhook_timeout_s
    for i in range(20):
        body = {"question": f"Question {i}?", "reference_answer": REFERENCE}
        if i == 0:
            body["callback_url"] = receiver.url
        await client.post("/v1/questions", json=body)
    started = time.monotonic()
    assert await pipeline.drain(10)
    assert time.monotonic() - started < 3.0
    await asyncio.wait_for(receiver.got.wait(), 5)


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("http://example.com/hook", "callback_not_allowed"),
        ("http://10.0.0.1/hook", "callback_not_allowed"),
        ("ftp://127.0.0.1/x", "invalid_field"),
        ("", "invalid_field"),
        (42, "invalid_field"),
    ],
)
async def test_callback_urls_refused(stack: tuple, url: object, code: str) -> None:  # type: ignore[type-arg]
    _, client = stack
    r = await client.post("/v1/questions", json={"question": "Why?", "callback_url": url})
    assert r.status_code == 422
    assert r.json()["error"]["code"] == code


async def test_allowed_hosts_and_disabled_callbacks(tmp_path: Path) -> None:
    from qaloop.services.webhooks import CallbackRefused, check_callback_url

    allow = settings_for(tmp_path, webhook_allow_hosts="hooks.internal, example.com")
    assert check_callback_url("https://example.com/x", allow) == "https://example.com/x"
    with pytest.raises(CallbackRefused, match="QALOOP_WEBHOOK_SECRET"):
        check_callback_url("http://127.0.0.1/x", Settings(db="sqlite://:memory:"))


def test_openapi_documents_the_wait_cap(tmp_path: Path) -> None:
    pipeline = EmbeddedPipeline(settings_for(tmp_path, max_wait_s=12))
    schema = create_app(pipeline.service, pipeline.settings).openapi()
    get = schema["paths"]["/v1/questions/{question_id}"]["get"]
    [wait] = [p for p in get["parameters"] if p["name"] == "wait"]
    assert wait["schema"]["maximum"] == 12
    assert "QALOOP_MAX_WAIT_S" in get["description"] and "422" in get["description"]
    assert "/v1/questions/{question_id}/events" in schema["paths"]


async def test_traffic_waits_over_sse(stack: tuple) -> None:  # type: ignore[type-arg]
    from qaloop.dataset import load_sample
    from qaloop.traffic import TrafficPlan, http_client_fns, run_traffic, sse_wait_fn

    _, client = stack
    ask, _ = http_client_fns(client)
    plan = TrafficPlan(rate=200, count=40, wait_s=10, seed=3)
    records = await run_traffic(plan, load_sample(limit=30), ask, sse_wait_fn(client))
    queued = [r for r in records if r.outcome == "queued"]
    assert queued
    assert all(r.final_status in ("validated", "failed") for r in queued)
    assert all(r.answer_ms is not None and r.answer_ms > 0 for r in queued)


async def test_an_idle_stream_keeps_alive_and_reads_storage_sparingly() -> None:
    from qaloop.gateway.push import state_stream

    class Idle:
        reads = 0

        async def status(self, qid: str) -> dict[str, object]:
            Idle.reads += 1
            return {"id": qid, "status": "queued"}

        async def final_signal(self, qid: str, timeout_s: float) -> bool:
            await asyncio.sleep(timeout_s)
            return False

    chunks = [
        chunk
        async for chunk in state_stream(
            Idle(),  # type: ignore[arg-type]
            "q" * 32,
            {"id": "q" * 32, "status": "queued"},
            max_s=1.2,
            poll_s=0.2,
            keepalive_s=0.5,
        )
    ]
    assert chunks[0].startswith(b"event: state")
    assert b": keep-alive\n\n" in chunks
    assert chunks[-1].startswith(b"event: timeout")
    assert Idle.reads <= 10  # 50 ms doubling to 0.2 s over 1.2 s, not a busy loop
