"""`qaloop experiment cache` and `qaloop experiment sync-vs-async`: offline, seeded experiments
that write markdown + CSV tables and PNG plots, and say what the numbers mean."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click

from qaloop.cli.common import progress, setup_logging


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError as exc:
        raise click.BadParameter(f"expected comma-separated numbers, got {text!r}") from exc


def _ints(text: str) -> tuple[int, ...]:
    values = _floats(text)
    if any(v < 1 or v != int(v) for v in values):
        raise click.BadParameter(f"expected comma-separated positive integers, got {text!r}")
    return tuple(int(v) for v in values)


def _need_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise click.ClickException(
            "experiments draw plots: pip install 'qaloop[report]' (matplotlib)"
        ) from exc


@click.group("experiment")
def command() -> None:
    """Offline experiments: cache policies, synchronous vs asynchronous."""


@command.command("cache")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("experiments/cache"),
    show_default=True,
)
@click.option(
    "--requests",
    "n_requests",
    type=click.IntRange(1),
    default=100_000,
    show_default=True,
    help="Requests replayed per traffic scenario.",
)
@click.option(
    "--keys",
    "n_keys",
    type=click.IntRange(1),
    default=10_000,
    show_default=True,
    help="Distinct questions.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    default=50.0,
    show_default=True,
    help="Mean arrival rate (requests/s, virtual time).",
)
@click.option(
    "--zipf-s",
    "s",
    type=click.FloatRange(min=0, min_open=True),
    default=1.1,
    show_default=True,
    help="Zipf exponent of the skewed scenarios.",
)
@click.option("--sizes", default="100,250,500,1000,1500,2500,5000,10000", show_default=True)
@click.option("--ttls", default="0,10,60,300", show_default=True, help="TTLs in seconds.")
@click.option("--ttl-size", type=click.IntRange(1), default=1500, show_default=True)
@click.option("--policies", default="lru,lfu,fifo", show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option(
    "--paraphrase-data",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Yahoo! Answers CSV: also calibrate the paraphrase cache on it (docs/spend.md)",
)
@click.option("--paraphrase-questions", type=click.IntRange(50), default=3000, show_default=True)
def cache(
    out_dir: Path,
    n_requests: int,
    n_keys: int,
    rate: float,
    s: float,
    sizes: str,
    ttls: str,
    ttl_size: int,
    policies: str,
    seed: int,
    paraphrase_data: Path | None,
    paraphrase_questions: int,
) -> None:
    """Replay seeded traffic against every cache policy x size x TTL (virtual clock)."""
    _need_matplotlib()
    from qaloop.report import cache_experiment as C
    from qaloop.report import experiment_plots
    from qaloop.report.render import Document, Section, write_document

    chosen = tuple(p.strip().lower() for p in policies.split(",") if p.strip())
    if bad := [p for p in chosen if p not in ("lru", "lfu", "fifo")]:
        raise click.BadParameter(f"unknown policies {bad}", param_hint="--policies")
    cfg = C.CacheConfig(
        n_requests=n_requests,
        n_keys=n_keys,
        rate=rate,
        s=s,
        policies=chosen,
        sizes=_ints(sizes),
        ttls_s=_floats(ttls),
        ttl_size=ttl_size,
        seed=seed,
    )
    with progress(len(C.plan(cfg)), "cache runs") as tick:
        res = C.run(cfg, tick)
    total = sum(r.requests for r in res.runs)
    speed = total / res.elapsed_s if res.elapsed_s else 0.0
    conclusions = C.conclusions(res)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = C.write_csv(res, out_dir / "cache_hit_rates.csv")
    experiment_plots.cache_sizes(res, out_dir / "cache_sizes.png")
    experiment_plots.cache_ttl(res, out_dir / "cache_ttl.png")
    scenarios = "; ".join(f"{sc.name} ({sc.why})" for sc in cfg.scenarios)
    sections = []
    if paraphrase_data is not None:
        from qaloop.cli.paraphrase import paraphrase_section

        section, lines = paraphrase_section(paraphrase_data, paraphrase_questions, seed)
        sections.append(section)
        conclusions = [*conclusions, *lines]
    doc = Document(
        "Cache experiment",
        f"{len(res.runs)} runs, {total:,} requests replayed in {res.elapsed_s:.1f} s "
        f"({speed:,.0f} requests/s) on a virtual clock. Seed {seed}. Traffic: {scenarios}. "
        f"Command: {_command_line()}",
        [
            Section("Conclusions", " ".join(conclusions)),
            Section("Hit rate by policy and size", "", [C.size_table(res)], ["cache_sizes.png"]),
            Section("TTL effect", "", [C.ttl_table(res)], ["cache_ttl.png"]),
            *sections,
        ],
    )
    written = write_document(doc, out_dir, "cache_hit_rates")
    click.echo(
        f"{len(res.runs)} runs, {total:,} requests in {res.elapsed_s:.1f} s "
        f"({speed:,.0f} requests/s)"
    )
    for line in conclusions:
        click.echo(f"- {line}")
    for path in [*written, csv_path, out_dir / "cache_sizes.png", out_dir / "cache_ttl.png"]:
        click.echo(f"wrote {path}")


@command.command("sync-vs-async")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("experiments/sync_vs_async"),
    show_default=True,
)
@click.option("--requests", "n_requests", type=click.IntRange(1), default=300, show_default=True)
@click.option(
    "--questions",
    "n_questions",
    type=click.IntRange(1),
    default=2000,
    show_default=True,
    help="Distinct questions (Zipf popularity).",
)
@click.option(
    "--rates",
    default="2,16",
    show_default=True,
    help="Arrival rates to compare (requests per model second).",
)
@click.option(
    "--time-factor",
    type=click.FloatRange(min=0, min_open=True),
    default=0.05,
    show_default=True,
    help="Wall seconds per model second.",
)
@click.option(
    "--latency-median",
    type=click.FloatRange(min=0),
    default=1.5,
    show_default=True,
    help="Median LLM latency (model s, lognormal).",
)
@click.option("--overload-rate", type=click.FloatRange(0, 1), default=0.08, show_default=True)
@click.option("--quota-rate", type=click.FloatRange(0, 1), default=0.04, show_default=True)
@click.option("--permanent-rate", type=click.FloatRange(0, 1), default=0.0, show_default=True)
@click.option("--sync-workers", type=click.IntRange(1), default=4, show_default=True)
@click.option("--async-concurrency", type=click.IntRange(1), default=16, show_default=True)
@click.option("--scorer", default="jaccard", show_default=True)
@click.option("--threshold", type=click.FloatRange(0, 1), default=0.5, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
def sync_vs_async(out_dir: Path, rates: str, latency_median: float, **options: Any) -> None:
    """The same workload through a synchronous server and the asynchronous pipeline."""
    _need_matplotlib()
    from qaloop.report import experiment_plots
    from qaloop.report import sync_async as S
    from qaloop.report.render import Document, Section, markdown_table, write_document

    setup_logging("WARNING")
    cfg = S.SyncAsyncConfig(rates=_floats(rates), latency_median_s=latency_median, **options)
    if not cfg.rates or any(r <= 0 for r in cfg.rates):
        raise click.BadParameter("rates must be positive", param_hint="--rates")
    click.echo(
        f"time scaled by {cfg.time_factor:g}: a {cfg.latency_median_s:g} s LLM call takes "
        f"{cfg.latency_median_s * cfg.time_factor * 1000:.0f} ms of wall time; times below are "
        "model seconds (wall / factor)",
        err=True,
    )
    with progress(2 * len(cfg.rates) * cfg.n_requests, "requests") as tick:
        results = S.run(cfg, tick)
    table = S.table(results, cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = []
    for rate in cfg.rates:
        pair = [r for r in results if r.name.endswith(f"@{rate:g}/s")]
        name = f"sync_vs_async_{rate:g}".replace(".", "_") + ".png"
        experiment_plots.sync_async_latency(pair, out_dir / name)
        plots.append(name)
    doc = Document(
        "Synchronous vs asynchronous",
        f"Command: {_command_line()}. Config: "
        + ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(cfg).items()),
        [Section("Results", S.__doc__.split("\n\n")[1] if S.__doc__ else "", [table], plots)],
    )
    written = write_document(doc, out_dir, "sync_vs_async")
    click.echo(markdown_table(table))
    for path in [*written, *(out_dir / p for p in plots)]:
        click.echo(f"wrote {path}")


def _command_line() -> str:
    """The command with every option's value, so the run can be repeated exactly."""
    ctx = click.get_current_context()
    flags = {p.name: p.opts[0] for p in ctx.command.params if p.opts}
    opts = " ".join(
        f"{flags.get(k, k)} {v}" for k, v in ctx.params.items() if k != "out_dir" and v is not None
    )
    return f"`{ctx.command_path} {opts}`"
