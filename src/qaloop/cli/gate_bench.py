"""`qaloop gate-bench`: real answers vs seeded adversarial families, for every scorer and for
the gate as configured (tables, CSV, PNG plots). Families: qaloop.quality.gate_bench."""

from __future__ import annotations

import csv
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
import orjson

from qaloop.cli import calibrate_output as shared
from qaloop.cli.common import build_settings
from qaloop.quality.base import Scorer
from qaloop.quality.gate import DefaultGate, GateSpec, build_gate
from qaloop.quality.gate_bench import (
    CALIBRATION,
    FAMILIES,
    GRADED_BAD,
    HELD_OUT,
    REAL,
    Benchmark,
    Case,
    FamilyRow,
    build_benchmark,
    choose_band,
    family_rows,
    fit_relevance,
    threshold_for_real,
)
from qaloop.quality.verdict import Outcome, Verdict

DEFAULT_SCORERS = (
    "jaccard",
    "token_f1",
    "rouge_l",
    "chrf",
    "keyword_recall",
    "multi_metric",
    "composite",
    "embedding",
    "composite_embedding",
)
NEAR_DUPLICATE = 0.75
KEEP_REAL = 0.90  # each scorer alone is shown at the threshold keeping 90 % of real answers


def _pct(x: float) -> str:
    return shared.pct(x, missing="–")


def embedding_most_similar(scorer: Scorer | None) -> Any:
    """Most similar other question by MiniLM cosine; near-duplicates (cosine >= 0.75: from
    there on the recorded questions are the same question reworded, docs/quality.md) are
    skipped. None without the embedding model."""
    model = getattr(scorer, "model", None)
    if model is None:
        return None

    def nearest(questions: Sequence[str]) -> list[int]:
        import numpy as np

        vectors = model.encode(list(questions))
        sims = vectors @ vectors.T
        np.fill_diagonal(sims, -1.0)
        sims[sims >= NEAR_DUPLICATE] = -1.0
        return [int(j) if sims[i, j] > -1.0 else -1 for i, j in enumerate(sims.argmax(axis=1))]

    return nearest


# ----------------------------------------------------------------------------- plots


