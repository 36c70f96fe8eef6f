"""The distributed services: each stage of qaloop.wiring in its own process, over Kafka and a
shared repository (PostgreSQL, or a SQLite file shared by the processes of one machine).

The stages are the embedded pipeline's, built by the same wiring; only the adapters differ.
One consumer group per stage (`<topic prefix>.<stage>`): start more processes of a stage and
Kafka spreads the partitions over them. Each process runs under qaloop.distributed.supervision.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from qaloop import wiring
from qaloop.distributed.supervision import (
    STOP_GRACE_S,
    FailFastBus,
    Main,
    batch_failed,
    closer,
    freeze_startup_heap,
    publish_failed,
    run_process,
    run_stage,
    runner_stats,
)
from qaloop.llm.accounting import cost_stats
from qaloop.llm.base import Provider
from qaloop.llm.factory import make_provider
from qaloop.llm.fallback import fallback_stats
from qaloop.observability.lag import KafkaLag
from qaloop.observability.metrics import Metrics
from qaloop.observability.server import serve_metrics
from qaloop.services.webhooks import WebhookDispatcher, webhook_dispatcher
from qaloop.settings import Settings
from qaloop.storage.base import Repository
from qaloop.storage.factory import open_repository
from qaloop.wiring import JUDGE, RETRIER, STORE, WORKER, Wiring

if TYPE_CHECKING:
    from fastapi import FastAPI

    from qaloop.bus.kafka import KafkaBus

log = logging.getLogger(__name__)

SERVICES = ("gateway", *wiring.STAGES)


def make_bus(settings: Settings) -> KafkaBus:
    if settings.bus != "kafka":
        raise ValueError(
            "the distributed services need a shared bus: use --bus kafka (QALOOP_BUS=kafka); "
            "the in-process bus is for `qaloop serve`"
        )
    from qaloop.bus.kafka import KafkaBus  # optional dependency

    return KafkaBus(wiring.kafka_settings(settings), wiring.topics_for(settings))


async def _start(settings: Settings) -> tuple[Wiring, FailFastBus]:
    bus = FailFastBus(make_bus(settings))
    await bus.start()
    return Wiring(settings, shared_bus=True), bus


async def _repository(settings: Settings, repo: Repository | None) -> Repository:
    return repo if repo is not None else await asyncio.to_thread(open_repository, settings.db)


def _observers(
    settings: Settings, metrics: Metrics, bus: FailFastBus, group: str, topics: Sequence[str]
) -> list[Main]:
    """The stage's own consumer lag, probed every few seconds, and its metrics port."""
    lag = KafkaLag(bus.inner, {group: list(topics)})
    metrics.watch_lag(lag)
    mains: list[Main] = [lag.run]
    if settings.metrics_port:
        mains.append(
            functools.partial(serve_metrics, metrics, settings.host, settings.metrics_port)
        )
    return mains


async def run_worker(
    settings: Settings, stop: asyncio.Event, *, provider: Provider | None = None
) -> None:
    w, bus = await _start(settings)
    llm = provider or make_provider(settings)
    metrics = Metrics()
    stage = w.worker(bus, llm, metrics)
    # A stop waits this long for LLM calls in flight, then hands the rest back (uncommitted),
    # well before the stop watchdog (STOP_GRACE_S) would exit the process (qaloop.lifecycle).
    stage.runner.drain_timeout_s = min(settings.shutdown_timeout_s, STOP_GRACE_S - 10)
    group = w.group(WORKER)
    observers = _observers(settings, metrics, bus, group, w.topics_of(WORKER))

    lane = stage.batch_lane
    budget = stage.worker.budget

    def stats() -> dict[str, Any]:
        meter = stage.worker.meter
        return {
            "group": group,
            **runner_stats(stage.runner),
            **stage.worker.stats.as_dict(),
            "cost": meter.as_dict() if meter is not None else {},
            "fallbacks": fallback_stats(llm),
            "batch_lane": lane.stats.as_dict() if lane is not None else {},
            "budget": budget.as_dict() if budget is not None else {},
        }

    await run_stage(
        WORKER,
        bus,
        [stage.runner.run, *observers, *([lane.run] if lane is not None else [])],
        stats,
        stop,
        [llm.aclose, stage.aclose],
        publish_failed(bus),
    )


