"""Issue 14 in-process: HEAD, 405 Allow, anchored ids, invisible questions, no slash redirect,
no CDN docs, the OpenAPI schema, 5xx counted, readiness, retry of failed questions, the
reference rule, admission control."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from qaloop.core.model import QuestionState
from qaloop.gateway.admission import DAY_S, Ask, BacklogLimit, DailyCallBudget
from qaloop.gateway.http import create_app, has_visible_text
from qaloop.pipeline import EmbeddedPipeline
from qaloop.settings import Settings
from tests.unit.gateway.conftest import asgi_client

REFERENCE = "Rayleigh scattering makes the sky look blue during the day"


@pytest.fixture
async def pipeline(tmp_path: Path) -> AsyncIterator[EmbeddedPipeline]:
    p = EmbeddedPipeline(
        Settings(db=f"sqlite:///{tmp_path / 'h.db'}", sim_latency_ms=1, max_wait_s=5)
    )
    await p.start()
    yield p
    await p.stop()


@pytest.fixture
async def client(pipeline: EmbeddedPipeline) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(pipeline.service, pipeline.settings, stats=pipeline.stats)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
        yield c


async def test_head_on_get_routes_and_405_names_allowed_methods(client: httpx.AsyncClient) -> None:
    for path in ("/healthz", "/readyz", "/v1/stats", "/metrics", "/dashboard"):
        assert (await client.head(path)).status_code == 200, path
    wrong = await client.delete("/v1/questions")
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "POST"
    wrong = await client.post("/healthz")
    assert wrong.status_code == 405 and "GET" in wrong.headers["allow"]


async def test_ids_are_anchored_at_the_very_end(client: httpx.AsyncClient) -> None:
    qid = "0" * 32
    assert (await client.get(f"/v1/questions/{qid}")).json()["error"]["code"] == "not_found"
    newline = await client.get(f"/v1/questions/{qid}%0A")
    assert newline.status_code == 404 and "32 hex" in newline.json()["error"]["message"]
    trace = await client.get(f"/v1/questions/{qid}%0A/trace")
    assert trace.status_code == 404


@pytest.mark.parametrize(
    "question",
    ["\x00", "\x00\x00\x00", "\u200b\u200c\u200d", "\ufeff \u2060", "\t\n\r\x0b", " \x7f"],
)
async def test_invisible_questions_are_refused(client: httpx.AsyncClient, question: str) -> None:
    r = await client.post("/v1/questions", json={"question": question})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_field"


def test_visible_text_check_keeps_real_questions() -> None:
    assert has_visible_text("why?") and has_visible_text("¿qué\u200bes?") and has_visible_text("中")
    assert not has_visible_text("\u200b") and not has_visible_text("   ")


async def test_no_slash_redirect_and_no_cdn_docs(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/stats/", headers={"host": "evil.example"})
    assert r.status_code == 404 and "evil" not in r.headers.get("location", "")
    assert (await client.get("/docs")).status_code == 404
    assert (await client.get("/redoc")).status_code == 404


async def test_openapi_has_responses_wait_and_4xx(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    ask = schema["paths"]["/v1/questions"]["post"]
    assert ask["responses"]["200"]["content"]["application/json"]["schema"]["properties"]["id"]
    assert {"400", "413", "422", "429"} <= ask["responses"].keys()
    get = schema["paths"]["/v1/questions/{question_id}"]["get"]
    assert any(p["name"] == "wait" and p["in"] == "query" for p in get["parameters"])
    assert "404" in get["responses"]


async def test_5xx_is_counted_and_timed(
    client: httpx.AsyncClient, pipeline: EmbeddedPipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: object) -> object:
        raise OSError(28, "No space left on device")

    before = pipeline.metrics.request_seconds.count
    monkeypatch.setattr(pipeline.repo, "accept_many", broken)
    monkeypatch.setattr(pipeline.repo, "get", broken)
    r = await client.post("/v1/questions", json={"question": "disk full?"})
    assert r.status_code == 503
    assert pipeline.metrics.request_seconds.count == before + 1
    ready = await client.get("/readyz")
    assert ready.status_code == 503 and "No space" in ready.json()["storage"]
    exposition = (await client.get("/metrics")).text
    assert 'qaloop_http_responses_total{status="503"} 2.0' in exposition  # POST + readyz


async def test_a_failed_question_can_be_asked_again(failing: EmbeddedPipeline) -> None:
    app = create_app(failing.service, failing.settings, stats=failing.stats)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        body = {"question": "What fails first?", "reference_answer": REFERENCE}
        qid = (await client.post("/v1/questions", json=body)).json()["id"]
        assert (await client.get(f"/v1/questions/{qid}", params={"wait": 5})).json()[
            "status"
        ] == "failed"
        again = await client.post("/v1/questions", json=body)
        assert again.json()["status"] == "failed"  # served as failed: no new run by default
        retry = await client.post("/v1/questions", json={**body, "retry_failed": True})
        assert retry.status_code == 202
        assert retry.json() == {"id": qid, "status": "queued", "retried": True}
        final = (await client.get(f"/v1/questions/{qid}", params={"wait": 5})).json()
        assert final["status"] == "failed"
        events = [e.kind.value for e in failing.repo.events(qid)]
        assert events.count("reset") == 1 and events.count("generated") == 2
        # an admin reset may replace the reference
        reset = await client.post(
            f"/v1/admin/questions/{qid}/reset", json={"reference_answer": "a new reference"}
        )
        assert reset.status_code == 202
        record = failing.repo.get(qid)
        assert record is not None and record.reference_answer == "a new reference"
        await client.get(f"/v1/questions/{qid}", params={"wait": 5})
        unknown = await client.post(f"/v1/admin/questions/{'1' * 32}/reset")
        assert unknown.status_code == 404


async def test_reset_of_a_question_not_failed_is_a_409(
    client: httpx.AsyncClient, pipeline: EmbeddedPipeline
) -> None:
    qid = (await client.post("/v1/questions", json={"question": "Fine one?"})).json()["id"]
    await pipeline.drain(10)
    conflict = await client.post(f"/v1/admin/questions/{qid}/reset")
    assert conflict.status_code == 409 and conflict.json()["error"]["code"] == "not_failed"


async def test_a_late_message_of_the_old_run_cannot_overwrite_a_reset(
    failing: EmbeddedPipeline,
) -> None:
    from qaloop.core import codec

    await failing.service.ask("Old run?", REFERENCE)
    await failing.drain(10)
    qid = failing.repo.export_questions()[0]["question_id"]
    old_final = codec.decode(
        failing.repo._conn.execute(  # type: ignore[attr-defined]
            "SELECT envelope FROM questions WHERE question_id = ?", (qid,)
        ).fetchone()[0]
    )
    assert old_final.state is QuestionState.FAILED
    failing.pause_workers()
    new = await failing.service.reset(qid, by="test")
    assert new is not None and new.trace_id != old_final.trace_id
    failing.repo.apply([old_final])  # redelivered: higher progress, but the old trace id
    record = failing.repo.get(qid)
    assert record is not None and record.state is QuestionState.QUEUED
    failing.resume_workers()
    await failing.drain(10)


async def test_the_first_reference_is_kept_and_a_differing_one_is_flagged(
    client: httpx.AsyncClient, pipeline: EmbeddedPipeline
) -> None:
    q = "Who fixes the reference?"
    await client.post("/v1/questions", json={"question": q, "reference_answer": REFERENCE})
    await pipeline.drain(10)
    same = await client.post("/v1/questions", json={"question": q, "reference_answer": REFERENCE})
    other = await client.post("/v1/questions", json={"question": q, "reference_answer": "no"})
    assert "reference_ignored" not in same.json()
    assert other.json()["reference_ignored"] is True
    record = pipeline.repo.get(other.json()["id"])
    assert record is not None and record.reference_answer == REFERENCE


async def test_backlog_full_gets_429_but_known_answers_are_served(
    client: httpx.AsyncClient, pipeline: EmbeddedPipeline
) -> None:
    known = await client.post("/v1/questions", json={"question": "Known one?"})
    await pipeline.drain(10)
    assert pipeline.service.admission is not None
    pipeline.service.admission.add(BacklogLimit(2, lambda: len(pipeline.service.in_flight)))
    pipeline.pause_workers()
    for i in range(2):
        assert (
            await client.post("/v1/questions", json={"question": f"new {i}?"})
        ).status_code == 202
    refused = await client.post("/v1/questions", json={"question": "one too many?"})
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "backlog"
    assert int(refused.headers["retry-after"]) >= 1
    joined = await client.post("/v1/questions", json={"question": "new 0?"})
    assert joined.status_code == 202 and joined.json()["joined"] is True
    served = await client.post("/v1/questions", json={"question": "Known one?"})
    assert served.status_code == 200 and served.json()["id"] == known.json()["id"]
    exposition = (await client.get("/metrics")).text
    assert 'qaloop_gateway_admission_rejected_total{reason="backlog"} 1.0' in exposition
    pipeline.resume_workers()


async def test_metrics_can_move_off_the_api_port(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    settings = Settings(db=f"sqlite:///{tmp_path / 'm.db'}", gateway_metrics_port=port)
    p = EmbeddedPipeline(settings)
    app = create_app(p.service, settings, stats=p.stats)
    await p.start()
    try:
        async with app.router.lifespan_context(app), asgi_client(app) as client:
            moved = await client.get("/metrics")
            assert moved.status_code == 404 and str(port) in moved.json()["error"]["message"]
            async with httpx.AsyncClient() as direct:
                scraped = await direct.get(f"http://127.0.0.1:{port}/metrics")
            assert scraped.status_code == 200 and "qaloop_http_responses_total" in scraped.text
            assert (await client.get("/v1/dashboard-data")).status_code == 200  # stays
    finally:
        await p.stop()


async def test_a_spent_daily_call_budget_refuses_new_questions_until_the_day_turns() -> None:
    calls = [0]
    now = [10 * DAY_S + 3600.0]
    budget = DailyCallBudget(5, lambda: calls[0], clock=lambda: now[0])
    ask = Ask("q", "q?", None)
    assert await budget.check(ask) is None
    calls[0] = 5
    refused = await budget.check(ask)
    assert refused is not None and refused.reason == "daily_calls"
    assert refused.retry_after_s == pytest.approx(DAY_S - 3600.0)  # until midnight UTC
    now[0] += DAY_S  # the next day counts from its own start
    assert await budget.check(ask) is None


@pytest.mark.parametrize(("cache_s", "builds"), [(60.0, 1), (0.0, 40)])  # 60: no timing
async def test_metrics_polled_in_a_loop_are_built_once_per_cache_period(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache_s: float, builds: int
) -> None:
    """Issue 14 item 5's cause: every poll rebuilt the exposition on the event loop."""
    settings = Settings(db=f"sqlite:///{tmp_path / 'p.db'}", metrics_cache_s=cache_s)
    p = EmbeddedPipeline(settings)
    built = [0]
    real = p.metrics.exposition

    def counting() -> bytes:
        built[0] += 1
        return real()

    monkeypatch.setattr(p.metrics, "exposition", counting)
    async with asgi_client(create_app(p.service, settings, stats=p.stats)) as client:
        for _ in range(40):
            assert (await client.get("/metrics")).status_code == 200
    p.repo.close()
    assert built[0] == builds
