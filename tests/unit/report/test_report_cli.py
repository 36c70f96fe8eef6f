from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

pytest.importorskip("matplotlib", reason="the report needs the `report` extra")

from qaloop.cli.report import command
from qaloop.report.data import RequestsFileError, read_requests
from qaloop.report.render import PLOT_FILES
from qaloop.storage.factory import open_repository


def run(*args: str) -> str:
    result = CliRunner().invoke(command, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_report_writes_markdown_html_and_every_plot(known_db: str, tmp_path: Path) -> None:
    out = tmp_path / "rep"
    output = run("--db", known_db, "--out", str(out), "--threshold", "0.5")
    assert "5 questions" in output
    for name in ("report.md", "report.html", *PLOT_FILES):
        path = out / name
        assert path.exists() and path.stat().st_size > 0, name
    for name in PLOT_FILES:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "report.md").read_text()
    assert "Retry effectiveness per error type" in md
    assert "| quota_minute | 1 | 1 | 0 | 1 | 1 | 0 | 0 | 100.0 |" in md
    assert "| LLM calls per validated answer | 5.000 |" in md
    assert "![Score distribution](scores.png)" in md
    assert '<img src="feedback.png"' in (out / "report.html").read_text()


def test_report_on_an_empty_database_still_writes_every_file(tmp_path: Path) -> None:
    out = tmp_path / "empty"
    open_repository(f"sqlite:///{tmp_path / 'empty.db'}").close()  # exists, holds nothing
    run("--db", f"sqlite:///{tmp_path / 'empty.db'}", "--out", str(out))
    for name in ("report.md", "report.html", *PLOT_FILES):
        assert (out / name).exists(), name


def test_report_reads_a_requests_csv(known_db: str, tmp_path: Path) -> None:
    csv_path = tmp_path / "requests.csv"
    csv_path.write_text(
        "sent_at,latency_ms,outcome,question_id\n"
        "1000.0,2.0,hit,a\n1000.5,1500,queued,b\n1001.0,2500,validated,c\n1001.2,30,503,d\n"
        "1001.3,,error,e\n"
    )
    rows = read_requests(csv_path)
    assert [(r.outcome, r.latency_s) for r in rows] == [
        ("hit", 0.002),
        ("queued", 1.5),
        ("queued", 2.5),
        ("error", 0.03),
    ]
    out = tmp_path / "rep"
    run("--db", known_db, "--out", str(out), "--requests", str(csv_path))
    md = (out / "report.md").read_text()
    assert "Source: requests CSV." in md
    assert "| queued | 2 | 2.000 |" in md
    # Both clocks, named: what the client saw, and the server's own measure under it.
    client = md.index("Time to an answer, client-side (what the traffic client saw)")
    server = md.index("Time to an answer, server-side (storage timestamps)")
    assert client < server
    assert "pass --requests" not in md  # the CSV was passed


def test_without_a_requests_csv_the_latency_is_called_server_side(
    known_db: str, tmp_path: Path
) -> None:
    out = tmp_path / "rep"
    run("--db", known_db, "--out", str(out))
    md = (out / "report.md").read_text()
    assert "Time to an answer, server-side (storage timestamps)" in md
    assert "client-side (what" not in md
    assert "--requests traffic.csv for what the client saw" in md


def test_requests_csv_without_a_latency_column_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("sent_at,outcome\n1,hit\n")
    with pytest.raises(RequestsFileError, match="latency"):
        read_requests(bad)
    result = CliRunner().invoke(
        command,
        [
            "--db",
            f"sqlite:///{tmp_path}/x.db",
            "--out",
            str(tmp_path / "o"),
            "--requests",
            str(bad),
        ],
    )
    assert result.exit_code == 1
    assert "no latency column" in result.output


def test_reads_the_csv_qaloop_traffic_writes(tmp_path: Path) -> None:
    traffic = pytest.importorskip("qaloop.traffic")
    rec = traffic.RequestRecord
    records = [
        rec(0, 0.0, 0.01, "a", 200, "cache", 0.5),
        rec(1, 0.1, 0.11, "b", 202, "queued", 3.0, answer_ms=1500.0, final_status="validated"),
        rec(2, 0.2, 0.21, "c", 202, "joined", 2.0, answer_ms=900.0, final_status="validated"),
        rec(3, 0.3, 0.31, "d", 200, "failed", 0.7),
        rec(4, 0.4, 0.41, "e", 503, "error", 4.0, error="overloaded"),
    ]
    path = tmp_path / "traffic.csv"
    traffic.write_csv(records, path)
    rows = read_requests(path)
    assert [(r.sent_at, r.outcome) for r in rows] == [
        (0.01, "hit"),
        (0.11, "queued"),
        (0.21, "queued"),
        (0.31, "hit"),
        (0.41, "error"),
    ]
    assert [r.latency_s for r in rows] == pytest.approx([0.0005, 1.5, 0.9, 0.0007, 0.004])
