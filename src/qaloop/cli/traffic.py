"""`qaloop traffic`: replay questions against a gateway and record each request to CSV."""

from __future__ import annotations

import asyncio
from typing import Any

import click
import httpx
import orjson

from qaloop.cli.common import Progress, build_settings
from qaloop.cli.errors import check_storage
from qaloop.dataset import DatasetError, load_csv, load_sample
from qaloop.demo import temporary_db
from qaloop.pipeline import EmbeddedPipeline
from qaloop.traffic import (
    RequestRecord,
    TrafficPlan,
    http_client_fns,
    run_traffic,
    sse_wait_fn,
    summarise,
    write_csv,
)
from qaloop.traffic_model import ARRIVAL_KINDS, POPULARITY_KINDS


@click.command("traffic")
@click.option("--url", default="http://127.0.0.1:8000", show_default=True, help="Gateway URL")
@click.option(
    "--dataset",
    type=click.Path(dir_okay=False),
    default=None,
    help="Yahoo! Answers CSV (Kaggle layout); default: the shipped sample",
)
@click.option(
    "--arrival",
    type=click.Choice(ARRIVAL_KINDS),
    default="poisson",
    show_default=True,
    help="Arrival process",
)
@click.option(
    "--rate", type=float, default=20.0, show_default=True, help="Mean requests per second"
)
@click.option(
    "--popularity",
    "popularity_kind",
    type=click.Choice(POPULARITY_KINDS),
    default="zipf",
    show_default=True,
    help="Which questions get asked",
)
@click.option("--zipf-s", type=float, default=1.1, show_default=True, help="Zipf exponent")
@click.option("--count", type=int, default=None, help="Number of requests (default 200)")
@click.option("--duration", type=float, default=None, help="Or: seconds of traffic")
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--max-in-flight", type=int, default=256, show_default=True)
@click.option(
    "--wait",
    "wait_s",
    type=float,
    default=0.0,
    show_default=True,
    help="Long-poll queued questions up to this many seconds for the final answer",
)
@click.option(
    "--wait-via",
    type=click.Choice(["sse", "poll"]),
    default="sse",
    show_default=True,
    help="How --wait learns the final answer: the SSE stream (pushed, no cap) or ?wait= "
    "long-polls (capped by the server's QALOOP_MAX_WAIT_S, 30 s by default)",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default="traffic.csv",
    show_default=True,
    help="Per-request CSV",
)
@click.option(
    "--in-process",
    "in_process_flag",
    is_flag=True,
    help="Run the embedded pipeline in this process instead of calling --url",
)
@click.option("--db", default=None, help="With --in-process: storage URL (default: temporary)")
@click.option(
    "--priority",
    type=click.Choice(["interactive", "batch"]),
    default="interactive",
    show_default=True,
    help="Request priority: batch questions may wait for a provider batch job (docs/spend.md)",
)
def command(
    in_process_flag: bool,
    db: str | None,
    url: str,
    dataset: str | None,
    arrival: str,
    rate: float,
    popularity_kind: str,
    zipf_s: float,
    count: int | None,
    duration: float | None,
    seed: int,
    max_in_flight: int,
    wait_s: float,
    wait_via: str,
    out: str,
    priority: str,
) -> None:
    """Send seeded traffic (arrival process x popularity) to a gateway; record it to CSV."""
    if count is None and duration is None:
        count = 200
    plan = TrafficPlan(
        arrival=arrival,
        rate=rate,
        popularity=popularity_kind,
        zipf_s=zipf_s,
        count=count,
        duration_s=duration,
        seed=seed,
        max_in_flight=max_in_flight,
        wait_s=wait_s,
    )
    try:
        qas = load_csv(dataset) if dataset else load_sample()
    except DatasetError as exc:
        raise click.ClickException(str(exc)) from exc

    def progress_bar() -> Progress:
        # A bar on a terminal; piped, a line every few seconds (never a lone "requests").
        return Progress(plan.n_requests() if count else 0, "requests")

    async def over_http() -> list[RequestRecord]:
        limits = httpx.Limits(max_connections=max_in_flight)
        async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
            try:
                await client.get("/healthz")
            except httpx.HTTPError as exc:
                raise click.ClickException(f"no gateway answers at {url}: {exc}") from exc
            ask, wait = http_client_fns(client, None if priority == "interactive" else priority)
            if wait_via == "sse":
                wait = sse_wait_fn(client)
            with progress_bar() as bar:
                return await run_traffic(plan, qas, ask, wait, progress=bar.update)

    async def in_process() -> list[RequestRecord]:
        # The whole embedded pipeline in this process: no server, no sockets.
        settings = build_settings(db=db or temporary_db())
        check_storage(settings.db)
        pipeline = EmbeddedPipeline(settings)
        await pipeline.start()
        try:
            with progress_bar() as bar:
                return await run_traffic(
                    plan,
                    qas,
                    in_lane(pipeline.service.ask),
                    pipeline.service.wait,
                    progress=bar.update,
                )
        finally:
            await pipeline.stop()

    def in_lane(ask: Any) -> Any:
        async def asked(question: str, reference: str | None) -> tuple[int, dict[str, Any]]:
            result: tuple[int, dict[str, Any]] = await ask(question, reference, lane=priority)
            return result

        return asked

    async def go() -> None:
        records = await (in_process() if in_process_flag else over_http())
        write_csv(records, out)
        click.echo(orjson.dumps(summarise(records), option=orjson.OPT_INDENT_2).decode())
        click.echo(f"wrote {len(records)} rows to {out}", err=True)

    asyncio.run(go())
