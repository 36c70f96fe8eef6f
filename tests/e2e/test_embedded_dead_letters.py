"""Dead-letter replay over HTTP against a real `qaloop serve` (embedded: the in-process bus,
SQLite). Dead letters outlive the process (storage keeps them; the in-process bus does not),
so a poison letter recorded by an earlier run is replayed into this one's stages and is
dead-lettered again with its reason; questions the LLM refused are listed with the reason,
skipped unless forced, and a forced replay adds no row."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from qaloop.storage.base import DeadLetter
from qaloop.storage.sqlite import SQLiteRepository
from tests.e2e.embedded_server import serve

pytestmark = [pytest.mark.e2e]

POISON = b"\x00\xffnot an envelope"
QALOOP = (sys.executable, "-m", "qaloop")


def _letters(client: httpx.Client, **params: str) -> list[dict[str, object]]:
    r = client.get("/v1/admin/dead-letters", params={"limit": "1000", **params})
    assert r.status_code == 200, r.text
    rows: list[dict[str, object]] = r.json()["dead_letters"]
    return rows


def _until(check: object, timeout_s: float = 30.0) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()  # type: ignore[operator]
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError("timed out")


def test_dead_letters_are_listed_and_replayed_over_http(tmp_path: Path) -> None:
    db = tmp_path / "dl.db"
    repo = SQLiteRepository(str(db))  # an earlier run's poison letter, as the store keeps it
    repo.migrate()
    repo.record_dead_letters(
        [
            DeadLetter(
                "earlier-poison", "undecodable: earlier run", "qaloop.questions", 1.0, None, POISON
            )
        ]
    )
    repo.close()
    gateway = serve(db, QALOOP_SIM_LATENCY_MS="1", QALOOP_SIM_PERMANENT_RATE="1.0")
    try:
        with gateway.client(timeout=30) as client:
            ids = [
                client.post("/v1/questions", json={"question": f"refused {i}?"}).json()["id"]
                for i in range(3)
            ]
            for qid in ids:
                final = client.get(f"/v1/questions/{qid}", params={"wait": 20}).json()
                assert final["status"] == "failed", final
            refused = _until(lambda: [r for r in _letters(client) if r["question_id"] in ids])
            assert len(refused) == 3 and all("permanent" in str(r["reason"]) for r in refused)  # type: ignore[arg-type, union-attr]

            # the CLI goes through the same route (`--url`: embedded mode has no Kafka)
            cli = subprocess.run(
                [*QALOOP, "dlq", "replay", "--url", gateway.url, "--all", "--dry-run"],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert cli.returncode == 0, cli.stderr
            assert "earlier-poison  replay" in cli.stdout and "1 to replay (dry run)" in cli.stdout
            # every letter not replayed: the poison goes back, the failed questions are skipped
            r = client.post("/v1/admin/dead-letters/replay", json={"all": True})
            assert r.status_code == 200, r.text
            actions = {x["key"]: x["action"] for x in r.json()["results"]}
            assert actions["earlier-poison"] == "replay"
            assert [actions[str(x["key"])] for x in refused] == ["skip"] * 3  # type: ignore[index]
            again = _until(
                lambda: [
                    x
                    for x in _letters(client)
                    if x["key"] != "earlier-poison" and x["bytes"] == len(POISON)
                ]
            )
            assert len(again) == 1  # dead-lettered again by this run's stage, with its reason
            assert again[0]["source_topic"] == "qaloop.questions" and again[0]["reason"]  # type: ignore[index]
            everything = {str(x["key"]): x for x in _letters(client, all="true")}
            assert everything["earlier-poison"]["replayed"] is True

            # forced: the refused questions run again (and are refused again): no new row
            keys = [str(x["key"]) for x in refused]
            forced = client.post(
                "/v1/admin/dead-letters/replay", json={"keys": keys, "force": True}
            )
            assert forced.json()["replayed"] == 3
            # the new runs are refused again: three new letters (new keys), with the reason
            new = _until(
                lambda: (
                    [
                        x
                        for x in _letters(client)
                        if x["question_id"] in ids and x["key"] not in keys
                    ]
                    if len([x for x in _letters(client) if x["question_id"] in ids]) >= 3
                    else None
                )
            )
            assert len(new) == 3 and all("permanent" in str(x["reason"]) for x in new)  # type: ignore[arg-type, union-attr]
            assert all(x["replayed"] for x in _letters(client, all="true") if x["key"] in keys)
            denied = client.get("/v1/admin/dead-letters", params={"limit": "0"})
            assert denied.status_code == 422
            # `qaloop reset --url` asks a failed question again through the running gateway
            reset = subprocess.run(
                [*QALOOP, "reset", ids[0], "--url", gateway.url],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert reset.returncode == 0 and "queued again" in reset.stdout, reset.stderr
            final = client.get(f"/v1/questions/{ids[0]}", params={"wait": 20}).json()
            assert final["status"] == "failed"
    finally:
        gateway.stop()
    repo = SQLiteRepository(str(db))
    try:
        rows = [q for q in repo.export_questions() if q["question_id"] in ids]
        assert len(rows) == 3 and {q["state"] for q in rows} == {"failed"}
        for qid in ids:
            seqs = [e.seq for e in repo.events(qid)]
            assert len(seqs) == len(set(seqs))
    finally:
        repo.close()
    log = gateway.output()
    assert "Traceback" not in log, log
