"""End to end in one process: questions in -> validated rows in storage, with injected 503s,
429s and permanent errors exercising every retry path; and a SIGKILL + restart of `qaloop
serve` that loses no accepted question."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from qaloop.dataset import load_sample
from qaloop.pipeline import EmbeddedPipeline
from qaloop.settings import Settings
from qaloop.storage.sqlite import SQLiteRepository
from tests.e2e.embedded_server import EmbeddedServer, serve


async def test_every_retry_path_end_to_end(tmp_path: Path) -> None:
    settings = Settings(
        db=f"sqlite:///{tmp_path / 'e2e.db'}",
        sim_overload_rate=0.15,
        sim_quota_rate=0.10,
        sim_quota_retry_after_s=0.05,
        sim_permanent_rate=0.02,
        sim_latency_ms=2,
        backoff_base_s=0.001,
        backoff_cap_s=0.05,
        overload_tries=2,
        max_parks=8,
    )
    pipeline = EmbeddedPipeline(settings)
    await pipeline.start()
    qas = load_sample(limit=200)
    for qa in qas:
        status, _ = await pipeline.service.ask(qa.question, qa.reference_answer)
        assert status == 202
    assert await pipeline.drain(60)
    await pipeline.stop()
    stats = pipeline.stats()["pipeline"]
    counts = pipeline.repo.state_counts()
    # accepted = validated + failed: nothing lost, nothing stuck
    assert counts.get("validated", 0) + counts.get("failed", 0) == len(qas)
    assert set(counts) <= {"validated", "failed"}
    assert stats["retried_in_process"]["overload"] > 0  # 503 -> backoff retries
    assert stats["parked"]["quota_minute"] > 0  # 429 -> parked on the delayed topic
    assert stats["parked"].get("overload", 0) > 0  # 503 after the in-process tries -> parked
    assert stats["resumed_from_park"] == sum(stats["parked"].values())
    assert stats["recovered"]["quota_minute"] > 0 and stats["recovered"]["overload"] > 0
    assert stats["llm_dead_lettered"]["permanent"] > 0  # 400 -> dead letter with reason
    assert stats["judge_decisions"]["regenerate"] > 0  # the feedback loop ran
    letters = pipeline.repo.dead_letters(limit=1000)
    assert any("permanent" in d.reason for d in letters)
    events = pipeline.repo.export_events()
    recovered = {e["question_id"] for e in events if e["kind"] == "resumed"}
    validated = {
        q["question_id"] for q in pipeline.repo.export_questions() if q["state"] == "validated"
    }
    assert recovered & validated  # parked questions came back and passed
    assert pipeline.settings.max_attempts >= max(e["attempt"] for e in events)


def _serve(db: Path, port: int | None, latency_ms: int) -> EmbeddedServer:
    return serve(db, port, QALOOP_SIM_LATENCY_MS=str(latency_ms), QALOOP_LLM_CONCURRENCY="4")


@pytest.mark.slow
def test_sigkill_and_restart_loses_no_accepted_question(tmp_path: Path) -> None:
    db = tmp_path / "crash.db"
    gateway = _serve(db, None, latency_ms=400)  # slow LLM: questions are in flight when killed
    port = gateway.port
    accepted: list[str] = []
    try:
        with gateway.client(timeout=5) as client:
            for qa in load_sample(limit=60):
                r = client.post(
                    "/v1/questions",
                    json={"question": qa.question, "reference_answer": qa.reference_answer},
                )
                assert r.status_code == 202
                accepted.append(r.json()["id"])
            time.sleep(0.5)
    finally:
        gateway.kill()
    repo = SQLiteRepository(str(db))
    unfinished_before = len(repo.unfinished())
    repo.close()
    assert unfinished_before > 0, "the kill came too late to prove anything"

    gateway = _serve(db, port, latency_ms=1)
    try:
        with gateway.client(timeout=30) as client:
            for qid in accepted:
                r = client.get(f"/v1/questions/{qid}", params={"wait": 20})
                assert r.status_code == 200
                assert r.json()["status"] in ("validated", "failed"), r.json()
    finally:
        gateway.stop(timeout_s=20)
    repo = SQLiteRepository(str(db))
    counts = repo.state_counts()
    assert sum(counts.values()) == len(accepted) == len(set(accepted))
    assert counts.get("validated", 0) + counts.get("failed", 0) == len(accepted)
    for qid in accepted[:10]:
        kinds = [e.kind for e in repo.events(qid)]
        assert kinds.count("accepted") == 1
    repo.close()
