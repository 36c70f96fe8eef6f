from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

pytest.importorskip("matplotlib", reason="the experiments need the `report` extra")

from qaloop.cli.experiment import command


def invoke(*args: str) -> str:
    result = CliRunner().invoke(command, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_cache_experiment_writes_tables_and_plots(tmp_path: Path) -> None:
    out = tmp_path / "cache"
    output = invoke(
        "cache",
        "--out",
        str(out),
        "--requests",
        "3000",
        "--keys",
        "300",
        "--sizes",
        "10,50,300",
        "--ttls",
        "0,5",
        "--ttl-size",
        "50",
    )
    assert "Most stressful popularity: uniform-poisson" in output
    for name in (
        "cache_hit_rates.md",
        "cache_hit_rates.html",
        "cache_hit_rates.csv",
        "cache_sizes.png",
        "cache_ttl.png",
    ):
        assert (out / name).stat().st_size > 0, name
    md = (out / "cache_hit_rates.md").read_text()
    assert "qaloop experiment cache --requests 3000 --keys 300" in md or "--requests 3000" in md
    assert "| zipf-poisson | lru |" in md


def test_cache_experiment_rejects_unknown_policies(tmp_path: Path) -> None:
    result = CliRunner().invoke(command, ["cache", "--out", str(tmp_path), "--policies", "mru"])
    assert result.exit_code == 2
    assert "unknown policies" in result.output


def test_sync_vs_async_writes_table_and_plots(tmp_path: Path) -> None:
    out = tmp_path / "sva"
    output = invoke(
        "sync-vs-async",
        "--out",
        str(out),
        "--requests",
        "20",
        "--questions",
        "100",
        "--rates",
        "10",
        "--time-factor",
        "0.01",
        "--quota-rate",
        "0",
    )
    assert "| questions lost to LLM errors |" in output
    for name in ("sync_vs_async.md", "sync_vs_async.html", "sync_vs_async_10.png"):
        assert (out / name).stat().st_size > 0, name