def write_plots(
    bench: Benchmark,
    gate_rows: list[FamilyRow],
    scorer_rows: dict[str, list[FamilyRow]],
    gate_scores: list[float | None],
    reached: list[bool],
    band: tuple[float, float],
    out: Path,
) -> list[str]:
    plt = shared.pyplot()
    files: list[str] = []
    families = [REAL, *FAMILIES]

    # 1. The gate per family: PASS (and UNSURE) share, calibration vs held out.
    fig, ax = plt.subplots(figsize=(11, 4.5), dpi=110)
    width = 0.38
    for k, split in enumerate((CALIBRATION, HELD_OUT)):
        cells = {r.family: r for r in gate_rows if r.split == split}
        xs = [i + (k - 0.5) * width for i in range(len(families))]
        passed = [100 * cells[f].passed if f in cells else 0 for f in families]
        unsure = [100 * cells[f].unsure if f in cells else 0 for f in families]
        ax.bar(xs, passed, width, label=f"PASS ({split})", color=("C0", "C1")[k])
        ax.bar(
            xs,
            unsure,
            width,
            bottom=passed,
            color=("C0", "C1")[k],
            alpha=0.3,
            label=f"UNSURE ({split})",
        )
    ax.axhline(90, color="green", linestyle="--", linewidth=0.8, label="90 % (real answers)")
    ax.axhline(5, color="red", linestyle="--", linewidth=0.8, label="5 % (false accepts)")
    ax.set_xticks(range(len(families)))
    ax.set_xticklabels(families, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("answers validated (%)")
    ax.set_title("Default gate: real answers validated vs adversarial answers false-accepted")
    ax.legend(fontsize=7, ncol=3)
    files.append(shared.save(fig, out, "gate_families.png"))

    # 2. Every scorer alone at the threshold keeping 90 % of real answers: false accepts.
    names = list(scorer_rows)
    if names:
        fams = list(FAMILIES)
        grid = []
        for name in names:
            cells = {r.family: r for r in scorer_rows[name] if r.split == HELD_OUT}
            grid.append([100 * cells[f].passed if f in cells else math.nan for f in fams])
        fig, ax = plt.subplots(figsize=(11, 0.45 * len(names) + 2), dpi=110)
        im = ax.imshow(grid, cmap="Reds", vmin=0, vmax=100, aspect="auto")
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                if not math.isnan(v):
                    ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(fams)))
        ax.set_xticklabels(fams, rotation=30, ha="right", fontsize=8)
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels(names, fontsize=8)
        ax.set_title(
            "Each scorer alone, at the threshold keeping 90 % of real answers: "
            "false accepts (%, held out)",
            fontsize=9,
        )
        fig.colorbar(im, ax=ax, label="false accepts (%)")
        files.append(shared.save(fig, out, "scorers_false_accepts.png"))

    # 3. The gate's score on the cases only the score decides, with the band.
    cases = bench.cases
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=110)
    bins = [i / 40 for i in range(41)]
    for family in (
        REAL,
        "off_topic_random",
        "off_topic_similar",
        "truncated",
        "contradiction_polarity",
        "non_answer",
        "echo",
    ):
        values = [
            gate_scores[i] or 0.0 for i, c in enumerate(cases) if c.family == family and reached[i]
        ]
        if len(values) >= 5:
            ax.hist(
                values,
                bins=bins,
                weights=shared.shares(values),
                histtype="step",
                linewidth=1.4,
                label=f"{family} (n={len(values)})",
            )
    ax.axvline(band[0], color="green", linestyle="--", label=f"pass >= {band[0]:.2f}")
    ax.axvline(band[1], color="red", linestyle="--", label=f"fail < {band[1]:.2f}")
    ax.set_xlabel("relevance score (0–1)")
    ax.set_ylabel("share of the family's scored cases (%)")
    ax.set_title("Gate score of the answers that passed every check (both splits)")
    ax.legend(fontsize=7)
    files.append(shared.save(fig, out, "gate_scores.png"))

    # 4. Sweep of the pass threshold: real answers kept vs the worst family.
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=110)
    ts = [i / 100 for i in range(0, 71)]
    for split, style in ((CALIBRATION, "-"), (HELD_OUT, ":")):
        idx = [i for i, c in enumerate(cases) if c.split == split]
        real = [i for i in idx if cases[i].family == REAL]
        fam_idx: dict[str, list[int]] = {}
        for i in idx:
            if cases[i].family in FAMILIES:
                fam_idx.setdefault(cases[i].family, []).append(i)

        def passing(group: list[int], t: float) -> float:
            return (
                100
                * sum(1 for i in group if reached[i] and (gate_scores[i] or 0) >= t)
                / max(1, len(group))
            )

        ax.plot(
            ts,
            [passing(real, t) for t in ts],
            style,
            color="C2",
            label=f"real answers validated ({split})",
        )
        ax.plot(
            ts,
            [max(passing(g, t) for g in fam_idx.values()) for t in ts],
            style,
            color="C3",
            label=f"worst family's false accepts ({split})",
        )
    ax.axvline(band[0], color="black", linewidth=0.8, label=f"configured pass {band[0]:.2f}")
    ax.axhline(90, color="green", linewidth=0.5)
    ax.axhline(5, color="red", linewidth=0.5)
    ax.set_xlabel("pass threshold on the relevance score")
    ax.set_ylabel("%")
    ax.set_title("Choosing the pass threshold (checks on, calibration vs held out)")
    ax.legend(fontsize=7)
    files.append(shared.save(fig, out, "gate_sweep.png"))
    return files


# ----------------------------------------------------------------------------- report


def _table(rows: list[FamilyRow], unsure: bool) -> list[str]:
    cells = {(r.family, r.split): r for r in rows}
    head = "| family | n (cal / held out) | PASS calibration | PASS held out |"
    sep = "|---|---|---|---|"
    if unsure:
        head += " UNSURE held out |"
        sep += "---|"
    lines = [head, sep]
    for family in (REAL, *FAMILIES, GRADED_BAD):
        cal, held = cells.get((family, CALIBRATION)), cells.get((family, HELD_OUT))
        if cal is None and held is None:
            continue
        line = (
            f"| {family} | {cal.n if cal else 0} / {held.n if held else 0} | "
            f"{_pct(cal.passed) if cal else '–'} | {_pct(held.passed) if held else '–'} |"
        )
        if unsure:
            line += f" {_pct(held.unsure) if held else '–'} |"
        lines.append(line)
    return lines


