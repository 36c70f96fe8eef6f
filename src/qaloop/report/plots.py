"""PNG plots of the report's sections (matplotlib, Agg backend; the optional `report` extra).

Figures are built with the object API (`matplotlib.figure.Figure`), never pyplot's global
state, so plotting is safe in tests and threads. Every function writes one file and returns
its path; with no data it still writes the file, saying so on the canvas.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator

from qaloop.report import tables as T

COLORS = {"hit": "#2a9d8f", "queued": "#e76f51", "error": "#6c757d"}
PALETTE = ["#264653", "#2a9d8f", "#e9c46a", "#f4a261", "#e76f51", "#8d99ae", "#6a4c93"]
DPI = 110


def new_figure(width: float = 8.0, height: float = 4.8) -> Figure:
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def no_data(ax: Any, message: str = "no data") -> None:
    ax.text(
        0.5,
        0.5,
        message,
        ha="center",
        va="center",
        transform=ax.transAxes,
        fontsize=12,
        color="#6c757d",
    )
    ax.set_xticks([])
    ax.set_yticks([])


def log_seconds_axis(ax: Any, lo: float | None = None, hi: float | None = None) -> None:
    """A log x axis labelled 0.01, 0.1, 1, 10 (not 10^-2): 1-2-5 ticks over up to three
    decades, only powers of ten over more (1-2-5 labels would overlap there)."""
    ax.set_xscale("log")
    if lo is None or hi is None:
        lo, hi = ax.get_xlim()
    decades = math.log10(max(hi, 1e-9) / max(lo, 1e-9))
    subs = (1.0, 2.0, 5.0) if decades <= 3 else (1.0,)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))


def ecdf(values: Sequence[float]) -> tuple[list[float], list[float]]:
    xs = sorted(values)
    n = len(xs)
    return xs, [(i + 1) / n for i in range(n)]


def latency_cdf(latency: T.Latency, path: Path, server: T.Latency | None = None) -> Path:
    """CDFs of `latency` (solid); `server`, when given, drawn dashed over it, so the gap
    between what the client saw and what the server measured is visible."""
    fig = new_figure()
    ax = fig.subplots()
    drawn = False
    curves = [(kind, values, "-", latency.side) for kind, values in latency.samples.items()]
    if server is not None:
        curves += [(kind, values, "--", server.side) for kind, values in server.samples.items()]
    for i, (kind, values, style, side) in enumerate(curves):
        if not values:
            continue
        xs, ys = ecdf([max(v, 1e-4) for v in values])
        p50 = T.percentile(values, 50) or 0.0
        color = COLORS.get(kind, PALETTE[i % len(PALETTE)])
        ax.step(
            xs,
            ys,
            where="post",
            color=color,
            ls=style,
            lw=2,
            label=f"{kind}, {side}-side (n={len(values)}, p50 {p50:.3g} s)",
        )
        drawn = True
    if not drawn:
        no_data(ax, "no finished questions")
    else:
        log_seconds_axis(ax)
        ax.set_ylim(0, 1.02)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
        ax.set_xlabel("time to an answer (s, log scale)")
        ax.set_ylabel("fraction answered within x")
    what = "client-side (traffic CSV)" if latency.side == "client" else "server-side (storage)"
    extra = "; dashed: server-side (storage)" if server is not None else ""
    ax.set_title(f"Time to an answer, CDF: {what}{extra}")
    return save(fig, path)


def throughput(series: dict[str, Sequence[float]], path: Path, source: str) -> Path:
    """`series`: label -> event times (s). Top: events per second over time, the first series
    a filled area and the others lines over it (equal rates no longer hide one another);
    bottom, for storage's accepted/finished pair: questions in flight (accepted - finished)."""
    pair = set(series) == {"accepted", "finished"}
    fig = new_figure(8.0, 6.0 if pair else 4.8)
    axes = fig.subplots(2, 1, sharex=True, height_ratios=[3, 2]) if pair else [fig.subplots()]
    ax = axes[0]
    starts = [min(v) for v in series.values() if v]
    if not starts:
        no_data(ax)
    else:
        t0 = min(starts)
        t1 = max(max(v) for v in series.values() if v)
        drawn = 0
        for i, (label, times) in enumerate(series.items()):
            if not times:
                continue
            xs, rates, width = T.throughput([t - t0 for t in times], span=(0.0, t1 - t0))
            color = COLORS.get(label, PALETTE[i % len(PALETTE)])
            text = f"{label} (n={len(times)})"
            if drawn == 0:
                ax.fill_between(
                    [*xs, xs[-1] + width],
                    [*rates, rates[-1]],
                    step="post",
                    color=color,
                    alpha=0.35,
                    lw=0,
                    label=text,
                )
            else:
                ax.plot(
                    [*xs, xs[-1] + width],
                    [*rates, rates[-1]],
                    drawstyle="steps-post",
                    lw=2,
                    color=color,
                    label=text,
                )
            drawn += 1
        ax.set_ylabel("per second")
        ax.set_ylim(bottom=0)
        ax.margins(y=0.15)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper right")
        if pair:
            events = sorted(
                [(t - t0, 1) for t in series["accepted"]]
                + [(t - t0, -1) for t in series["finished"]]
            )
            level, xs_f, ys_f = 0, [0.0], [0]
            for t, step in events:
                level += step
                xs_f.append(t)
                ys_f.append(level)
            axes[1].step(xs_f, ys_f, where="post", color="#264653", lw=1.5)
            axes[1].set_ylabel("in flight")
            axes[1].set_ylim(bottom=0)
            axes[1].grid(True, alpha=0.3)
            axes[1].yaxis.set_major_locator(MaxNLocator(integer=True))
        axes[-1].set_xlabel("time since the first request (s)")
    ax.set_title(f"Throughput over time\n({source})")
    return save(fig, path)


