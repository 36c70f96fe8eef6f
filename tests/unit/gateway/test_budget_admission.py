"""The spend budget at the gateway (docs/spend.md, "The gateway's admission check"), through
`qaloop serve`'s app: the worker charges the API key's *name* (Envelope.caller); a key over
its budget gets 429 + Retry-After (budget_action=reject) or has its questions parked
(the default) while another key is still served; the refusal is counted."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from qaloop.cli.serve import build_embedded_app
from qaloop.gateway.auth import ApiKey, format_key, hash_token, new_token
from qaloop.llm.budget import Budget, BudgetAdmission, BudgetConfig, LocalLedger
from qaloop.settings import Settings

ALICE, BOB = new_token(), new_token()


def _settings(tmp_path: Path, action: str, **extra: Any) -> Settings:
    keys = tmp_path / "keys.txt"
    keys.write_text(
        format_key(ApiKey("alice", hash_token(ALICE), "user"))
        + "\n"
        + format_key(ApiKey("bob", hash_token(BOB), "user"))
        + "\n",
        encoding="utf-8",
    )
    return Settings(
        db=f"sqlite:///{tmp_path / 'b.db'}",
        sim_latency_ms=1,
        auth="on",
        api_keys_file=str(keys),
        budget_action=action,
        key_rate_per_s=1000,  # the test polls
        key_burst=1000,
        **extra,
    )


@pytest.fixture
def client_for(tmp_path: Path) -> Any:
    @asynccontextmanager
    async def make(action: str, **extra: Any) -> AsyncIterator[httpx.AsyncClient]:
        app = build_embedded_app(_settings(tmp_path, action, **extra))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
                yield c

    return make


def _h(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _charged(c: httpx.AsyncClient, scope: str) -> float:
    """What `scope` has spent, once an LLM call was charged to it."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        spent = (await c.get("/v1/stats", headers=_h(BOB))).json()["budget"]["spent_usd"]
        if spent.get(scope):
            return float(spent[scope])
        await asyncio.sleep(0.05)
    raise AssertionError(f"no LLM call was charged to {scope}")


async def _parked_for_budget(c: httpx.AsyncClient, qid: str, token: str) -> str:
    """The detail of the question's spend park (its trace), once there is one."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        trace = (await c.get(f"/v1/questions/{qid}/trace", headers=_h(token))).text
        if "budget:" in trace:
            return trace
        await asyncio.sleep(0.1)
    raise AssertionError(f"question {qid} was not parked for its budget")


async def _spend_alices_budget(c: httpx.AsyncClient, scope: str = "key:alice") -> None:
    """One LLM call for alice: it costs more than her tiny budget."""
    r = await c.post("/v1/questions", json={"question": "What is a ledger?"}, headers=_h(ALICE))
    assert r.status_code == 202, r.text
    assert await _charged(c, scope) > 1e-9


async def test_reject_a_key_over_its_budget_gets_429_another_key_is_served(
    client_for: Any,
) -> None:
    async with client_for("reject", budget_key_usd=1e-9) as c:
        await _spend_alices_budget(c)
        stats = (await c.get("/v1/stats", headers=_h(BOB))).json()
        # The ledger is keyed by the key's name, never by the key itself.
        assert list(stats["budget"]["spent_usd"]) == ["key:alice"]
        assert ALICE not in str(stats)

        over = await c.post("/v1/questions", json={"question": "And now?"}, headers=_h(ALICE))
        assert over.status_code == 429, over.text
        assert over.json()["error"]["code"] == "budget"
        assert "alice's spend budget is reached" in over.json()["error"]["message"]
        assert 1 <= int(over.headers["retry-after"]) <= 86400  # until the UTC day turns

        # Known questions are still served to alice; bob, under his budget, is served.
        known = await c.post(
            "/v1/questions", json={"question": "What is a ledger?"}, headers=_h(ALICE)
        )
        assert known.status_code in (200, 202)  # in flight or answered: joining is free
        other = await c.post("/v1/questions", json={"question": "And now?"}, headers=_h(BOB))
        assert other.status_code == 202
        assert await _charged(c, "key:bob") > 0  # bob's question got its LLM call

        metrics = (await c.get("/metrics")).text
        assert 'qaloop_gateway_admission_rejected_total{reason="budget"} 1.0' in metrics


async def test_park_is_the_default_a_key_over_its_budget_parks_another_is_served(
    client_for: Any,
) -> None:
    assert Settings().budget_action == "park"
    async with client_for("park", budget_key_usd=1e-9) as c:
        await _spend_alices_budget(c)
        parked = await c.post("/v1/questions", json={"question": "And now?"}, headers=_h(ALICE))
        assert parked.status_code == 202  # accepted: it waits for the period, not refused
        trace = await _parked_for_budget(c, parked.json()["id"], ALICE)
        assert "alice's spend budget is reached" in trace
        # Bob asks another question and gets his answer meanwhile.
        other = await c.post("/v1/questions", json={"question": "Why not?"}, headers=_h(BOB))
        assert other.status_code == 202
        assert await _charged(c, "key:bob") > 0  # bob's question got its LLM call
        stats = (await c.get("/v1/stats", headers=_h(BOB))).json()
        assert stats["budget"]["stops"] >= 1
        metrics = (await c.get("/metrics")).text
        assert 'qaloop_gateway_admission_rejected_total{reason="budget"}' not in metrics


async def test_reject_the_global_budget_refuses_every_key(client_for: Any) -> None:
    async with client_for("reject", budget_usd=1e-9) as c:
        await _spend_alices_budget(c, "global")
        for token in (ALICE, BOB):
            r = await c.post("/v1/questions", json={"question": "More?"}, headers=_h(token))
            assert r.status_code == 429 and r.json()["error"]["code"] == "budget"
            assert "the global spend budget" in r.json()["error"]["message"]


class _BrokenLedger(LocalLedger):
    async def spent(self, scopes: Any, period_start: float) -> dict[str, float]:
        raise ConnectionError("ledger down")


class _Ask:
    caller = "alice"


def _reject(reason: str, message: str, after: float) -> tuple[str, str, float]:
    return reason, message, after


async def test_admission_reuses_a_shared_ledgers_answer_and_admits_when_it_is_down() -> None:
    now = [0.0]
    budget = Budget(BudgetConfig(per_key_usd=0.1, action="reject"), LocalLedger())
    check = BudgetAdmission(budget, _reject, refresh_s=1.0, clock=lambda: now[0])
    assert await check.check(_Ask()) is None
    await budget.charge("alice", 0.2)
    assert await check.check(_Ask()) is None  # the answer of a moment ago
    now[0] = 1.5
    got = await check.check(_Ask())
    assert got is not None and got[0] == "budget"
    assert budget.stops == 0  # the gateway's refusals are counted by admission, not as stops

    down = Budget(BudgetConfig(per_key_usd=0.1, action="reject"), _BrokenLedger())
    assert await BudgetAdmission(down, _reject).check(_Ask()) is None  # the worker parks it
