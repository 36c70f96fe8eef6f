"""The distributed gateway (Kafka + PostgreSQL) with issue 14's additions: readiness that
reflects storage and the broker, `retry_failed` through PostgreSQL and Kafka, and admission
from a storage count of the backlog."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from qaloop.core import codec
from qaloop.core.ids import question_id
from qaloop.core.model import Envelope, EventKind, QuestionState
from qaloop.settings import Settings
from tests.integration.conftest import StackSettings

pytestmark = pytest.mark.integration


@pytest.fixture
async def gateway(
    stack_settings: StackSettings,
) -> AsyncIterator[tuple[httpx.AsyncClient, object, Settings]]:
    from qaloop.distributed import build_gateway_app
    from qaloop.storage.postgres import PostgresRepository

    settings = stack_settings(max_backlog=2)
    repo = PostgresRepository(settings.db)
    app = build_gateway_app(settings, repo=repo)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                yield client, repo, settings
    finally:
        repo.close()


async def test_readiness_retry_failed_and_backlog(
    gateway: tuple[httpx.AsyncClient, object, Settings],
) -> None:
    from qaloop.bus.kafka import KafkaBus, KafkaSettings
    from qaloop.wiring import topics_for

    client, repo, settings = gateway
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {
        "status": "ok",
        "storage": "ok",
        "bus": "ok",
    }
    # a question that failed (as the judge leaves it)
    now = 1_700_000_000.0
    qid = question_id("Why did it fail?")
    failed = (
        Envelope(
            question_id=qid,
            question="Why did it fail?",
            reference_answer="ref",
            trace_id="old-trace",
            first_seen=now,
        )
        .with_event(EventKind.ACCEPTED, now)
        .evolve(state=QuestionState.FAILED, attempt=3, error_detail="low score")
    )
    repo.apply([failed])  # type: ignore[attr-defined]
    body = {"question": "Why did it fail?", "retry_failed": True}
    served = await client.post("/v1/questions", json={"question": "Why did it fail?"})
    assert served.json()["status"] == "failed"
    # the cache held the failure: retry_failed goes past it
    retried = await client.post("/v1/questions", json=body)
    assert retried.status_code == 202 and retried.json()["retried"] is True, retried.text
    record = repo.get(qid)  # type: ignore[attr-defined]
    assert record.state is QuestionState.QUEUED and record.trace_id != "old-trace"
    topics = topics_for(settings)
    bus = KafkaBus(KafkaSettings(settings.kafka_bootstrap, partitions=1), topics)
    await bus.start()
    probe = bus.consumer(f"{settings.topic_prefix}.probe", [topics.questions])
    got: list[Envelope] = []
    for _ in range(40):
        got += [codec.decode(m.value) for m in await probe.poll(10, 0.5)]
        if got:
            break
    await probe.close()
    await bus.close()
    assert [e.question_id for e in got] == [qid] and got[0].trace_id == record.trace_id
    # backlog: the retried question is queued; one more fits, then 429
    assert (await client.post("/v1/questions", json={"question": "one more?"})).status_code == 202
    import asyncio

    await asyncio.sleep(2.5)  # the storage count is refreshed every 2 s
    refused = await client.post("/v1/questions", json={"question": "too many?"})
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "backlog"
    assert "retry-after" in refused.headers


async def test_a_key_over_its_shared_spend_budget_gets_429_another_key_is_served(
    tmp_path: Path, stack_settings: StackSettings
) -> None:
    """The distributed gateway reads the workers' spend from the PostgreSQL ledger."""
    from qaloop.distributed import build_gateway_app
    from qaloop.gateway.auth import ApiKey, format_key, hash_token, new_token
    from qaloop.llm.budget import period_bounds
    from qaloop.llm.budget_pg import PostgresLedger
    from qaloop.storage.postgres import PostgresRepository

    run = uuid.uuid4().hex[:10]  # key names of this run: the ledger table is shared
    spender, other = f"spender-{run}", f"other-{run}"
    spender_key, other_key = new_token(), new_token()
    keys = tmp_path / "keys.txt"
    keys.write_text(
        f"{format_key(ApiKey(spender, hash_token(spender_key), 'user'))}\n"
        f"{format_key(ApiKey(other, hash_token(other_key), 'user'))}\n",
        encoding="utf-8",
    )
    settings = stack_settings(
        auth="on",
        api_keys_file=str(keys),
        budget_key_usd=0.5,
        budget_action="reject",
        budget_backend="postgres",
    )
    ledger = PostgresLedger(settings.db)  # what a worker charged for the spender's calls
    await ledger.charge([f"key:{spender}"], 0.75, period_bounds("day", time.time())[0])
    await ledger.aclose()

    repo = PostgresRepository(settings.db)
    app = build_gateway_app(settings, repo=repo)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                body = {"question": "Is the budget shared?"}
                over = await client.post(
                    "/v1/questions", json=body, headers={"X-API-Key": spender_key}
                )
                assert over.status_code == 429, over.text
                assert over.json()["error"]["code"] == "budget"
                assert int(over.headers["retry-after"]) >= 1
                served = await client.post(
                    "/v1/questions", json=body, headers={"X-API-Key": other_key}
                )
                assert served.status_code == 202, served.text
    finally:
        repo.close()
