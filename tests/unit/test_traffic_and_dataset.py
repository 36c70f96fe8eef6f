from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from qaloop.cli import main
from qaloop.dataset import DatasetError, load_csv, load_sample
from qaloop.traffic import TrafficPlan, run_traffic, summarise, write_csv


def test_sample_dataset_loads_and_decodes_line_breaks() -> None:
    qas = load_sample()
    assert len(qas) > 300
    assert any("\n" in qa.reference_answer for qa in qas)
    assert not any("\\n" in qa.reference_answer for qa in qas)
    assert any("¿" in qa.question for qa in qas)


@pytest.mark.parametrize("header", [True, False])
def test_kaggle_layout_with_or_without_header(tmp_path: Path, header: bool) -> None:
    path = tmp_path / "y.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        if header:
            w.writerow(["class_index", "question_title", "question_content", "best_answer"])
        w.writerow(["3", "Title?", "More\\ncontent", "Line one\\nLine two"])
        w.writerow(["4", "Only title", "", "ans"])
        w.writerow(["5", "", "", "no question: skipped"])
    qas = load_csv(path)
    assert [qa.question for qa in qas] == ["Title? More\ncontent", "Only title"]
    assert qas[0].reference_answer == "Line one\nLine two"
    assert qas[0].category == 3


def test_bad_dataset_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not found"):
        load_csv(tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("1,only two\n")
    with pytest.raises(DatasetError, match="expected 4 columns"):
        load_csv(bad)
    result = CliRunner().invoke(main, ["demo", "--dataset", str(tmp_path / "missing.csv")])
    assert result.exit_code == 1 and "not found" in result.output


async def test_traffic_records_every_request(tmp_path: Path) -> None:
    seen: dict[str, int] = {}

    async def ask(question: str, reference: str | None) -> tuple[int, dict[str, Any]]:
        seen[question] = seen.get(question, 0) + 1
        if seen[question] == 1:
            return 202, {"id": question[:8], "status": "queued"}
        return 200, {"id": question[:8], "status": "answered", "source": "cache"}

    async def wait(qid: str, seconds: float) -> dict[str, Any]:
        return {"id": qid, "status": "validated"}

    plan = TrafficPlan(arrival="constant", rate=2000, count=300, seed=3, wait_s=1)
    records = await run_traffic(plan, load_sample(limit=50), ask, wait)
    assert len(records) == 300
    assert [r.seq for r in records] == list(range(300))
    outcomes = summarise(records)["outcomes"]
    assert outcomes["queued"] == len(seen) and outcomes["cache"] == 300 - len(seen)
    assert all(r.final_status == "validated" for r in records if r.outcome == "queued")
    path = tmp_path / "t.csv"
    write_csv(records, path)
    assert len(path.read_text().splitlines()) == 301


def test_every_command_has_help() -> None:
    runner = CliRunner()
    for name, cmd in main.commands.items():
        result = runner.invoke(main, [name, "--help"])
        assert result.exit_code == 0, name
        assert (cmd.help or "").strip(), f"command {name} has no help text"


SHARED_DATA = Path(
    os.environ.get(
        "QALOOP_SHARED_DATA", Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
    )
)


def test_reads_the_real_yahoo_answers_csv() -> None:
    path = SHARED_DATA / "yahoo_answers.csv"
    if not path.exists():
        pytest.skip(f"{path} not present (research-only data, not shipped)")
    qas = load_csv(path)
    assert len(qas) == 6162
    assert all(qa.question and qa.reference_answer for qa in qas)
    assert not any("\\n" in qa.reference_answer for qa in qas)
    assert sum("\n" in qa.reference_answer for qa in qas) > 100
    assert {qa.category for qa in qas} - {None} <= set(range(1, 11))


async def test_traffic_sends_the_priority() -> None:
    import httpx

    from qaloop.traffic import http_client_fns

    seen: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.content)
        return httpx.Response(202, json={"id": "x", "status": "queued"})

    async with httpx.AsyncClient(
        transport=httpx.MockTransport(handler), base_url="http://gw"
    ) as client:
        ask, _ = http_client_fns(client, "batch")
        await ask("q?", None)
        ask, _ = http_client_fns(client)
        await ask("q?", None)
    assert b'"priority":"batch"' in seen[0].replace(b" ", b"")
    assert b"priority" not in seen[1]
