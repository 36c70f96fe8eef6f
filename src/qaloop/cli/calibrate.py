"""`qaloop calibrate`: score recorded answers with every scorer and write the evidence for a
threshold (markdown report, PNG plots, numbers as JSON). Method: qaloop.quality.calibration."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import click
import orjson

from qaloop.cli.calibrate_output import (
    answers_option,
    build_scorers,
    enable_text_cache,
    load_scorers,
    no_plots_option,
    out_option,
    pairs_or_fail,
    pct,
    plots_or_fail,
    pyplot,
    save,
    scorer_list_or_fail,
    scorers_option,
    seed_option,
    share_parts,
    shares,
)
from qaloop.quality.calibration import CalibrationResult, Example, calibrate, summary_json
from qaloop.quality.registry import scorer_names

__all__ = ["build_scorers", "command", "default_scorers", "enable_text_cache", "render_markdown"]

log = logging.getLogger(__name__)

CORE_SCORERS = (
    "jaccard",
    "multi_metric",
    "token_f1",
    "rouge_l",
    "chrf",
    "keyword_recall",
    "composite",
)


def _num(x: float, digits: int = 3) -> str:
    return "n/a" if math.isnan(x) else f"{x:.{digits}f}"


def _snippet(text: str, limit: int = 160) -> str:
    flat = " ".join(text.replace("\\n", " ").split())
    flat = flat.replace("|", "/")
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


# ----------------------------------------------------------------------------- plots


def write_plots(result: CalibrationResult, out_dir: Path) -> dict[str, str]:
    """One histogram per scorer + a sweep plot; returns {key: file name}. Needs `report`."""
    plt = pyplot()
    files: dict[str, str] = {}
    bins = [i / 40 for i in range(41)]
    for name, r in result.scorers.items():
        fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
        same = [r.scores[i] for i in result.same_idx]
        cross = [r.scores[i] for i in result.cross_idx]

        ax.hist(
            same, bins=bins, weights=shares(same), alpha=0.6, label=f"same language (n={len(same)})"
        )
        if cross:
            ax.hist(
                cross,
                bins=bins,
                weights=shares(cross),
                alpha=0.5,
                label=f"cross-language (n={len(cross)})",
            )
        if r.shuffled:
            ax.hist(
                r.shuffled,
                weights=shares(r.shuffled),
                bins=bins,
                histtype="step",
                linewidth=1.5,
                color="black",
                label=f"shuffled references (n={len(r.shuffled)})",
            )
        ax.axvline(
            r.candidate,
            color="red",
            linestyle="--",
            label=f"threshold {r.candidate:.2f} (false pass {pct(r.candidate_row.false_pass)})",
        )
        ax.set_title(f"{name}: score distribution (AUC true vs shuffled {_num(r.auc)})")
        ax.set_xlabel("score (0–1, unitless)")
        ax.set_ylabel("share of the group's answers (%)")
        ax.set_xlim(0, 1)
        ax.legend(fontsize=8)
        files[name] = save(fig, out_dir, f"hist_{name}.png")

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4), dpi=110)
    for name, r in result.scorers.items():
        ts = [row.threshold for row in r.sweep]
        (line,) = ax1.plot(ts, [100 * row.pass_rate for row in r.sweep], label=name)
        ax1.plot(
            ts, [100 * row.false_pass for row in r.sweep], linestyle=":", color=line.get_color()
        )
        ax2.plot(ts, [row.cost.extra_calls for row in r.sweep], label=name, color=line.get_color())
        ax1.axvline(r.candidate, color=line.get_color(), linewidth=0.6, alpha=0.6)
    ax1.set_title("Pass rate (solid: true pairs, dotted: shuffled)")
    ax1.set_xlabel("threshold (score, 0–1)")
    ax1.set_ylabel("answers passing (%)")
    ax1.legend(fontsize=7)
    ax2.set_title(f"Expected extra LLM calls (independent attempts, max {result.max_attempts})")
    ax2.set_xlabel("threshold (score, 0–1)")
    ax2.set_ylabel("extra LLM calls per question (calls)")
    ax2.legend(fontsize=7)
    files["sweep"] = save(fig, out_dir, "sweep.png")
    return files


# ----------------------------------------------------------------------------- report


def render_markdown(result: CalibrationResult, plots: dict[str, str], source: str) -> str:
    n = len(result.pairs)
    lines: list[str] = [
        "# Scorer calibration",
        "",
        f"Input: `{source}`: {result.load.rows} rows, {n} pairs scored "
        f"({result.load.skipped} skipped, {result.load.repaired} repaired from CP437 mojibake).",
        f"Same-language pairs (the calibration set): {len(result.same_idx)}; cross-language: "
        f"{len(result.cross_idx)}; a language undetermined on one side: {len(result.und_idx)}.",
        f"Negative control: each same-language answer against another question's reference "
        f"from the same source (seeded derangement, seed {result.seed}). "
        f"Candidate threshold = smallest t with a false-pass rate <= "
        f"{pct(result.target_false_pass)} on that control. "
        f"Loop cost with max_attempts = {result.max_attempts}: independent attempts "
        f"(E[calls] = Σ_(k<m) (1-p)^k) and a correlated bound (extra = (1-p)(m-1)).",
        "",
        "Language pairs (answer/reference): "
        + ", ".join(f"{a}/{r} {c}" for (a, r), c in result.languages.most_common(8)),
        "",
        "## Summary",
        "",
        "| scorer | AUC true vs shuffled | mean true | mean shuffled | mean cross-lang | "
        "mean lang und. | candidate t | pass (true) | false pass | pass (cross-lang) | "
        "pass (lang und.) | extra calls/q (indep.; corr.) | given up (indep.; corr.) | time (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in result.scorers.items():
        row = r.candidate_row
        lines.append(
            f"| {name}{'' if name in CORE_SCORERS else ' (extra)'} | {_num(r.auc)} | "
            f"{_num(r.mean_same)} | {_num(r.mean_shuffled)} | "
            f"{_num(r.mean_cross)} | {_num(r.mean_und)} | {r.candidate:.2f} | "
            f"{pct(row.pass_rate)} | {pct(row.false_pass)} | {pct(row.pass_rate_cross)} | "
            f"{pct(row.pass_rate_und)} | "
            f"{row.cost.extra_calls:.3f}; {row.cost.extra_calls_correlated:.3f} | "
            f"{pct(row.cost.given_up)}; {pct(row.cost.given_up_correlated)} | "
            f"{r.seconds:.1f} |"
        )
    for name, why in result.skipped_scorers.items():
        lines.append(f"| {name} | skipped: {why} |" + " |" * 12)
    if "sweep" in plots:
        lines += ["", f"![threshold sweep]({plots['sweep']})"]

    names = list(result.scorers)
    lines += [
        "",
        "## Agreement between scorers (Spearman rank correlation, same-language pairs)",
        "",
        "| | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for a in names:
        cells = " | ".join(_num(result.spearman_same[(a, b)], 2) for b in names)
        lines.append(f"| {a} | {cells} |")

    recorded_sources = sorted({s for r in result.scorers.values() for s in r.recorded_spearman})
    if recorded_sources:
        lines += [
            "",
            "## Agreement with the score recorded in the input (Spearman, same-language pairs)",
            "",
            "| scorer | " + " | ".join(f"`{s}`" for s in recorded_sources) + " |",
            "|---|" + "---|" * len(recorded_sources),
        ]
        for name, r in result.scorers.items():
            cells = " | ".join(
                _num(r.recorded_spearman.get(s, math.nan), 2) for s in recorded_sources
            )
            lines.append(f"| {name} | {cells} |")

    for name, r in result.scorers.items():
        lines += [
            "",
            f"## {name}",
            "",
        ]
        if name in plots:
            lines += [f"![{name} histogram]({plots[name]})", ""]
        lines += [
            "| threshold | pass (true, same-lang) | false pass (shuffled) | pass (cross-lang) | "
            "pass (lang und.) | pass (all) | E[calls]/q | extra calls/q (corr.) | "
            "given up (indep.; corr.) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for row in r.sweep:
            mark = " **(candidate)**" if row.threshold == r.candidate else ""
            lines.append(
                f"| {row.threshold:.2f}{mark} | {pct(row.pass_rate)} | {pct(row.false_pass)} | "
                f"{pct(row.pass_rate_cross)} | {pct(row.pass_rate_und)} | "
                f"{pct(row.pass_rate_all)} | "
                f"{row.cost.calls:.3f} | {row.cost.extra_calls_correlated:.3f} | "
                f"{pct(row.cost.given_up)}; {pct(row.cost.given_up_correlated)} |"
            )
        lines += ["", f"Examples at the candidate threshold {r.candidate:.2f}:", ""]
        lines += _examples("just above (pass)", r.above)
        lines += _examples("just below (regenerate)", r.below)
    return "\n".join(lines) + "\n"


def _examples(title: str, examples: Sequence[Example]) -> list[str]:
    out = [f"*{title}*", ""]
    for ex in examples:
        out.append(
            f"- score {ex.score:.3f}: Q: {_snippet(ex.question, 100)} — "
            f"A: {_snippet(ex.answer)} — Ref: {_snippet(ex.reference)}"
        )
    if not examples:
        out.append("- (none)")
    out.append("")
    return out


def write_scores_csv(result: CalibrationResult, path: Path) -> None:
    """Every pair's scores, without any text (row = input order of the scored pairs)."""
    import csv

    names = list(result.scorers)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["row", "group", "source", "answer_lang", "reference_lang", *names])
        for i, p in enumerate(result.pairs):
            writer.writerow(
                [i, p.group, p.source, p.answer_lang, p.reference_lang]
                + [f"{result.scorers[n].scores[i]:.6f}" for n in names]
            )


