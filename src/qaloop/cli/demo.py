"""`qaloop demo`: the full loop, embedded, with the seeded simulated LLM."""

from __future__ import annotations

import click
import orjson

from qaloop.cli.common import build_settings, setup_logging
from qaloop.cli.errors import check_storage
from qaloop.dataset import DatasetError, load_csv, load_sample
from qaloop.demo import format_summary, run, temporary_db


@click.command("demo")
@click.option(
    "--dataset",
    type=click.Path(dir_okay=False),
    default=None,
    help="Yahoo! Answers CSV (Kaggle layout); default: the shipped synthetic sample",
)
@click.option(
    "--requests",
    "n_requests",
    type=click.IntRange(1),
    default=400,
    show_default=True,
    help="Requests to replay",
)
@click.option(
    "--unique",
    type=click.IntRange(1),
    default=200,
    show_default=True,
    help="Distinct questions to draw from",
)
@click.option(
    "--zipf-s",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Zipf exponent of question popularity",
)
@click.option(
    "--wave",
    type=click.IntRange(1),
    default=50,
    show_default=True,
    help="Requests offered before the pipeline drains",
)
@click.option("--seed", type=int, default=42, show_default=True, help="Seed of the traffic")
@click.option("--db", default=None, help="Storage URL (default: a fresh temporary SQLite file)")
@click.option(
    "--overload-rate",
    type=click.FloatRange(0, 1),
    default=0.08,
    show_default=True,
    help="Simulated 503 rate per LLM call",
)
@click.option(
    "--quota-rate",
    type=click.FloatRange(0, 1),
    default=0.05,
    show_default=True,
    help="Simulated 429 rate per LLM call",
)
@click.option(
    "--latency-ms",
    type=click.FloatRange(min=0),
    default=20.0,
    show_default=True,
    help="Simulated LLM median latency",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON")
def command(
    dataset: str | None,
    n_requests: int,
    unique: int,
    zipf_s: float,
    wave: int,
    seed: int,
    db: str | None,
    overload_rate: float,
    quota_rate: float,
    latency_ms: float,
    as_json: bool,
) -> None:
    """Replay a few hundred questions through the whole loop and print a summary."""
    settings = build_settings(
        db=db or temporary_db(),
        llm="simulated",
        sim_overload_rate=overload_rate,
        sim_quota_rate=quota_rate,
        sim_quota_retry_after_s=0.2,
        sim_latency_ms=latency_ms,
        backoff_base_s=0.02,
        backoff_cap_s=0.2,
    )
    check_storage(settings.db)
    setup_logging("ERROR")  # the summary counts give-ups; a WARNING line each would drown it
    try:
        qas = load_csv(dataset) if dataset else load_sample()
    except DatasetError as exc:
        raise click.ClickException(str(exc)) from exc
    result = run(
        settings, qas, requests=n_requests, unique=unique, zipf_s=zipf_s, wave=wave, seed=seed
    )
    if as_json:
        click.echo(
            orjson.dumps(
                result.summary, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS
            ).decode()
        )
    else:
        click.echo(format_summary(result.summary, settings))