def retries(data: T.Retries, path: Path) -> Path:
    fig = new_figure(9.0, 4.8)
    ax_out, ax_wait = fig.subplots(1, 2, width_ratios=[3, 2])
    rows = data.rows
    if not rows:
        no_data(ax_out, "no LLM errors")
        no_data(ax_wait, "no waits")
    else:
        names = [r.error_class for r in rows]
        xs = list(range(len(rows)))
        w = 0.27
        for j, (label, attr, color) in enumerate(
            (
                ("recovered", "recovered", "#2a9d8f"),
                ("gave up", "gave_up", "#e76f51"),
                ("pending", "pending", "#adb5bd"),
            )
        ):
            ax_out.bar(
                [x + (j - 1) * w for x in xs],
                [getattr(r, attr) for r in rows],
                w,
                label=label,
                color=color,
            )
        ax_out.set_xticks(xs, names)
        ax_out.set_ylabel("questions")
        ax_out.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax_out.set_xlabel("error class")
        ax_out.set_title("What became of questions that hit an error")
        ax_out.margins(y=0.25)  # headroom: the legend sits above the bars
        ax_out.legend(loc="upper right", ncol=3, fontsize=8)
        means = [T.mean(r.waits_s) or 0.0 for r in rows]
        p95s = [T.percentile(r.waits_s, 95) or 0.0 for r in rows]
        ax_wait.bar([x - 0.2 for x in xs], means, 0.4, label="mean", color="#264653")
        ax_wait.bar([x + 0.2 for x in xs], p95s, 0.4, label="p95", color="#e9c46a")
        ax_wait.set_xticks(xs, names)
        ax_wait.set_ylabel("wait per retry (s)")
        ax_wait.set_xlabel("error class")
        ax_wait.set_title("Time waiting (backoff) or parked")
        ax_wait.margins(y=0.25)
        ax_wait.legend(loc="upper left", ncol=2, fontsize=8)
    fig.suptitle("Retry effectiveness per error type")
    return save(fig, path)


