"""`qaloop keys add|revoke` and `qaloop reset` (offline, embedded database)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from click.testing import CliRunner

from qaloop.cli import main
from qaloop.gateway.auth import FileKeys, hash_token
from qaloop.pipeline import EmbeddedPipeline
from qaloop.settings import Settings
from qaloop.storage.sqlite import SQLiteRepository


def test_keys_add_and_revoke_in_a_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.txt"
    runner = CliRunner()
    added = runner.invoke(main, ["keys", "add", "alice", "--quota", "5", "--file", str(path)])
    assert added.exit_code == 0, added.output
    token = added.output.strip()
    assert token.startswith("qk_") and token not in path.read_text()  # only the hash is kept
    keys = FileKeys(str(path)).load()
    assert keys is not None and keys[0].key_hash == hash_token(token) and keys[0].quota_per_day == 5
    assert runner.invoke(main, ["keys", "revoke", "alice", "--file", str(path)]).exit_code == 0
    keys = FileKeys(str(path)).load()
    assert keys is not None and keys[0].revoked
    missing = runner.invoke(main, ["keys", "revoke", "bob", "--file", str(path)])
    assert missing.exit_code == 1 and "no active key" in missing.output


def test_keys_in_the_database(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'k.db'}"
    runner = CliRunner()
    added = runner.invoke(main, ["keys", "add", "ops", "--role", "admin", "--db", db])
    assert added.exit_code == 0, added.output
    from qaloop.gateway.auth import DbKeys

    keys = DbKeys(db).load()
    assert keys is not None and keys[0].role == "admin" and not keys[0].revoked
    assert runner.invoke(main, ["keys", "revoke", "ops", "--db", db]).exit_code == 0
    keys = DbKeys(db).load()
    assert keys is not None and keys[0].revoked


def test_reset_offline_then_the_next_start_runs_it(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    settings = Settings(db=f"sqlite:///{db}", sim_latency_ms=1, threshold=1.0, max_attempts=1)

    async def ask_and_fail() -> str:
        p = EmbeddedPipeline(settings)
        await p.start()
        await p.service.ask("Will this fail?", "a reference")
        await p.drain(10)
        await p.stop()
        return str(p.repo.export_questions()[0]["question_id"])

    qid = asyncio.run(ask_and_fail())
    runner = CliRunner()
    result = runner.invoke(main, ["reset", qid, "--db", f"sqlite:///{db}", "--reference", "new"])
    assert result.exit_code == 0, result.output
    repo = SQLiteRepository(str(db))
    record = repo.get(qid)
    assert record is not None and record.state.value == "queued"
    assert record.reference_answer == "new"
    repo.close()
    again = runner.invoke(main, ["reset", qid, "--db", f"sqlite:///{db}"])
    assert again.exit_code == 1 and "not failed" in again.output

    async def resume() -> str:
        p = EmbeddedPipeline(settings)
        await p.start()
        await p.drain(10)
        await p.stop()
        record = p.repo.get(qid)
        assert record is not None
        return record.state.value

    assert asyncio.run(resume()) == "failed"  # it ran again (and failed again: threshold 1)
