"""Every error a user can cause (issue 15's list) is one line saying what is wrong and what to
do, with a non-zero exit code: no traceback, no pydantic links, no empty database left behind."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from qaloop.cli import main
from qaloop.storage.base import DeadLetter
from qaloop.storage.factory import open_repository


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env)


def assert_one_line_error(result: Result, *needles: str) -> str:
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    text = result.output.strip()
    assert text.startswith("Error: "), text
    assert len(text.splitlines()) == 1, text
    assert "Traceback" not in text and "pydantic" not in text and "http" not in text.lower()
    for needle in needles:
        assert needle in text, text
    return text


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("QALOOP_"):
            monkeypatch.delenv(name)


@pytest.mark.parametrize("command", [["report"], ["dlq", "list"], ["serve"], ["demo"]])
def test_an_unknown_storage_scheme_is_named(command: list[str]) -> None:
    text = assert_one_line_error(run(*command, "--db", "foo://bar"), "foo://bar", "sqlite:///")
    assert "unknown storage URL" in text


@pytest.mark.parametrize("command", [["report"], ["dlq", "list"]])
def test_a_mistyped_database_is_not_created(command: list[str], tmp_path: Path) -> None:
    text = assert_one_line_error(run(*command, "--db", "sqlite:///typo.db"), "typo.db")
    assert "no database" in text
    assert not (tmp_path / "typo.db").exists()


def test_dlq_list_without_a_database_creates_none(tmp_path: Path) -> None:
    assert_one_line_error(run("dlq", "list"), "qaloop.db")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", [["demo"], ["serve"], ["traffic", "--in-process"]])
def test_a_database_directory_that_is_missing_or_not_writable(command: list[str]) -> None:
    assert_one_line_error(run(*command, "--db", "sqlite:///nodir/x.db"), "nodir", "does not exist")
    if sys.platform == "linux":  # root may write anywhere a chmod forbids: /proc refuses all
        assert_one_line_error(run(*command, "--db", "sqlite:////proc/x.db"), "not writable")


def test_a_read_only_directory(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as root: permissions do not stop this user")
        assert_one_line_error(run("demo", "--db", f"sqlite:///{ro}/x.db"), "not writable")
    finally:
        ro.chmod(0o755)


def test_postgresql_without_the_postgres_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if not installed
    for command in (["report"], ["dlq", "list"], ["serve"]):
        assert_one_line_error(
            run(*command, "--db", "postgresql://u@127.0.0.1:1/x"), "qaloop[postgres]"
        )


def test_dlq_replay_on_an_embedded_database_points_to_the_gateway() -> None:
    pytest.importorskip("confluent_kafka", reason="the kafka extra is not installed")
    repo = open_repository("sqlite:///q.db")
    repo.record_dead_letters([DeadLetter("k1", "poison", "qaloop.questions", 1.0, None, b"x")])
    repo.close()
    assert_one_line_error(run("dlq", "replay", "--all", "--db", "sqlite:///q.db"), "--url")
    dry = run("dlq", "replay", "--all", "--dry-run", "--db", "sqlite:///q.db")
    assert dry.exit_code == 0 and "1 to replay (dry run)" in dry.output  # no bus needed


def test_dlq_replay_without_the_kafka_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    repo = open_repository("sqlite:///q.db")
    repo.record_dead_letters([DeadLetter("k1", "poison", "qaloop.questions", 1.0, None, b"x")])
    repo.close()
    monkeypatch.setitem(sys.modules, "confluent_kafka", None)
    text = assert_one_line_error(
        run("dlq", "replay", "--all", "--force", "--db", "sqlite:///q.db"), "qaloop[kafka]"
    )
    assert "--dry-run" in text
    repo = open_repository("sqlite:///q.db")
    try:  # nothing was marked replayed
        assert [letter.replayed for letter in repo.dead_letters(include_replayed=True)] == [False]
    finally:
        repo.close()


def test_a_missing_extra_while_running_names_the_extra() -> None:
    """The edge maps any optional module that turns out missing, not only the ones checked."""
    import click

    from qaloop.cli.errors import explain

    with pytest.raises(click.ClickException) as caught, explain():
        raise ModuleNotFoundError("No module named 'confluent_kafka'", name="confluent_kafka")
    assert "qaloop[kafka]" in caught.value.message
    with pytest.raises(ModuleNotFoundError), explain():  # not an extra: a bug, kept as is
        raise ModuleNotFoundError("No module named 'nothing_of_ours'", name="nothing_of_ours")


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["serve", "--port", "99999"], ["--port 99999", "65535"]),
        (["serve", "--cache-policy", "bogus"], ["--cache-policy bogus", "'lru'"]),
        (["serve", "--threshold", "2"], ["--threshold 2", "1"]),
    ],
)
def test_bad_settings_name_the_flag(args: list[str], needles: list[str]) -> None:
    assert_one_line_error(run(*args), *needles)


def test_bad_settings_from_the_environment_name_the_variable() -> None:
    assert_one_line_error(run("serve", env={"QALOOP_PORT": "abc"}), "QALOOP_PORT=abc")


def test_both_escalation_settings_are_one_line_naming_the_equivalent() -> None:
    env = {"QALOOP_LAST_ATTEMPT_MODEL": "big", "QALOOP_LLM_ESCALATION": "simulated/simulated"}
    assert_one_line_error(
        run("serve", env=env),
        "QALOOP_LAST_ATTEMPT_MODEL and QALOOP_LLM_ESCALATION are both set",
        "simulated/simulated,simulated/simulated,simulated/big",
    )


def test_a_check_across_settings_never_prints_their_values() -> None:
    env = {
        "QALOOP_KAFKA_REPLICATION_FACTOR": "1",
        "QALOOP_KAFKA_MIN_INSYNC_REPLICAS": "2",
        "QALOOP_LLM_API_KEY": "sk-do-not-print",
    }
    text = assert_one_line_error(run("serve", env=env), "invalid settings", "replication")
    assert "sk-do-not-print" not in text


def test_dlq_list_says_what_it_shows() -> None:
    open_repository("sqlite:///q.db").close()
    result = run("dlq", "list", "--db", "sqlite:///q.db")
    assert result.exit_code == 0
    assert result.output.strip() == (
        "no dead letters waiting for a replay (--all lists replayed ones too)"
    )
    assert run("dlq", "list", "--all", "--db", "sqlite:///q.db").output.strip() == (
        "no dead letters"
    )


def test_an_unknown_command_is_a_usage_error() -> None:
    result = run("nosuch")
    assert result.exit_code == 2
    assert "No such command 'nosuch'" in result.output


def test_postgresql_that_refuses_is_named_at_once() -> None:
    pytest.importorskip("psycopg", reason="the postgres extra is not installed")
    started = time.monotonic()
    text = assert_one_line_error(
        run("dlq", "list", "--db", "postgresql://u:topsecret@127.0.0.1:1/x"), "127.0.0.1:1"
    )
    assert "Connection refused" in text and "topsecret" not in text
    assert time.monotonic() - started < 10  # not the pool's 30 s of retries


@pytest.mark.slow  # librdkafka gives up on the metadata request after ~30 s
def test_kafka_that_refuses_is_one_line() -> None:
    pytest.importorskip("confluent_kafka", reason="the kafka extra is not installed")
    # A real process: the stage registers signal handlers on the real stderr.
    done = subprocess.run(
        [sys.executable, "-m", "qaloop", "worker", "--kafka-bootstrap", "127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("QALOOP_")},
    )
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "QALOOP_KAFKA_BOOTSTRAP" in errors[0], done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("args", [["demo", "--requests", "-5"], ["demo", "--overload-rate", "2"]])
def test_demo_refuses_impossible_numbers(args: list[str]) -> None:
    result = run(*args)
    assert result.exit_code == 2 and "is not in the range" in result.output


def test_a_port_in_use_is_named() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert_one_line_error(run("serve", "--port", str(port)), f"127.0.0.1:{port}", "--port")
