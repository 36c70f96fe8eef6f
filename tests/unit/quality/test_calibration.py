"""Calibration numbers on a small synthetic file whose Jaccard scores are known by hand.

data/calibration_small.jsonl (synthetic, written for this test):
  1 en/en  jaccard 1          ("the cat is on the mat" both sides)
  2 en/en  jaccard 4/6        (house vs garden)
  3 en/en  jaccard 4/10       (you should drink ... every)
  4 en/en  jaccard 1/15       (only "is" shared)
  5 es/en  jaccard 0          (cross-language)
  6 es/en  jaccard 0          (cross-language)
  7 es/es  jaccard 5/8        (answer stored as CP437 mojibake: repaired on load)
  8 no reference             (skipped)
  9 und/en jaccard 1/3        ("Yes." is too short to tell its language)
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
from click.testing import CliRunner

from qaloop.cli.calibrate import command, render_markdown
from qaloop.quality import get_scorer
from qaloop.quality.calibration import (
    CalibrationInputError,
    auc,
    calibrate,
    derangement,
    load_pairs,
    loop_cost,
    pass_rate,
    quantile,
    ranks,
    repair_mojibake,
    spearman,
    stratified_derangement,
    threshold_for_false_pass,
)

SMALL = Path(__file__).parent / "data" / "calibration_small.jsonl"
SAME = [1.0, 4 / 6, 4 / 10, 1 / 15, 5 / 8]


def test_load_groups_repairs_and_skips() -> None:
    pairs, stats = load_pairs(SMALL)
    assert (stats.rows, stats.skipped, stats.repaired) == (9, 1, 1)
    assert [p.group for p in pairs] == ["same"] * 4 + ["cross"] * 2 + ["same", "undetermined"]
    assert pairs[6].answer == "La canción es muy bonita y la letra también"
    assert pairs[0].recorded_score == 0.9 and pairs[4].recorded_score is None
    assert pairs[0].source == "synthetic"


def test_load_rejects_bad_input(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"llm_answer": "a", "original_answer": "b"}\nnot json\n')
    with pytest.raises(CalibrationInputError, match=r"bad\.jsonl:2: invalid JSON"):
        load_pairs(bad)
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"question": "q"}\n')
    with pytest.raises(CalibrationInputError, match="no \\(answer, reference\\) pairs"):
        load_pairs(empty)


def test_statistics_known_values() -> None:
    assert ranks([10, 20, 20, 30]) == [1.0, 2.5, 2.5, 4.0]
    # rho = 1 - 6 * sum(d^2) / (n (n^2 - 1)) = 1 - 6 * 2 / 60 = 0.8
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    assert auc([0.9, 0.8], [0.1, 0.2]) == 1.0
    assert auc([0.5], [0.5]) == 0.5
    assert auc([0.1, 0.9], [0.5, 0.5]) == 0.5
    assert pass_rate([0.1, 0.5, 0.7], 0.5) == pytest.approx(2 / 3)
    assert quantile([0, 1, 2, 3, 4], 0.5) == 2
    # <= 1 of 4 may pass: from 0.21 only 0.3 does; with target 0 nothing may pass: 0.31.
    assert threshold_for_false_pass([0.0, 0.1, 0.2, 0.3], 0.25) == pytest.approx(0.21)
    assert threshold_for_false_pass([0.0, 0.1, 0.2, 0.3], 0.0) == pytest.approx(0.31)
    assert repair_mojibake("canci├│n") == ("canción", True)
    assert repair_mojibake("plain") == ("plain", False)


def test_loop_cost_model() -> None:
    cost = loop_cost(0.5, 3)
    assert cost.calls == pytest.approx(1 + 0.5 + 0.25)
    assert cost.extra_calls == pytest.approx(0.75)
    assert cost.given_up == pytest.approx(0.125)
    assert cost.extra_calls_correlated == pytest.approx(1.0)
    assert cost.given_up_correlated == pytest.approx(0.5)
    assert loop_cost(1.0, 3).extra_calls == 0.0
    assert loop_cost(0.0, 3).calls == 3.0


def test_derangement_has_no_fixed_point() -> None:
    rng = random.Random(1)
    for n in (2, 3, 10, 100):
        perm = derangement(n, rng)
        assert sorted(perm) == list(range(n))
        assert all(i != j for i, j in enumerate(perm))


def test_stratified_derangement_stays_within_a_source() -> None:
    strata = ["a", "a", "a", "b", "b", "c", "d", "e"]
    mapping = stratified_derangement(strata, random.Random(3))
    assert all(i != j for i, j in mapping)
    assert sorted(i for i, _ in mapping) == list(range(8))
    assert sorted(j for _, j in mapping) == list(range(8))
    for i, j in mapping:
        if strata[i] in "ab":
            assert strata[i] == strata[j]
    # A lone singleton has no partner: left out.
    assert stratified_derangement(["a", "a", "b"], random.Random(0)) in ([(0, 1), (1, 0)],)


def test_calibration_numbers_on_the_small_file() -> None:
    pairs, stats = load_pairs(SMALL)
    result = calibrate(pairs, stats, {"jaccard": get_scorer("jaccard")}, max_attempts=3)
    assert (len(result.same_idx), len(result.cross_idx), len(result.und_idx)) == (5, 2, 1)
    r = result.scorers["jaccard"]
    assert [r.scores[i] for i in result.same_idx] == pytest.approx(SAME)
    assert r.mean_same == pytest.approx(sum(SAME) / 5)
    assert r.mean_cross == 0.0
    assert r.mean_und == pytest.approx(1 / 3)
    row = next(row for row in r.sweep if row.threshold == 0.5)
    assert row.pass_rate == pytest.approx(3 / 5)  # 1, 4/6, 5/8
    assert row.pass_rate_cross == 0.0
    assert row.pass_rate_und == 0.0
    assert row.pass_rate_all == pytest.approx(3 / 8)
    # p = 0.6: E[calls] = 1 + 0.4 + 0.16; given up 0.4^3; correlated: 0.4 * 2 and 0.4.
    assert row.cost.calls == pytest.approx(1.56)
    assert row.cost.given_up == pytest.approx(0.064)
    assert row.cost.extra_calls_correlated == pytest.approx(0.8)
    assert row.cost.given_up_correlated == pytest.approx(0.4)
    # Control: the 5 same-language answers are all of source "synthetic": 5 shuffled pairs.
    assert len(r.shuffled) == 5
    assert r.auc == pytest.approx(auc([r.scores[i] for i in result.same_idx], r.shuffled))
    assert 0 < row.false_pass < 1 or row.false_pass == 0
    # The candidate keeps the shuffled pairs' false-pass rate under the 5 % target.
    assert pass_rate(r.shuffled, r.candidate) <= 0.05
    # Boundary examples straddle the candidate.
    assert all(e.score >= r.candidate for e in r.above)
    assert all(e.score < r.candidate for e in r.below)
    # Recorded scores of source "synthetic" (4 same-language rows with a score): too few (<10).
    assert r.recorded_spearman == {}


def test_agreement_between_scorers() -> None:
    pairs, stats = load_pairs(SMALL)
    scorers = {"jaccard": get_scorer("jaccard"), "token_f1": get_scorer("token_f1")}
    result = calibrate(pairs, stats, scorers)
    assert result.spearman_same[("jaccard", "jaccard")] == 1.0
    jac = [result.scorers["jaccard"].scores[i] for i in result.same_idx]
    f1 = [result.scorers["token_f1"].scores[i] for i in result.same_idx]
    assert result.spearman_same[("jaccard", "token_f1")] == pytest.approx(spearman(jac, f1))
    text = render_markdown(result, {}, "calibration_small.jsonl")
    assert "| jaccard |" in text and "Spearman" in text and "(candidate)" in text


def test_cli_writes_report_json_and_plots(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="plots need the `report` extra (matplotlib)")
    out = tmp_path / "cal"
    result = CliRunner().invoke(
        command,
        ["--answers", str(SMALL), "--out", str(out), "--scorers", "jaccard,token_f1,chrf"],
    )
    assert result.exit_code == 0, result.output
    report = (out / "report.md").read_text()
    assert "# Scorer calibration" in report and "hist_jaccard.png" in report
    for png in ("hist_jaccard.png", "hist_token_f1.png", "hist_chrf.png", "sweep.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = (out / "scores.csv").read_text().splitlines()
    assert rows[0] == "row,group,source,answer_lang,reference_lang,jaccard,token_f1,chrf"
    assert rows[1].startswith("0,same,synthetic,en,en,1.000000,1.000000,1.000000")
    assert len(rows) == 9
    numbers = json.loads((out / "results.json").read_text())
    assert numbers["pairs"] == 8 and numbers["cross_language"] == 2
    sweep = {row["threshold"]: row for row in numbers["scorers"]["jaccard"]["sweep"]}
    assert sweep[0.5]["pass_rate_same_language"] == pytest.approx(0.6)
    assert sweep[0.5]["expected_calls"] == pytest.approx(1.56)


def test_cli_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(
        command, ["--answers", str(SMALL), "--out", str(tmp_path), "--scorers", "nope"]
    )
    assert res.exit_code != 0 and "unknown scorer" in res.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text("[1, 2]\n")
    res = runner.invoke(command, ["--answers", str(bad), "--out", str(tmp_path)])
    assert res.exit_code == 1 and "expected a JSON object" in res.output
    res = runner.invoke(
        command,
        [
            "--answers",
            str(SMALL),
            "--out",
            str(tmp_path / "x"),
            "--scorers",
            "jaccard",
            "--no-plots",
        ],
    )
    assert res.exit_code == 0 and (tmp_path / "x" / "report.md").exists()


def test_a_run_scores_each_pair_once_per_scorer() -> None:
    """calibrate scores chrF alone and inside composite_embedding: the run's memo is shared."""
    from qaloop.cli.calibrate_output import PairMemo, share_parts
    from qaloop.quality.scorers import CompositeScorer, JaccardScorer

    calls: list[int] = []

    class Counting(JaccardScorer):
        def score_batch(self, pairs):  # type: ignore[no-untyped-def]
            calls.append(len(pairs))
            return super().score_batch(pairs)

    composite = CompositeScorer({"jaccard": 1.0}, "combo", resolve=lambda _: Counting())
    scorers = share_parts({"jaccard": Counting(), "combo": composite})
    pairs = [("the cat sat", "a cat sat"), ("dogs bark", "cats purr"), ("the cat sat", "a cat sat")]
    alone = scorers["jaccard"].score_batch(pairs)
    inside = scorers["combo"].score_batch(pairs)
    assert alone == inside and calls == [2]  # two distinct pairs, scored once for both
    assert isinstance(composite.parts["jaccard"], PairMemo)
    assert scorers["combo"].score("dogs bark", "cats purr") == alone[1] and calls == [2]