def render(
    source: str,
    bench: Benchmark,
    gate_name: str,
    spec_text: str,
    gate_rows: list[FamilyRow],
    scorer_rows: dict[str, list[FamilyRow]],
    thresholds: dict[str, float],
    reasons: dict[str, Counter[str]],
    band: tuple[float, float],
    seconds: dict[str, float],
    plots: list[str],
    notes: list[str],
    fitted: dict[str, Any] | None = None,
) -> str:
    counts = Counter(c.family for c in bench.cases)
    lines = [
        "# Gate benchmark",
        "",
        f"Input: `{source}`; seed {bench.seed}; {counts[REAL]} real answers "
        f"({bench.real_rows} rows: same language for question, answer and reference, minus "
        f"{counts[GRADED_BAD]} answers the recording's LLM judge graded <= 5/10). "
        "Families are built from the real rows by seeded code (qaloop.quality.gate_bench); "
        "each case belongs to the split of its question (calibration or held out).",
        *notes,
        "",
        f"## The gate as configured: `{gate_name}` ({spec_text})",
        "",
        "PASS = validated. For `real` higher is better (target >= 90 %); for every other family "
        "it is the false-accept rate (target <= 5 %). UNSURE goes to the cascade's LLM judge.",
        "",
        *_table(gate_rows, unsure=True),
        "",
        f"Band suggested from the calibration split (every family <= 3 % false accepts, <= 2 % "
        f"of real answers failed by the score): pass >= {band[0]:.2f}, unsure >= {band[1]:.2f}.",
        "",
    ]
    if fitted:
        lines += [
            "## Refit on the calibration split (`--fit`)",
            "",
            f"Logistic-regression weights (w0, then RELEVANCE_FEATURES): "
            f"`{fitted['relevance']}`; band chosen on the calibration split (every family <= 5 %"
            f" false accepts): pass >= {fitted['pass_threshold']:.2f}, unsure >= "
            f"{fitted['unsure_threshold']:.2f}. The held-out column is the honest number.",
            "",
            *_table(fitted["rows"], unsure=True),
            "",
        ]
    for plot in plots:
        lines += [f"![{plot}]({plot})", ""]
    lines += [
        "## What decided (the gate's reasons per family, both splits)",
        "",
        "| family | reasons |",
        "|---|---|",
    ]
    for family, counter in reasons.items():
        total = sum(counter.values())
        text = ", ".join(f"{k} {100 * v / total:.1f} %" for k, v in counter.most_common())
        lines.append(f"| {family} | {text} |")
    lines += [
        "",
        f"## Each scorer alone (threshold keeping {100 * KEEP_REAL:.0f} % of the calibration "
        "real answers)",
        "",
    ]
    fams = [REAL, *FAMILIES]
    lines.append("| scorer | threshold | " + " | ".join(fams) + " | seconds |")
    lines.append("|---|---|" + "---|" * (len(fams) + 1))
    for name, rows in scorer_rows.items():
        cells = {r.family: r for r in rows if r.split == HELD_OUT}
        vals = " | ".join(_pct(cells[f].passed) if f in cells else "–" for f in fams)
        lines.append(f"| {name} | {thresholds[name]:.2f} | {vals} | {seconds[name]:.1f} |")
    lines += ["", "(held-out split; PASS rate per family)", ""]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- command