def feedback(data: T.Feedback, path: Path, threshold: float) -> Path:
    fig = new_figure(9.0, 4.5)
    ax_val, ax_score = fig.subplots(1, 2)
    if not data.attempts:
        no_data(ax_val, "no scored answers")
        no_data(ax_score, "no scored answers")
    else:
        att = [a.attempt for a in data.attempts]
        ax_val.bar(att, [a.validated for a in data.attempts], color="#2a9d8f", label="validated")
        ax_val.bar(
            att,
            [a.regenerated for a in data.attempts],
            color="#e9c46a",
            bottom=[a.validated for a in data.attempts],
            label="sent back",
        )
        ax_val.bar(
            att,
            [a.gave_up for a in data.attempts],
            color="#e76f51",
            bottom=[a.validated + a.regenerated for a in data.attempts],
            label="gave up",
        )
        totals = [a.validated + a.regenerated + a.gave_up for a in data.attempts]
        for x, total in zip(att, totals, strict=True):
            ax_val.text(x, total, f"{total}", ha="center", va="bottom", fontsize=9)
        ax_val.set_ylim(0, 1.3 * max([*totals, 1]))  # headroom for the legend and labels
        ax_val.set_xticks(att)
        ax_val.set_xlabel("attempt")
        ax_val.set_ylabel("answers judged")
        ax_val.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax_val.set_title("Decision per attempt")
        ax_val.legend(loc="upper right", ncol=3, fontsize=8)
        means = [a.mean_score for a in data.attempts]
        ax_score.plot(
            att,
            [m if m is not None else float("nan") for m in means],
            "o-",
            color="#264653",
            lw=2,
            label="mean score",
        )
        ax_score.axhline(threshold, color="#e76f51", ls="--", label=f"threshold {threshold:g}")
        for x, m in zip(att, means, strict=True):
            if m is not None:
                ax_score.annotate(
                    f"{m:.2f}", (x, m), textcoords="offset points", xytext=(0, 8), ha="center"
                )
        ax_score.set_xticks(att)
        ax_score.set_ylim(0, 1.15)
        ax_score.set_xlabel("attempt")
        ax_score.set_ylabel("mean score (0-1)")
        ax_score.set_title("Mean score per attempt")
        ax_score.legend(loc="upper right", ncol=2, fontsize=8)
    overhead = data.overhead_pct
    fig.suptitle("Feedback loop" + ("" if overhead is None else f": +{overhead:.1f} % LLM calls"))
    return save(fig, path)


def scores(data: T.Scores, path: Path) -> Path:
    fig = new_figure()
    ax = fig.subplots()
    if not data.all_scores:
        no_data(ax, "no scores")
    else:
        bins = [i / 40 for i in range(41)]
        ax.hist(
            data.all_scores,
            bins=bins,
            color="#8d99ae",
            label=f"all attempts (n={len(data.all_scores)})",
        )
        ax.hist(
            data.first_attempt,
            bins=bins,
            histtype="step",
            lw=2,
            color="#264653",
            label=f"first attempt (n={len(data.first_attempt)})",
        )
        rate = data.pass_rate_pct or 0.0
        ax.axvline(
            data.threshold,
            color="#e76f51",
            lw=2,
            ls="--",
            label=f"threshold {data.threshold:g} ({rate:.1f} % pass)",
        )
        ax.set_xlim(0, 1)
        ax.set_xlabel("quality score (0-1)")
        ax.set_ylabel("answers")
        ax.legend()
        ax.grid(True, alpha=0.3)
    ax.set_title("Score distribution with the validation threshold")
    return save(fig, path)


def dead_letters(data: T.DeadLetters, path: Path) -> Path:
    fig = new_figure(8.0, max(3.0, 1.2 + 0.45 * len(data.by_reason)))
    ax = fig.subplots()
    if not data.by_reason:
        no_data(ax, "no dead letters")
    else:
        reasons = [r if len(r) <= 45 else r[:44] + "…" for r, _, _ in data.by_reason][::-1]
        counts = [n for _, n, _ in data.by_reason][::-1]
        ax.barh(reasons, counts, color="#e76f51")
        for y, n in enumerate(counts):
            ax.text(n, y, f" {n}", va="center")
        ax.set_xlabel("dead letters")
        ax.margins(x=0.15)
    ax.set_title(f"Dead letters by reason (total {data.total})")
    return save(fig, path)
