"""API keys: an unknown key, a revoked key, a key over its quota, a user key on an admin route,
and a flood from one key that does not spend another key's share."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from qaloop.gateway.admission import Admission, Ask, Rejection
from qaloop.gateway.auth import (
    ApiKey,
    KeyFileError,
    LocalQuota,
    format_key,
    hash_token,
    new_token,
    parse_keys,
)
from qaloop.gateway.guard import AuthSetupError, build_auth, guard_gateway
from qaloop.gateway.http import create_app
from qaloop.pipeline import EmbeddedPipeline
from qaloop.settings import Settings

ALICE, BOB, OPS, OLD = new_token(), new_token(), new_token(), new_token()


def _keys_file(path: Path) -> Path:
    lines = [
        format_key(ApiKey("alice", hash_token(ALICE), "user", rate_per_s=5, burst=5)),
        format_key(ApiKey("bob", hash_token(BOB), "user", quota_per_day=2)),
        format_key(ApiKey("ops", hash_token(OPS), "admin")),
        format_key(ApiKey("old", hash_token(OLD), "user", revoked=True)),
    ]
    path.write_text("# test keys\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        db=f"sqlite:///{tmp_path / 'a.db'}",
        sim_latency_ms=1,
        auth="on",
        api_keys_file=str(_keys_file(tmp_path / "keys.txt")),
        metrics_auth=True,
    )
    p = EmbeddedPipeline(settings)
    auth = guard_gateway(
        p.service, settings, backlog=lambda: len(p.service.in_flight), backlog_is_slow=False
    )
    await p.start()
    app = create_app(p.service, settings, stats=p.stats, auth=auth)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
        yield c
    await p.stop()


def _h(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_missing_unknown_and_revoked_keys_get_401(client: httpx.AsyncClient) -> None:
    body = {"question": "Who are you?"}
    for headers, code in (
        ({}, "missing_key"),
        (_h(new_token()), "unknown_key"),
        ({"X-API-Key": "qk_not-a-key"}, "unknown_key"),
        (_h(OLD), "revoked_key"),
    ):
        r = await client.post("/v1/questions", json=body, headers=headers)
        assert r.status_code == 401, headers
        assert r.json()["error"]["code"] == code
        assert r.headers["www-authenticate"].startswith("Bearer")
    assert (await client.get("/healthz")).status_code == 200  # liveness stays open
    ok = await client.post("/v1/questions", json=body, headers={"X-API-Key": ALICE})
    assert ok.status_code == 202


async def test_admin_routes_need_an_admin_key(client: httpx.AsyncClient) -> None:
    path = f"/v1/admin/questions/{'0' * 32}/reset"
    assert (await client.post(path, headers=_h(ALICE))).status_code == 403
    assert (await client.post(path, headers=_h(OPS))).status_code == 404  # admitted: unknown id
    assert (await client.get("/metrics", headers=_h(ALICE))).status_code == 403
    assert (await client.get("/metrics", headers=_h(OPS))).status_code == 200


async def test_a_key_over_its_quota_gets_429_for_new_questions_only(
    client: httpx.AsyncClient,
) -> None:
    for i in range(2):
        r = await client.post("/v1/questions", json={"question": f"bob {i}?"}, headers=_h(BOB))
        assert r.status_code == 202
    over = await client.post("/v1/questions", json={"question": "bob 3?"}, headers=_h(BOB))
    assert over.status_code == 429 and over.json()["error"]["code"] == "quota"
    assert int(over.headers["retry-after"]) >= 1
    joined = await client.post("/v1/questions", json={"question": "bob 0?"}, headers=_h(BOB))
    assert joined.status_code in (200, 202)  # known questions don't spend the quota
    other = await client.post("/v1/questions", json={"question": "bob 3?"}, headers=_h(OPS))
    assert other.status_code == 202  # the quota is bob's, not the question's


async def test_a_flood_from_one_key_does_not_spend_anothers_share(
    client: httpx.AsyncClient,
) -> None:
    flood = [
        await client.post("/v1/questions", json={"question": "flood?"}, headers=_h(ALICE))
        for _ in range(40)
    ]
    limited = [r for r in flood if r.status_code == 429]
    assert len(limited) >= 30  # burst 5 at 5/s: the rest of the flood is refused
    assert all(r.json()["error"]["code"] == "rate_limited" for r in limited)
    assert all(float(r.headers["retry-after"]) >= 1 for r in limited)
    others = [
        await client.post("/v1/questions", json={"question": f"ops {i}?"}, headers=_h(OPS))
        for i in range(20)
    ]
    assert [r.status_code for r in others] == [202] * 20


def test_revocation_in_the_file_takes_effect_without_restart(tmp_path: Path) -> None:
    path = _keys_file(tmp_path / "keys.txt")
    settings = Settings(db="sqlite://:memory:", auth="on", api_keys_file=str(path))
    p = EmbeddedPipeline(settings)
    auth = build_auth(settings, p.service)
    assert auth is not None
    headers = [(b"authorization", f"Bearer {ALICE}".encode())]
    assert isinstance(auth.check("/v1/stats", headers), ApiKey)
    path.write_text(path.read_text().replace("rate=5", "rate=5  revoked"), encoding="utf-8")
    auth.reload(force=True)
    denied = auth.check("/v1/stats", headers)
    assert not isinstance(denied, ApiKey) and denied is not None and denied.status == 401
    p.repo.close()


def test_auth_setup_errors_are_one_line() -> None:
    with pytest.raises(AuthSetupError, match="QALOOP_API_KEYS_FILE"):
        build_auth(Settings(host="0.0.0.0", db="sqlite://:memory:"), _service())
    assert build_auth(Settings(host="127.0.0.1", db="sqlite://:memory:"), _service()) is None
    with pytest.raises(KeyFileError, match="line 1"):
        parse_keys("alice superuser sha256:" + "0" * 64)
    with pytest.raises(KeyFileError, match="sha256"):
        parse_keys("alice user plaintext-key")


def _service():  # type: ignore[no-untyped-def]
    return EmbeddedPipeline(Settings(db="sqlite://:memory:")).service


async def test_metrics_stay_open_unless_metrics_auth(tmp_path: Path) -> None:
    settings = Settings(
        db=f"sqlite:///{tmp_path / 'm.db'}",
        auth="on",
        api_keys_file=str(_keys_file(tmp_path / "keys.txt")),
    )
    p = EmbeddedPipeline(settings)
    auth = build_auth(settings, p.service)
    app = create_app(p.service, settings, stats=p.stats, auth=auth)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
        assert (await c.get("/metrics")).status_code == 200  # Prometheus scrapes without a key
        assert (await c.get("/v1/stats")).status_code == 401
    p.repo.close()


async def test_a_question_joined_or_known_gives_its_quota_slot_back(
    client: httpx.AsyncClient,
) -> None:
    first = await client.post("/v1/questions", json={"question": "bob again?"}, headers=_h(BOB))
    assert first.status_code == 202
    for _ in range(3):  # in flight or answered: each reserved a slot and gave it back
        same = await client.post("/v1/questions", json={"question": "bob again?"}, headers=_h(BOB))
        assert same.json().get("joined") is True or same.json()["status"] in ("answered", "failed")
    second = await client.post("/v1/questions", json={"question": "bob other?"}, headers=_h(BOB))
    assert second.status_code == 202  # quota 2: the repeats did not spend it
    third = await client.post("/v1/questions", json={"question": "bob third?"}, headers=_h(BOB))
    assert third.status_code == 429


async def test_local_quota_reserves_atomically_and_releases() -> None:
    quota = LocalQuota()
    assert [await quota.reserve("k", 1, 2) for _ in range(3)] == [True, True, False]
    await quota.release("k", 1)
    assert await quota.reserve("k", 1, 2) and not await quota.reserve("k", 1, 2)
    assert await quota.reserve("k", 2, 2)  # a new day starts at zero
    await quota.release("other", 2)  # nothing taken: nothing to give back
    assert await quota.reserve("other", 2, 1) and not await quota.reserve("other", 2, 1)


async def test_a_later_refusal_gives_back_what_an_earlier_check_took() -> None:
    taken: list[str] = []

    class Takes:
        name = "takes"

        async def check(self, ask: Ask) -> Rejection | None:
            taken.append(ask.question_id)
            return None

        def admitted(self, ask: Ask) -> None:
            return None

        async def released(self, ask: Ask) -> None:
            taken.remove(ask.question_id)

    class Refuses:
        name = "refuses"

        async def check(self, ask: Ask) -> Rejection | None:
            return Rejection("backlog", "full", 1.0)

        def admitted(self, ask: Ask) -> None:
            return None

    admission = Admission([Takes(), Refuses()])
    assert await admission.check(Ask("q", "q?", None, "k")) is not None
    assert taken == []


def test_the_compose_deployment_turns_api_keys_on() -> None:
    import yaml

    compose = Path(__file__).resolve().parents[3] / "deploy" / "docker-compose.yml"
    gateway = yaml.safe_load(compose.read_text(encoding="utf-8"))["services"]["gateway"]
    env = gateway["environment"]
    assert env["QALOOP_AUTH"] == "on" and env["QALOOP_API_KEYS_FILE"].startswith("/run/secrets/")
    assert "0.0.0.0" in gateway["command"]  # not loopback: `auto` would turn them on too