# ----------------------------------------------------------------------------- command


# Left out of the default run: a second model that encodes every text again, for a variant
# whose agreement with fp32 bench/bench_scorers.py measures (docs/quality.md, "int8").
SLOW_VARIANTS = ("embedding_int8",)


def default_scorers() -> list[str]:
    return [n for n in scorer_names() if n not in SLOW_VARIANTS]


@click.command("calibrate")
@answers_option(
    "JSONL of recorded answers: llm_answer|answer, original_answer|reference, "
    "[question], [source], [score]."
)
@out_option("Directory for report.md, results.json, scores.csv and the PNG plots.")
@scorers_option(
    "Comma-separated scorer names (default: all but "
    f"{', '.join(SLOW_VARIANTS)}). Known: {', '.join(scorer_names())}."
)
@click.option(
    "--max-attempts",
    type=click.IntRange(1, 20),
    default=3,
    show_default=True,
    help="Generation attempts assumed for the loop cost.",
)
@click.option(
    "--target-false-pass",
    type=click.FloatRange(0, 1),
    default=0.05,
    show_default=True,
    help="False-pass rate on shuffled pairs for the candidate.",
)
@seed_option("Seed of the shuffle.")
@click.option("--no-repair", is_flag=True, help="Don't undo CP437 mojibake in the input.")
@no_plots_option()
def command(
    answers: Path,
    out_dir: Path,
    scorer_list: str | None,
    max_attempts: int,
    target_false_pass: float,
    seed: int,
    no_repair: bool,
    no_plots: bool,
) -> None:
    """Score recorded answers with every scorer and report distributions, a threshold sweep
    with the feedback-loop cost, scorer agreement, the cross-language subset and boundary
    examples."""
    names = scorer_list_or_fail(scorer_list, default_scorers())
    pairs, load = pairs_or_fail(answers, repair=not no_repair)
    scorers, skipped = load_scorers(names)
    if not scorers:
        raise click.ClickException("no scorer could be loaded")
    scorers = share_parts(scorers)
    enable_text_cache(list(scorers.values()), 4 * len(pairs))
    click.echo(f"{len(pairs)} pairs; scoring with {', '.join(scorers)}", err=True)
    result = calibrate(
        pairs,
        load,
        scorers,
        max_attempts=max_attempts,
        target_false_pass=target_false_pass,
        seed=seed,
        skipped_scorers=skipped,
        progress=lambda name, s: click.echo(f"  {name}: {s:.1f} s", err=True),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    plots: dict[str, str] = {}
    if not no_plots:
        plots = plots_or_fail(lambda: write_plots(result, out_dir))
    (out_dir / "report.md").write_text(render_markdown(result, plots, answers.name))
    write_scores_csv(result, out_dir / "scores.csv")
    (out_dir / "results.json").write_bytes(
        orjson.dumps(summary_json(result), option=orjson.OPT_INDENT_2)
    )
    best = max(result.scorers.values(), key=lambda r: -1 if math.isnan(r.auc) else r.auc)
    click.echo(
        f"wrote {out_dir / 'report.md'}; highest AUC: {best.name} {_num(best.auc)} "
        f"(candidate threshold {best.candidate:.2f}, pass {pct(best.candidate_row.pass_rate)})"
    )