async def run_judge(settings: Settings, stop: asyncio.Event) -> None:
    w, bus = await _start(settings)
    metrics = Metrics()
    stage = w.judge(bus, metrics)
    group = w.group(JUDGE)
    observers = _observers(settings, metrics, bus, group, w.topics_of(JUDGE))

    def stats() -> dict[str, Any]:
        return {
            "group": group,
            **runner_stats(stage.runner),
            **stage.judge.stats(),
            "cost": stage.meter.as_dict() if stage.meter is not None else {},
        }

    await run_stage(
        JUDGE,
        bus,
        [stage.runner.run, *observers],
        stats,
        stop,
        [stage.judge.aclose],  # the LLM judge's provider
        unhealthy=batch_failed(bus, stage.runner),
    )


async def run_store(
    settings: Settings, stop: asyncio.Event, *, repo: Repository | None = None
) -> None:
    w, bus = await _start(settings)
    repository = await _repository(settings, repo)
    metrics = Metrics()
    # The store sees every final first: it delivers callback_url webhooks (services/webhooks).
    webhooks = webhook_dispatcher(settings, repository)
    stage = w.store(bus, repository, metrics, on_final=webhooks.notify_final if webhooks else None)
    group = w.group(STORE)
    observers = _observers(settings, metrics, bus, group, w.topics_of(STORE))

    def stats() -> dict[str, Any]:
        return {
            "group": group,
            **runner_stats(stage.runner),
            "written": stage.store.written,
            "dead_letters": stage.store.dead_letters,
        }

    await run_stage(
        STORE,
        bus,
        [stage.runner.run, *observers, *([webhooks.run] if webhooks else [])],
        stats,
        stop,
        [
            *([_close_outbox(webhooks)] if webhooks else []),
            *([closer(repository)] if repo is None else []),
        ],
        batch_failed(bus, stage.runner),
    )


def _close_outbox(webhooks: WebhookDispatcher) -> Callable[[], Awaitable[None]]:
    async def close() -> None:
        await asyncio.to_thread(webhooks.outbox.close)

    return close


async def run_retrier(
    settings: Settings, stop: asyncio.Event, *, repo: Repository | None = None
) -> None:
    """The delayed retries, and the recovery of questions stored but never published."""
    w, bus = await _start(settings)
    repository = await _repository(settings, repo)
    metrics = Metrics()
    retrier = w.retrier(bus, metrics)
    group = w.group(RETRIER)
    observers = _observers(settings, metrics, bus, group, w.topics_of(RETRIER))
    worker_group = w.group(WORKER)

    async def backlog() -> int:
        lag = await asyncio.to_thread(bus.inner.lag, worker_group, w.topics_of(WORKER))
        return sum(lag.values())

    recovery = w.recovery(repository, bus, backlog=backlog)

    def stats() -> dict[str, Any]:
        return {
            "group": group,
            "held": retrier.held,
            "resumed": retrier.resumed,
            "stale_republished": recovery.republished,
            "sweeps_skipped": recovery.skipped,
        }

    await run_stage(
        RETRIER,
        bus,
        [retrier.run, recovery.run, *observers],
        stats,
        stop,
        [closer(repository)] if repo is None else [],
        publish_failed(bus),
    )


