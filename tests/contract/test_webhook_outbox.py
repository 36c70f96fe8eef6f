"""The webhook outbox (services/webhooks.py) on every storage adapter: a subscription waits
for its question to be final, a due row is claimed by one dispatcher only, and an attempt's
outcome is recorded. SQLite always; PostgreSQL when QALOOP_PG_DSN is set (a fresh schema)."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from qaloop.core.model import Envelope, EventKind, QuestionState
from qaloop.services.webhooks import WebhookOutbox
from qaloop.storage.factory import open_repository

PG_DSN = os.environ.get("QALOOP_PG_DSN", "")
T0 = 1_700_000_000.0


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'w.db'}"
        return
    if not PG_DSN:
        pytest.skip('QALOOP_PG_DSN is not set (`eval "$(scripts/infra env)"`)')
    psycopg = pytest.importorskip("psycopg")
    schema = f"qaloop_test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in PG_DSN else "?"
    try:
        yield f"{PG_DSN}{sep}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def envelope(qid: str, state: QuestionState) -> Envelope:
    e = Envelope(qid, "Why?", "Because.", "t" * 32, T0).with_event(EventKind.ACCEPTED, T0)
    return e.evolve(state=state, answer="Because." if state.is_final else None)


def test_subscription_waits_for_the_final_state_then_one_claim_wins(url: str) -> None:
    repo = open_repository(url)
    outboxes = [WebhookOutbox(url) for _ in range(2)]  # two store processes
    try:
        qid = "a" * 32
        repo.accept(envelope(qid, QuestionState.QUEUED))
        outboxes[0].subscribe(qid, "http://127.0.0.1:9/x", T0)
        outboxes[0].subscribe(qid, "http://127.0.0.1:9/x", T0)  # idempotent
        assert outboxes[0].claim_due(T0 + 1, 10) == []  # not final yet
        repo.apply([envelope(qid, QuestionState.VALIDATED)])
        claims: list[list[tuple[str, str, int]]] = []
        threads = [
            threading.Thread(target=lambda o=o: claims.append(o.claim_due(T0 + 2, 10)))
            for o in outboxes
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(len(c) for c in claims) == [0, 1]
        assert outboxes[1].claim_due(T0 + 3, 10) == []  # held by the claim
        outboxes[0].record(
            qid,
            "http://127.0.0.1:9/x",
            now=T0 + 3,
            ok=False,
            status=500,
            error="HTTP 500",
            next_at=T0 + 5,
        )
        assert outboxes[1].claim_due(T0 + 4, 10) == []  # not due before next_at
        assert outboxes[1].claim_due(T0 + 5, 10) == [(qid, "http://127.0.0.1:9/x", 1)]
        outboxes[1].record(
            qid,
            "http://127.0.0.1:9/x",
            now=T0 + 6,
            ok=True,
            status=200,
            error=None,
            next_at=None,
        )
        [d] = outboxes[0].deliveries(qid)
        assert (d.state, d.attempts, d.last_status, d.last_error) == ("delivered", 2, 200, None)
        assert d.delivered_at == T0 + 6
        assert outboxes[0].claim_due(T0 + 100, 10) == []
    finally:
        for o in outboxes:
            o.close()
        repo.close()


def test_the_last_failed_attempt_gives_up(url: str) -> None:
    repo = open_repository(url)
    outbox = WebhookOutbox(url)
    try:
        qid = "b" * 32
        repo.accept(envelope(qid, QuestionState.QUEUED))
        repo.apply([envelope(qid, QuestionState.FAILED)])  # a failed question is final too
        outbox.subscribe(qid, "http://127.0.0.1:9/y", T0)
        assert outbox.claim_due(T0, 10) == [(qid, "http://127.0.0.1:9/y", 0)]
        outbox.record(
            qid,
            "http://127.0.0.1:9/y",
            now=T0 + 1,
            ok=False,
            status=None,
            error="ConnectError: refused",
            next_at=None,
        )
        [d] = outbox.deliveries()
        assert (d.state, d.attempts, d.last_error) == ("failed", 1, "ConnectError: refused")
        assert outbox.claim_due(T0 + 100, 10) == []
    finally:
        outbox.close()
        repo.close()
