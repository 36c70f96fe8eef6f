"""Off a terminal, long commands still say they are alive: a plain stderr line every few
seconds and one at the end, never click's lone label line ("requests")."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from qaloop.cli import main
from qaloop.cli.common import Progress


def test_throttled_lines_when_not_on_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    now = [0.0]
    with Progress(100, "requests", every_s=5.0, tty=False, clock=lambda: now[0]) as bar:
        for _ in range(100):
            now[0] += 0.2  # 20 s in all: a line at about 5, 10 and 15 s, then the final one
            bar.update()
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert lines[0] == "requests: 25/100 (5 s)"
    assert lines[-1] == "requests: 100/100 (20 s)"
    assert len(lines) == 4


def test_traffic_piped_prints_no_stray_label(tmp_path: Path) -> None:
    out = tmp_path / "t.csv"
    args = ["traffic", "--in-process", "--count", "30", "--rate", "500", "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "requests\n" not in result.stderr
    # the elapsed seconds depend on the machine's load: the label's shape is what is tested
    assert re.fullmatch(r"requests: 30/30 \(\d+ s\)", result.stderr.splitlines()[-2])
    assert result.stderr.splitlines()[-1] == f"wrote 30 rows to {out}"
