"""`qaloop flink-job`: settings -> job flags, and the re-exec into .venv-flink."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from qaloop.cli import flink as cli_flink
from qaloop.cli import main
from qaloop.cli.common import build_settings


def test_job_argv_from_settings_and_flags() -> None:
    settings = build_settings(topic_prefix="p", threshold=0.6, max_attempts=2)
    argv = cli_flink.job_argv(settings, {"delivery": "at-least-once", "bundle_size": 10, "x": None})
    assert argv[argv.index("--topic-prefix") + 1] == "p"
    assert argv[argv.index("--threshold") + 1] == "0.6"
    assert argv[argv.index("--max-attempts") + 1] == "2"
    assert argv[-4:] == ["--delivery", "at-least-once", "--bundle-size", "10"]
    assert "--x" not in argv


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
    result = CliRunner().invoke(main, ["flink-job", "--topic-prefix", "zz", "--resume", "none"])
    assert result.exit_code == 0, result.output
    [(path, argv)] = calls
    assert path == str(python)
    assert argv[:3] == [str(python), "-m", "qaloop.flink.job"]
    assert argv[argv.index("--topic-prefix") + 1] == "zz"
    assert argv[argv.index("--resume") + 1] == "none"


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
