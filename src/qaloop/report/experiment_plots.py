"""PNG plots of the offline experiments (cache sweep, sync vs async)."""

from __future__ import annotations

import math
from pathlib import Path

from qaloop.report.cache_experiment import CacheResults
from qaloop.report.plots import PALETTE, ecdf, log_seconds_axis, new_figure, save
from qaloop.report.sync_async import PathResult

PATH_COLORS = ("#e76f51", "#264653", *PALETTE)
POLICY_STYLE = {"lru": ("#264653", "o"), "lfu": ("#e76f51", "s"), "fifo": ("#2a9d8f", "^")}


def _grid(n: int) -> tuple[int, int]:
    cols = 2 if n > 1 else 1
    return math.ceil(n / cols), cols


def cache_sizes(res: CacheResults, path: Path) -> Path:
    cfg = res.config
    rows, cols = _grid(len(cfg.scenarios))
    fig = new_figure(5.0 * cols, 3.6 * rows)
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
    for ax, sc in zip([a for row in axes for a in row], cfg.scenarios, strict=False):
        for policy in cfg.policies:
            color, marker = POLICY_STYLE.get(policy, ("#6c757d", "x"))
            rates = [100 * res.get(sc.name, policy, s).hit_rate for s in cfg.sizes]
            ax.plot(cfg.sizes, rates, marker=marker, color=color, lw=2, label=policy.upper())
        bound = 100 * res.get(sc.name, cfg.policies[0], cfg.sizes[0]).bound
        ax.axhline(bound, color="#6c757d", ls="--", lw=1, label=f"infinite cache {bound:.0f} %")
        ax.set_xscale("log")
        ax.set_ylim(0, 100)
        ax.grid(True, which="both", alpha=0.3)
        ax.set_title(f"{sc.name}: {sc.why}", fontsize=9)
        ax.set_xlabel("cache size (entries, log scale)")
        ax.set_ylabel("hit rate (%)")
        ax.legend(fontsize=8, loc="best")
    for ax in [a for row in axes for a in row][len(cfg.scenarios) :]:
        ax.set_visible(False)
    fig.suptitle(
        f"Cache hit rate vs size, no TTL ({cfg.n_requests:,} requests over {cfg.n_keys:,} keys)"
    )
    return save(fig, path)


def cache_ttl(res: CacheResults, path: Path) -> Path:
    cfg = res.config
    ttls = [t for t in cfg.ttls_s if t > 0]
    labels = [*[f"{t:g}" for t in ttls], "none (∞)"]
    rows, cols = _grid(len(cfg.scenarios))
    fig = new_figure(5.0 * cols, 3.4 * rows)
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
    for ax, sc in zip([a for row in axes for a in row], cfg.scenarios, strict=False):
        xs = list(range(len(labels)))
        for policy in cfg.policies:
            color, marker = POLICY_STYLE.get(policy, ("#6c757d", "x"))
            rates = [100 * res.get(sc.name, policy, cfg.ttl_size, t).hit_rate for t in ttls]
            rates.append(100 * res.get(sc.name, policy, cfg.ttl_size).hit_rate)
            ax.plot(xs, rates, marker=marker, color=color, lw=2, label=policy.upper())
        ax.set_xticks(xs, labels)
        ax.set_ylim(0, 100)
        ax.grid(True, alpha=0.3)
        ax.set_title(sc.name, fontsize=9)
        ax.set_xlabel("TTL (s)")
        ax.set_ylabel("hit rate (%)")
        ax.legend(fontsize=8, loc="best")
    for ax in [a for row in axes for a in row][len(cfg.scenarios) :]:
        ax.set_visible(False)
    fig.suptitle(f"TTL effect at cache size {cfg.ttl_size} (mean rate {cfg.rate:g} requests/s)")
    return save(fig, path)


def sync_async_latency(paths: list[PathResult], path: Path) -> Path:
    fig = new_figure(9.5, 5.4)
    ax_cdf, ax_bar = fig.subplots(1, 2, width_ratios=[3, 2])
    styles = {"hit": "-", "miss": "--"}
    for i, p in enumerate(paths):
        color = PATH_COLORS[i % len(PATH_COLORS)]
        for kind, values in (("hit", p.hit_latency_s), ("miss", p.miss_latency_s)):
            if not values:
                continue
            xs, ys = ecdf([max(v, 1e-4) for v in values])
            ax_cdf.step(
                xs,
                ys,
                where="post",
                color=color,
                ls=styles[kind],
                lw=2,
                label=f"{p.name}: {kind} (n={len(values)})",
            )
    every = [max(v, 1e-4) for p in paths for v in (*p.hit_latency_s, *p.miss_latency_s)]
    log_seconds_axis(ax_cdf, min(every, default=0.01), max(every, default=1.0))
    ax_cdf.set_ylim(0, 1.02)
    ax_cdf.set_xlabel("time to an answer (model s, log scale)")
    ax_cdf.set_ylabel("fraction of requests")
    ax_cdf.set_title("Perceived latency (CDF)")
    ax_cdf.grid(True, which="both", alpha=0.3)
    # Below the axes: inside, it covered the miss curves (they end at the lower right).
    ax_cdf.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.17), ncol=2)
    names = [p.name for p in paths]
    xs = list(range(len(paths)))
    ax_bar.bar(
        [x - 0.2 for x in xs],
        [p.answered for p in paths],
        0.4,
        color="#2a9d8f",
        label="questions answered",
    )
    ax_bar.bar(
        [x + 0.2 for x in xs],
        [p.lost_questions for p in paths],
        0.4,
        color="#e76f51",
        label="questions lost to errors",
    )
    for x, p in zip(xs, paths, strict=True):
        ax_bar.text(
            x,
            max(p.answered, p.lost_questions) * 1.02 + 0.5,
            f"{p.llm_calls} LLM calls\n{p.throughput:.2f} answers/s",
            ha="center",
            fontsize=8,
        )
    ax_bar.set_xticks(xs, names)
    ax_bar.set_ylabel("questions")
    ax_bar.set_ylim(0, 1.4 * max([p.answered for p in paths] + [1]))
    ax_bar.set_title("Outcome")
    ax_bar.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=1)
    fig.suptitle("Synchronous vs asynchronous: the same workload")
    return save(fig, path)