@click.command("gate-bench")
@shared.answers_option(
    "JSONL of recorded answers (question, llm_answer, original_answer, source, score)."
)
@shared.out_option(
    "Directory for report.md, families.csv, verdicts.csv, results.json and the plots."
)
@shared.scorers_option(f"Comma-separated scorers (default: {','.join(DEFAULT_SCORERS)}).")
@shared.seed_option("Seed of the families.")
@click.option(
    "--limit",
    type=click.IntRange(min=10),
    default=None,
    help="Use only the first N rows of the file (a quick run).",
)
@shared.no_plots_option()
@click.option(
    "--fit",
    is_flag=True,
    help="Also refit the relevance weights and the band on the calibration split and report "
    "that gate on both splits (how the defaults were made).",
)
def command(
    answers: Path,
    out_dir: Path,
    scorer_list: str | None,
    seed: int,
    limit: int | None,
    no_plots: bool,
    fit: bool,
) -> None:
    """Real answers vs seeded adversarial families, for every scorer and the default gate.

    Pass rate of real answers and false-accept rate of each family, per calibration / held-out
    half; the gate is the one configured (QALOOP_SCORER, QALOOP_THRESHOLD, QALOOP_GATE_*)."""
    from qaloop.gate_config import gate_spec_from_settings

    names = shared.scorer_list_or_fail(scorer_list, DEFAULT_SCORERS)
    pairs, _ = shared.pairs_or_fail(answers)
    if limit is not None:
        pairs = pairs[:limit]
    try:
        spec = gate_spec_from_settings(build_settings())
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    loaded, _ = shared.load_scorers(list(dict.fromkeys([*names, spec.scorer])))
    scorers = shared.share_parts(loaded)  # chrF alone and inside composite_embedding: once
    if spec.scorer not in scorers:
        raise click.ClickException(f"the gate's scorer {spec.scorer!r} could not be loaded")
    shared.enable_text_cache(list(scorers.values()), 20 * len(pairs))
    notes: list[str] = []
    nearest = embedding_most_similar(scorers.get("embedding") or scorers[spec.scorer])
    if nearest is None:
        notes.append("No embedding model: the off_topic_similar family is left out.")
    started = time.perf_counter()
    bench = build_benchmark(pairs, seed=seed, most_similar=nearest)
    click.echo(f"{len(bench.cases)} cases built in {time.perf_counter() - started:.1f} s", err=True)
    cases = bench.cases
    items = [c.item for c in cases]

    gate = build_gate(spec, scorers[spec.scorer])
    started = time.perf_counter()
    verdicts: list[Verdict] = gate.judge_batch(items)
    gate_seconds = time.perf_counter() - started
    click.echo(f"  gate: {gate_seconds:.1f} s", err=True)
    gate_rows = family_rows(
        gate.name,
        cases,
        [v.outcome is Outcome.PASS for v in verdicts],
        [v.outcome is Outcome.UNSURE for v in verdicts],
    )
    gate_scores = [v.score for v in verdicts]
    reached = [v.score is not None for v in verdicts]
    band = choose_band(gate_scores, cases, reached)
    fitted = refit(gate, spec, scorers[spec.scorer], cases, reached, verdicts) if fit else {}
    reasons: dict[str, Counter[str]] = {}
    for c, v in zip(cases, verdicts, strict=True):
        reasons.setdefault(c.family, Counter())[f"{v.outcome.value}/{v.reason.value}"] += 1

    scorer_rows: dict[str, list[FamilyRow]] = {}
    thresholds: dict[str, float] = {}
    seconds: dict[str, float] = {"gate": gate_seconds}
    for name in names:
        if name not in scorers:
            continue
        started = time.perf_counter()
        scores = scorers[name].score_batch([(c.item.answer, c.item.reference or "") for c in cases])
        seconds[name] = time.perf_counter() - started
        click.echo(f"  {name}: {seconds[name]:.1f} s", err=True)
        t = threshold_for_real(scores, cases, KEEP_REAL)
        thresholds[name] = t
        scorer_rows[name] = family_rows(name, cases, [s >= t for s in scores])

    out_dir.mkdir(parents=True, exist_ok=True)
    plots: list[str] = []
    if not no_plots:
        plots = shared.plots_or_fail(
            lambda: write_plots(
                bench,
                gate_rows,
                scorer_rows,
                gate_scores,
                reached,
                (spec.pass_threshold, spec.unsure_threshold),
                out_dir,
            )
        )
    spec_text = (
        f"scorer {spec.scorer}, pass >= {spec.pass_threshold}, unsure >= {spec.unsure_threshold}"
    )
    (out_dir / "report.md").write_text(
        render(
            answers.name,
            bench,
            gate.name,
            spec_text,
            gate_rows,
            scorer_rows,
            thresholds,
            reasons,
            band,
            seconds,
            plots,
            notes,
            fitted,
        )
    )
    with (out_dir / "families.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["judge", "threshold", "family", "split", "n", "pass", "unsure"])
        for r in gate_rows:
            writer.writerow(
                [
                    r.judge,
                    spec.pass_threshold,
                    r.family,
                    r.split,
                    r.n,
                    f"{r.passed:.4f}",
                    f"{r.unsure:.4f}",
                ]
            )
        for name, rows in scorer_rows.items():
            for r in rows:
                writer.writerow(
                    [name, thresholds[name], r.family, r.split, r.n, f"{r.passed:.4f}", ""]
                )
    with (out_dir / "verdicts.csv").open("w", newline="") as fh:  # no text: numbers only
        writer = csv.writer(fh)
        writer.writerow(["case", "family", "variant", "split", "outcome", "reason", "score"])
        for i, (c, v) in enumerate(zip(cases, verdicts, strict=True)):
            writer.writerow(
                [
                    i,
                    c.family,
                    c.variant,
                    c.split,
                    v.outcome.value,
                    v.reason.value,
                    "" if v.score is None else f"{v.score:.4f}",
                ]
            )
    summary = {
        "seed": seed,
        "cases": dict(Counter(c.family for c in cases)),
        "gate": {
            "name": gate.name,
            "spec": spec_text,
            "suggested_band": band,
            "rows": [_row(r) for r in gate_rows],
        },
        "scorers": {
            n: {"threshold": thresholds[n], "rows": [_row(r) for r in rows]}
            for n, rows in scorer_rows.items()
        },
        "refit": {k: ([_row(r) for r in v] if k == "rows" else v) for k, v in fitted.items()},
        "seconds": seconds,
        "pairs_per_s_gate": len(cases) / gate_seconds if gate_seconds else None,
    }
    (out_dir / "results.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    worst = max(
        (r.passed for r in gate_rows if r.split == HELD_OUT and r.family in FAMILIES),
        default=math.nan,
    )
    real = next((r.passed for r in gate_rows if r.split == HELD_OUT and r.family == REAL), math.nan)
    click.echo(
        f"wrote {out_dir / 'report.md'}; held out: real answers validated {_pct(real)}, "
        f"worst family false accepts {_pct(worst)}"
    )


def refit(
    gate: DefaultGate,
    spec: GateSpec,
    scorer: Scorer,
    cases: Sequence[Case],
    reached: Sequence[bool],
    verdicts: Sequence[Verdict],
) -> dict[str, Any]:
    """Refit the relevance weights and choose the band on the calibration split; the refit
    gate's verdicts on both splits (checks unchanged: only the score-decided cases move)."""
    if gate.model is None:
        return {}
    idx = [i for i, ok in enumerate(reached) if ok]
    feats = gate.relevance_features([cases[i].item for i in idx])
    full: list[list[float]] = [[] for _ in cases]
    for i, f in zip(idx, feats, strict=True):
        full[i] = f
    weights = fit_relevance(full, cases, reached)
    scores: list[float | None] = [None] * len(cases)
    refit_gate = build_gate(replace(spec, relevance=weights), scorer)
    for i, score in zip(idx, refit_gate.relevance([cases[i].item for i in idx]), strict=True):
        scores[i] = score
    pass_t, unsure_t = choose_band(scores, cases, reached, max_false_accept=0.05)
    banded = build_gate(
        replace(spec, relevance=weights, pass_threshold=pass_t, unsure_threshold=unsure_t),
        scorer,
    )
    moved = [
        banded.decide(score) if score is not None else v
        for score, v in zip(scores, verdicts, strict=True)
    ]
    click.echo(f"  refit: relevance={weights}, pass {pass_t}, unsure {unsure_t}", err=True)
    return {
        "relevance": weights,
        "pass_threshold": pass_t,
        "unsure_threshold": unsure_t,
        "rows": family_rows(
            "refit",
            cases,
            [v.outcome is Outcome.PASS for v in moved],
            [v.outcome is Outcome.UNSURE for v in moved],
        ),
    }


def _row(r: FamilyRow) -> dict[str, Any]:
    return {"family": r.family, "split": r.split, "n": r.n, "pass": r.passed, "unsure": r.unsure}
