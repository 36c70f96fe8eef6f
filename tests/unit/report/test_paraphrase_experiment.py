"""Calibrating the paraphrase cache on the Yahoo! Answers questions (skipped without the shared
data): the chosen threshold keeps every hard family's false-hit rate within the target, the
rewording helpers do what they say, and the extra hit rate is positive with few false hits."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from qaloop.core.paraphrase import signature, similarity
from qaloop.report.paraphrase_experiment import (
    FAMILIES,
    calibrate,
    change_number,
    hit_rates,
    load_titles,
    negate,
    reword,
    swap_roles,
)

DATA = Path(
    os.environ.get(
        "QALOOP_SHARED_DATA", Path(__file__).resolve().parents[3] / ".." / "shared" / "data"
    )
)
YAHOO = DATA / "yahoo_answers.csv"


def test_edits() -> None:
    assert negate("Why is the sky blue?") == "Why is not the sky blue?"
    assert negate("Sky colour?") is None
    swapped = swap_roles("Does a cat chase a dog?")
    assert swapped == "Does a dog chase a cat?"
    assert change_number("Best song of 1994?") == "Best song of 1995?"
    assert negate("Why can't I sleep?") is None  # "can't" is negated already: no "can not't"
    rng = random.Random(3)
    for q in ["Why is the sky blue?", "What is the capital of France?"]:
        reworded = reword(q, rng)
        assert reworded != q and similarity(signature(q), signature(reworded)) > 0


@pytest.mark.skipif(not YAHOO.is_file(), reason=f"shared data not found at {YAHOO}")
def test_calibration_on_the_yahoo_questions() -> None:
    questions = load_titles(YAHOO, 600)
    assert len(questions) == 600
    cal = calibrate(questions, seed=1, target_fhr=0.01)
    t = cal.threshold
    assert all(cal.fhr[f][t] <= 0.01 for f in FAMILIES)
    assert cal.fhr["negated"][t] == 0.0 and cal.fhr["swapped"][t] == 0.0
    assert cal.recall[t] > 0.8
    assert cal.counts["neighbour"] > 400  # real hard negatives, not a handful
    rates = hit_rates(questions, t, requests=4000, seed=1)
    assert rates.extra > 0.02
    assert rates.false_hits < 0.005


@pytest.mark.skipif(not YAHOO.is_file(), reason=f"shared data not found at {YAHOO}")
def test_experiment_cache_reports_the_paraphrase_rates(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the experiments need the `report` extra")
    from click.testing import CliRunner

    from qaloop.cli.experiment import command

    args = ["cache", "--out", str(tmp_path), "--requests", "500", "--keys", "50",
            "--sizes", "10", "--ttls", "0", "--ttl-size", "10",
            "--paraphrase-data", str(YAHOO), "--paraphrase-questions", "300"]  # fmt: skip
    result = CliRunner().invoke(command, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "Paraphrase cache: calibrated threshold" in result.output
    assert "false-hit rates neighbour" in result.output and "points)" in result.output
    report = (tmp_path / "cache_hit_rates.md").read_text(encoding="utf-8")
    assert "## Paraphrase cache" in report and "(chosen)" in report
