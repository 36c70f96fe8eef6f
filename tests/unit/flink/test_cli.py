"""`qaloop flink-job`: settings -> job flags, and the re-exec into .venv-flink."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from qaloop.cli import flink as cli_flink
from qaloop.cli import main


def test_bad_flag_is_a_one_line_error_before_any_jvm() -> None:
    result = CliRunner().invoke(main, ["flink-job", "--threshold", "7"])
    assert result.exit_code == 1
    assert "invalid configuration" in result.output and "threshold" in result.output


def test_reexecs_with_the_flink_venv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    python = tmp_path / "python"
    python.write_text("")
    calls: list[tuple[str, list[str]]] = []

    def fake_execv(path: str, argv: list[str]) -> Any:
        calls.append((path, argv))
        raise SystemExit(0)

    monkeypatch.setattr(cli_flink, "find_spec", lambda name: None)
    monkeypatch.setenv("QALOOP_FLINK_PYTHON", str(python))
    monkeypatch.setattr(cli_flink.os, "execv", fake_execv)
    result = CliRunner().invoke(
        main, ["flink-job", "--topic-prefix", "zz", "--flink-resume", "none"]
    )
    assert result.exit_code == 0, result.output
    [(path, argv)] = calls
    assert path == str(python)
    assert argv[:3] == [str(python), "-m", "qaloop.flink.job"]
    # the arguments pass through unchanged: the job parses them into the same Settings
    assert argv[3:] == ["--topic-prefix", "zz", "--flink-resume", "none"]


def test_clear_error_without_pyflink(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_flink, "find_spec", lambda name: None)
    monkeypatch.setattr(cli_flink, "flink_python", lambda: None)
    result = CliRunner().invoke(main, ["flink-job"])
    assert result.exit_code == 1
    assert "make flink-venv" in result.output


@pytest.mark.parametrize(("judge", "service"), [("plain", "judge"), ("flink", "flink-job")])
def test_up_runs_the_chosen_judge(
    judge: str, service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from qaloop.cli import up

    made: list[tuple[str, str]] = []

    class Stop(Exception):
        pass

    class FakeChild:
        def __init__(self, name: str, service: str, colour: str) -> None:
            made.append((name, service))

        def start(self, env: dict[str, str]) -> None:
            raise Stop

    monkeypatch.setattr(up, "Child", FakeChild)
    with pytest.raises(Stop):
        up.run_stack(up.parse_scale(()), {}, restart=False, grace_s=1, judge=judge)
    assert ("judge", service) in made


def test_up_refuses_several_flink_jobs() -> None:
    result = CliRunner().invoke(main, ["up", "--judge", "flink", "--scale", "judge=2"])
    assert result.exit_code == 2
    assert "one Flink job" in result.output
