"""`qaloop report`: tables and plots that justify the design, generated from stored data."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from qaloop.cli.common import build_settings, open_storage
from qaloop.cli.errors import redact

if TYPE_CHECKING:
    from qaloop.settings import Settings


def gate_threshold(settings: Settings) -> float:
    """The score an answer needs to pass the gate as configured (QALOOP_THRESHOLD when set,
    else the calibrated default gate's): what the score plots mark."""
    from qaloop.gate_config import gate_spec_from_settings

    return gate_spec_from_settings(settings).pass_threshold


@click.command("report")
@click.option("--db", "db", default=None, help="Storage URL (default: QALOOP_DB / settings).")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("report"),
    show_default=True,
    help="Directory for report.md, report.html and the PNG plots.",
)
@click.option(
    "--requests",
    "requests_csv",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Per-request CSV from `qaloop traffic` (hit/queued latency and throughput); "
    "without it, storage timestamps are used.",
)
@click.option(
    "--threshold",
    type=click.FloatRange(0, 1),
    default=None,
    help="Threshold to mark on the score plots (default: the gate's pass threshold).",
)
def command(
    db: str | None, out_dir: Path, requests_csv: Path | None, threshold: float | None
) -> None:
    """Write report.md and report.html with PNG plots from the data in storage."""
    settings = build_settings(db=db, threshold=threshold)
    try:
        from qaloop.report import plots, render  # noqa: F401  (plots: is matplotlib there?)
        from qaloop.report.data import RequestsFileError, load, read_requests
    except ImportError as exc:  # matplotlib lives in the optional extra
        raise click.ClickException(
            f"the report needs the `report` extra: pip install 'qaloop[report]' ({exc})"
        ) from exc
    requests = None
    if requests_csv is not None:  # checked first: every mistake is reported before work
        try:
            requests = read_requests(requests_csv)
        except RequestsFileError as exc:
            raise click.ClickException(str(exc)) from exc
    repo = open_storage(settings.db, must_exist=True)
    try:
        data = load(repo, source=redact(settings.db))
    finally:
        repo.close()
    if requests is not None:
        data.requests = requests
    written = render.build(data, out_dir, gate_threshold(settings))
    click.echo(
        f"{len(data.questions)} questions, {len(data.events)} events, "
        f"{len(data.dead_letters)} dead letters"
    )
    for path in written:
        click.echo(f"wrote {path}")
