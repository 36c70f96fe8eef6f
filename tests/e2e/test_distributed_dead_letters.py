"""Dead-letter replay over HTTP in distributed mode: the gateway, worker, judge, store and
retrier as OS processes over the real Kafka broker and PostgreSQL, auth on. Poison written
straight into the questions topic is dead-lettered (the store records it); an admin replays
it through the gateway (to Kafka): still bad, it is dead-lettered again with its reason, and
no question row appears. A user key gets 403; questions the LLM refused are skipped unless
forced, and a forced replay adds no row."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from qaloop.gateway.auth import ApiKey, format_key, hash_token, new_token
from tests.e2e.distributed_stack import Stack, pg_schema, require_servers, sql

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]

POISON = b"\xff poison for the replay"
ADMIN, USER = new_token(), new_token()


def _until(check: Any, what: str, stack: Stack, timeout_s: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        stack.assert_alive()
        found = check()
        if found:
            return found
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}\n{stack.tails()}")


def test_dead_letters_are_replayed_through_the_distributed_gateway(tmp_path: Path) -> None:
    from confluent_kafka import Producer

    from qaloop.bus.base import Topics

    bootstrap, pg = require_servers()
    keys = tmp_path / "keys.txt"
    keys.write_text(
        format_key(ApiKey("ops", hash_token(ADMIN), "admin"))
        + "\n"
        + format_key(ApiKey("app", hash_token(USER), "user"))
        + "\n",
        encoding="utf-8",
    )
    with pg_schema(pg) as (_, db):
        stack = Stack.create(
            tmp_path,
            bootstrap,
            db,
            sim_latency_ms=1,
            sim_permanent_rate=1.0,
            auth="on",
            api_keys_file=str(keys),
        )
        try:
            stack.start_all()
            admin = httpx.Client(base_url=stack.url, timeout=30, headers={"X-API-Key": ADMIN})
            user = httpx.Client(base_url=stack.url, timeout=30, headers={"X-API-Key": USER})
            topics = Topics.with_prefix(stack.prefix)
            producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
            producer.produce(topics.questions, key=b"poison", value=POISON)
            assert producer.flush(30) == 0
            ids = [
                user.post("/v1/questions", json={"question": f"refused {i}?"}).json()["id"]
                for i in range(2)
            ]

            def letters(**params: str) -> list[dict[str, Any]]:
                r = admin.get("/v1/admin/dead-letters", params={"limit": "1000", **params})
                assert r.status_code == 200, r.text
                rows: list[dict[str, Any]] = r.json()["dead_letters"]
                return rows

            first = _until(
                lambda: [x for x in letters() if x["bytes"] == len(POISON)],
                "the poison's dead letter",
                stack,
            )

            def of_questions() -> list[dict[str, Any]] | None:
                found = [x for x in letters() if x["question_id"] in ids]
                return found if len(found) == 2 else None

            refused = _until(of_questions, "the refused questions' dead letters", stack)
            assert all("permanent" in x["reason"] for x in refused)
            assert first[0]["source_topic"] == topics.questions
            denied = user.get("/v1/admin/dead-letters")
            assert denied.status_code == 403 and denied.json()["error"]["code"] == "admin_only"
            rows_before = sql(db, "SELECT count(*) FROM questions")[0][0]

            r = admin.post("/v1/admin/dead-letters/replay", json={"all": True})
            assert r.status_code == 200, r.text
            actions = {x["key"]: x["action"] for x in r.json()["results"]}
            assert actions[first[0]["key"]] == "replay"
            assert [actions[x["key"]] for x in refused] == ["skip", "skip"]
            again = _until(
                lambda: [
                    x
                    for x in letters()
                    if x["bytes"] == len(POISON) and x["key"] != first[0]["key"]
                ],
                "the replayed poison's new dead letter",
                stack,
            )
            assert again[0]["reason"] == first[0]["reason"]
            assert sql(db, "SELECT count(*) FROM questions")[0][0] == rows_before

            forced = admin.post(
                "/v1/admin/dead-letters/replay",
                json={"keys": [x["key"] for x in refused], "force": True},
            )
            assert forced.status_code == 200 and forced.json()["replayed"] == 2
            old = {x["key"] for x in refused}
            _until(
                lambda: (
                    len([x for x in letters() if x["question_id"] in ids and x["key"] not in old])
                    == 2
                ),
                "the forced re-runs' dead letters",
                stack,
            )
            rows = sql(
                db, "SELECT question_id, state FROM questions WHERE question_id = ANY(%s)", ids
            )
            assert sorted(s for _, s in rows) == ["failed", "failed"]  # one row each, still final
            assert sql(db, "SELECT count(*) FROM questions")[0][0] == rows_before
            admin.close()
            user.close()
        finally:
            codes = stack.stop_all()
        assert all(c in (0, -15) for c in codes.values()), (codes, stack.tails())