async def _refresh_cost(
    repo: Repository, into: dict[str, Any], stop: asyncio.Event, every_s: float = 5.0
) -> None:
    """Keep `into` at the stored spend (qaloop.llm.accounting.cost_stats), read in a thread so
    the gateway's event loop never waits on the query."""
    while not stop.is_set():
        try:
            into.update(await asyncio.to_thread(cost_stats, repo))
        except Exception as exc:  # stats only: log and try again later
            log.warning("gateway: could not read spend: %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)


def build_gateway_app(settings: Settings, *, repo: Repository | None = None) -> FastAPI:
    """QuestionService over Kafka and the shared repository, behind the HTTP app."""
    from qaloop.gateway.guard import guard_gateway, kafka_ready, unfinished_count
    from qaloop.gateway.http import create_app
    from qaloop.llm.budget import budget_from_settings

    w = Wiring(settings, shared_bus=True)
    bus = make_bus(settings)
    repository: Repository = repo if repo is not None else open_repository(settings.db)
    service = w.question_service(repository, bus)
    # A spend budget is seen here only through a shared (PostgreSQL) ledger.
    budget = (
        budget_from_settings(settings, service.metrics)
        if settings.budget_backend == "postgres"
        else None
    )
    reject = settings.budget_action == "reject" and (settings.budget_usd or settings.budget_key_usd)
    if budget is None and reject:
        log.warning(
            "gateway: QALOOP_BUDGET_ACTION=reject needs QALOOP_BUDGET_BACKEND=postgres in "
            "distributed mode (the workers' spend is not visible here); questions park instead"
        )
    # API keys and admission (backlog: a storage count, refreshed off the request path).
    auth = guard_gateway(
        service,
        settings,
        backlog=lambda: unfinished_count(repository),
        backlog_is_slow=True,
        budget=budget,
    )
    # The dashboard's flow and Prometheus see every stage's backlog from here.
    lag = KafkaLag(bus, w.groups())
    service.metrics.watch_lag(lag)
    spend: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        await bus.start()
        flusher = asyncio.create_task(service.run_hit_flusher(stop))
        lag_probe = asyncio.create_task(lag.run(stop))
        spend_probe = asyncio.create_task(_refresh_cost(repository, spend, stop))
        log.info(
            "gateway: serving on %s:%d (bus kafka %s)",
            settings.host,
            settings.port,
            settings.kafka_bootstrap,
        )
        try:
            yield
        finally:
            stop.set()
            await flusher
            await lag_probe
            await spend_probe
            await service.flush_hits()
            await bus.close()
            if budget is not None:
                await budget.aclose()
            if repo is None:
                await asyncio.to_thread(repository.close)
            log.info("gateway: stopped; %s", service.stats())

    def stats() -> dict[str, Any]:
        # Accepted here is not final here: the store of another process finishes questions.
        body = service.stats()
        body["mode"] = "distributed"
        body["cost"] = spend  # stored spend of every worker, refreshed off the event loop
        return body

    return create_app(
        service,
        settings,
        stats=stats,
        auth=auth,
        ready=kafka_ready(service, bus, w.topics),
        lifespan=lifespan,
    )


def run_gateway(settings: Settings) -> None:
    """Blocking: uvicorn (one worker, uvloop/httptools, no access log) handles SIGTERM/SIGINT
    and the app's lifespan closes the bus and the repository."""
    from qaloop.gateway.server import bind_socket, http_limits, serve

    sock = bind_socket(settings.host, settings.port)  # before the app's lifespan starts
    app = build_gateway_app(settings)
    freeze_startup_heap()
    serve(
        app,
        settings.host,
        settings.port,
        settings.log_level,
        limits=http_limits(settings),
        shutdown_timeout_s=settings.shutdown_timeout_s,
        sock=sock,
    )


STAGES: dict[str, Callable[[Settings, asyncio.Event], Awaitable[None]]] = {
    WORKER: run_worker,
    JUDGE: run_judge,
    STORE: run_store,
    RETRIER: run_retrier,
}


def run_stage_process(service: str, settings: Settings) -> None:
    """Entry point of one service process (`qaloop worker`, ...)."""
    if service == "gateway":
        run_gateway(settings)
        return
    stage = STAGES[service]
    run_process(functools.partial(stage, settings))
