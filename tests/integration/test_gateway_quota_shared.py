"""Two distributed gateways (each its own Kafka producer, one PostgreSQL database): a key's
quota of new questions holds in sum, under concurrent requests split across both. Counted
per process, each gateway would have let the key through its whole quota (2x in sum)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from qaloop.gateway.auth import ApiKey, format_key, hash_token, new_token
from qaloop.settings import Settings
from tests.integration.conftest import StackSettings

pytestmark = pytest.mark.integration

QUOTA = 5
TOKEN = new_token()


@contextlib.asynccontextmanager
async def gateway(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    from qaloop.distributed import build_gateway_app

    app = build_gateway_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            yield client


@pytest.fixture
def settings(tmp_path: Path, stack_settings: StackSettings) -> Settings:
    keys = tmp_path / "keys.txt"
    keys.write_text(
        format_key(ApiKey("carol", hash_token(TOKEN), "user", quota_per_day=QUOTA)) + "\n",
        encoding="utf-8",
    )
    return stack_settings(auth="on", api_keys_file=str(keys))


async def test_a_keys_quota_holds_in_sum_across_two_gateways(settings: Settings) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with gateway(settings) as one, gateway(settings) as two:

        async def ask(client: httpx.AsyncClient, i: int) -> httpx.Response:
            return await client.post(
                "/v1/questions", json={"question": f"shared quota {i}?"}, headers=headers
            )

        responses = await asyncio.gather(*(ask((one, two)[i % 2], i) for i in range(4 * QUOTA)))
        codes = [r.status_code for r in responses]
        assert codes.count(202) == QUOTA, codes
        refused = [r for r in responses if r.status_code == 429]
        assert len(refused) == 3 * QUOTA
        assert {r.json()["error"]["code"] for r in refused} == {"quota"}
        # A question already accepted is still served (joined), through either gateway.
        accepted = next(i for i, r in enumerate(responses) if r.status_code == 202)
        for client in (one, two):
            joined = await ask(client, accepted)
            assert joined.status_code == 202 and joined.json()["joined"] is True
        # ... and giving back the joined requests' slots did not open new ones.
        assert (await ask(one, 10_000)).status_code == 429
        assert (await ask(two, 10_001)).status_code == 429
