"""The distributed mode: each stage in its own process over Kafka and a shared repository.

The stage classes are the embedded pipeline's (qaloop.pipeline): Worker on a ConcurrentRunner,
Judge and Store on BatchRunners, the Retrier, QuestionService behind the HTTP app. Only the
adapters differ: KafkaBus instead of the in-process log, PostgreSQL (or a SQLite file shared by
the processes on one machine) instead of a private SQLite database. One consumer group per
stage (`<topic prefix>.<stage>`): start more processes of a stage and Kafka spreads the
partitions over them.

Stopping (SIGTERM/SIGINT): the stage stops polling, finishes what it holds (publishing its
outputs), commits, leaves its group and flushes its producer. A SIGKILL loses nothing either:
uncommitted messages are redelivered and every downstream write is idempotent.

The gateway stores a new question before it publishes it. If it dies between the two, the
question sits in `queued` with no progress: the retrier process runs a periodic sweep that
re-publishes such questions (StaleSweep) once the worker group has no large backlog left.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import functools
import logging
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from qaloop.bus.base import Bus, Consumer, OutMessage, Topics
from qaloop.core.cache import Cache, make_cache
from qaloop.core.model import Envelope, EventKind, QuestionState
from qaloop.gateway.service import CachedAnswer, QuestionService
from qaloop.llm.base import Provider
from qaloop.llm.factory import make_provider
from qaloop.observability.lag import KafkaLag
from qaloop.observability.metrics import Metrics
from qaloop.observability.server import serve_metrics
from qaloop.pipeline import gate_config, retry_policy, worker_config
from qaloop.quality import get_scorer
from qaloop.services.judge import Judge
from qaloop.services.retrier import Retrier
from qaloop.services.runner import BatchRunner, ConcurrentRunner, out
from qaloop.services.store import Store
from qaloop.services.worker import Worker
from qaloop.settings import Settings
from qaloop.storage.base import Repository, StaleQueries, open_repository

if TYPE_CHECKING:
    from fastapi import FastAPI

    from qaloop.bus.kafka import KafkaBus, KafkaConsumer

log = logging.getLogger(__name__)

SERVICES = ("gateway", "worker", "judge", "store", "retrier")
STATS_EVERY_S = 10.0


def topics_for(settings: Settings) -> Topics:
    return Topics.with_prefix(settings.topic_prefix)


def group_for(settings: Settings, service: str) -> str:
    return f"{settings.topic_prefix}.{service}"


def make_bus(settings: Settings, topics: Topics | None = None) -> KafkaBus:
    if settings.bus != "kafka":
        raise ValueError(
            "the distributed services need a shared bus: use --bus kafka (QALOOP_BUS=kafka); "
            "the in-process bus is for `qaloop serve`"
        )
    from qaloop.bus.kafka import KafkaBus, KafkaSettings  # optional dependency

    return KafkaBus(
        KafkaSettings(
            settings.kafka_bootstrap,
            partitions=settings.kafka_partitions,
            session_timeout_ms=settings.kafka_session_timeout_ms,
            client_id=f"qaloop-{settings.topic_prefix}",
            producer=dict(settings.kafka_producer_config),
            consumer=dict(settings.kafka_consumer_config),
        ),
        topics or topics_for(settings),
    )


def install_stop_signals(stop: asyncio.Event) -> None:
    """SIGTERM / SIGINT set `stop` (a second one is ignored: the stage is already stopping)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, _request_stop, stop, sig)


def _request_stop(stop: asyncio.Event, sig: signal.Signals) -> None:
    if not stop.is_set():
        log.info("%s: stopping (finishing in-flight work, committing)", sig.name)
    stop.set()


async def _log_stats(name: str, stats: Callable[[], dict[str, Any]], stop: asyncio.Event) -> None:
    last: dict[str, Any] = {}
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=STATS_EVERY_S)
        current = stats()
        if current != last:  # an idle stage stays quiet
            log.info("%s stats: %s", name, current)
            last = current


class RestartRequired(RuntimeError):
    """The stage stopped itself: what it failed to do comes back only through a restart."""

    exit_code = 75  # EX_TEMPFAIL: a supervisor (`qaloop up`, compose, k8s) restarts it


class FailFastBus:
    """The stage's bus, counting failed publishes. The runners leave a message whose outputs
    could not be published uncommitted, but the consumer has moved past it: only a restart
    (from the committed position) brings it back. So a stage with a failed publish stops
    cleanly and exits for its supervisor to restart it."""

    def __init__(self, bus: KafkaBus) -> None:
        self.inner = bus
        self.topics = bus.topics
        self.failures = 0
        self.consumers: list[KafkaConsumer] = []

    async def start(self) -> None:
        await self.inner.start()

    async def publish_many(self, messages: Sequence[OutMessage]) -> None:
        try:
            await self.inner.publish_many(messages)
        except Exception:
            self.failures += 1
            raise

    def consumer(self, group: str, topics: Sequence[str]) -> Consumer:
        consumer = self.inner.consumer(group, topics)
        self.consumers.append(consumer)
        return consumer

    async def close(self) -> None:
        await self.inner.close()


async def _watch(
    name: str, unhealthy: Callable[[], str | None], stop: asyncio.Event, why: list[str]
) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=0.5)
        reason = unhealthy()
        if reason is not None:
            log.error(
                "%s: %s: stopping for a restart (uncommitted work is redelivered)", name, reason
            )
            why.append(reason)
            stop.set()
            return


LIVENESS_S = 60.0  # an event loop that makes no progress this long: the process restarts
STOP_GRACE_S = 45.0  # a stop (signal or watchdog) that takes longer: the process restarts


class _Liveness:
    """Last-resort watchdogs for a stage process. The event loop beats every 2 s. A Python
    thread exits the process (75, for a restart) if the loop stalls for LIVENESS_S or a stop
    takes longer than STOP_GRACE_S; faulthandler's C thread, which needs no GIL, dumps every
    stack and exits (1) 30 s after that if even Python threads can't run. Uncommitted work
    is redelivered to the restarted process: exiting hard loses nothing."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.beat = time.monotonic()
        self.stopping_since: float | None = None
        self.done = threading.Event()

    async def run(self) -> None:
        thread = threading.Thread(target=self._watch, name=f"{self.name}-liveness", daemon=True)
        thread.start()
        try:
            while True:
                self.beat = time.monotonic()
                faulthandler.dump_traceback_later(LIVENESS_S + STOP_GRACE_S + 30, exit=True)
                await asyncio.sleep(2.0)
        finally:
            faulthandler.cancel_dump_traceback_later()
            self.done.set()

    def _watch(self) -> None:
        while not self.done.wait(1.0):
            now = time.monotonic()
            stalled = now - self.beat
            stopping = now - self.stopping_since if self.stopping_since is not None else 0.0
            if stalled > LIVENESS_S or stopping > STOP_GRACE_S:
                what = (
                    f"event loop stalled {stalled:.0f} s"
                    if stalled > LIVENESS_S
                    else (f"stop still running after {stopping:.0f} s")
                )
                log.error(
                    "%s: %s: exiting for a restart; every thread's stack follows", self.name, what
                )
                faulthandler.dump_traceback(all_threads=True)
                os._exit(RestartRequired.exit_code)


async def _run_stage(
    name: str,
    bus: Bus,
    mains: Sequence[Callable[[asyncio.Event], Coroutine[Any, Any, None]]],
    stats: Callable[[], dict[str, Any]],
    stop: asyncio.Event,
    closers: Sequence[Callable[[], Awaitable[None]]] = (),
    unhealthy: Callable[[], str | None] | None = None,
) -> None:
    """Run a stage's loops until `stop`, then close in order: loops (they commit and close
    their consumers), then the producer (flush), then the rest. If `unhealthy` says so, the
    stage stops the same way and raises RestartRequired."""
    log.info("%s: running (group %s)", name, stats().get("group"))
    liveness = _Liveness(name)
    beating = asyncio.create_task(liveness.run(), name=f"{name}-liveness")
    why: list[str] = []
    tasks = [asyncio.create_task(main(stop), name=f"{name}-{i}") for i, main in enumerate(mains)]
    tasks.append(asyncio.create_task(_log_stats(name, stats, stop), name=f"{name}-stats"))
    if unhealthy is not None:
        tasks.append(asyncio.create_task(_watch(name, unhealthy, stop, why), name=f"{name}-watch"))
    stopper = asyncio.create_task(stop.wait())
    try:
        # A loop that dies on its own (a bug, a lost broker for good) takes the process down,
        # so a supervisor restarts it, rather than leaving a half-alive stage in its group.
        done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
        failed = [t for t in done if t is not stopper and t.exception() is not None]
        stop.set()
        liveness.stopping_since = time.monotonic()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for task, result in zip(tasks, results, strict=True):
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                log.error("%s: %s failed", name, task.get_name(), exc_info=result)
        if failed:
            raise RuntimeError(f"{name}: a loop failed") from failed[0].exception()
        if why:
            raise RestartRequired(f"{name}: {why[0]}")
    finally:
        stopper.cancel()
        await bus.close()
        for close in closers:
            await close()
        beating.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beating
        log.info("%s: stopped; %s", name, stats())


# ---------------------------------------------------------------------------- stages


async def run_worker(
    settings: Settings, stop: asyncio.Event, *, provider: Provider | None = None
) -> None:
    topics = topics_for(settings)
    bus = FailFastBus(make_bus(settings, topics))
    await bus.start()
    llm = provider or make_provider(settings)
    metrics = Metrics()
    worker = Worker(
        llm,
        topics,
        worker_config(settings),
        retry_policy(settings),
        metrics=metrics,
    )
    group = group_for(settings, "worker")
    runner = ConcurrentRunner(
        "worker",
        bus,
        bus.consumer(group, [topics.questions]),
        worker.handle,
        concurrency=settings.llm_concurrency,
        dead_letter_topic=topics.dead_letter,
        metrics=metrics,
    )
    # A stop waits this long for LLM calls in flight, then hands the rest back (uncommitted),
    # well before the stop watchdog (STOP_GRACE_S) would exit the process.
    runner.drain_timeout_s = min(settings.shutdown_timeout_s, STOP_GRACE_S - 10)
    observers = _observers(settings, metrics, bus, group, [topics.questions])

    def stats() -> dict[str, Any]:
        return {"group": group, **_runner_stats(runner), **worker.stats.as_dict()}

    await _run_stage(
        "worker", bus, [runner.run, *observers], stats, stop, [llm.aclose], _publish_failed(bus)
    )


async def run_judge(settings: Settings, stop: asyncio.Event) -> None:
    topics = topics_for(settings)
    bus = FailFastBus(make_bus(settings, topics))
    await bus.start()
    metrics = Metrics()
    judge = Judge(
        get_scorer(settings.scorer),
        gate_config(settings),
        topics,
        metrics=metrics,
    )
    group = group_for(settings, "judge")
    runner = BatchRunner(
        "judge",
        bus,
        bus.consumer(group, [topics.generated]),
        judge.handle_batch,
        max_batch=256,
        metrics=metrics,
    )
    observers = _observers(settings, metrics, bus, group, [topics.generated])

    def stats() -> dict[str, Any]:
        return {
            "group": group,
            **_runner_stats(runner),
            "decisions": dict(judge.decisions),
            "unscored": judge.unscored,
        }

    await _run_stage(
        "judge", bus, [runner.run, *observers], stats, stop, unhealthy=_batch_failed(bus, runner)
    )


async def run_store(
    settings: Settings, stop: asyncio.Event, *, repo: Repository | None = None
) -> None:
    topics = topics_for(settings)
    bus = FailFastBus(make_bus(settings, topics))
    await bus.start()
    repository: Repository = (
        repo if repo is not None else await asyncio.to_thread(open_repository, settings.db)
    )
    metrics = Metrics()
    store = Store(repository, topics, metrics=metrics)
    group = group_for(settings, "store")
    runner = BatchRunner(
        "store",
        bus,
        bus.consumer(group, store.subscriptions()),
        store.handle_batch,
        max_batch=2000,
        poll_timeout_s=0.05,
        metrics=metrics,
    )
    observers = _observers(settings, metrics, bus, group, store.subscriptions())

    def stats() -> dict[str, Any]:
        return {
            "group": group,
            **_runner_stats(runner),
            "written": store.written,
            "dead_letters": store.dead_letters,
        }

    await _run_stage(
        "store",
        bus,
        [runner.run, *observers],
        stats,
        stop,
        [_closer(repository)] if repo is None else [],
        _batch_failed(bus, runner),
    )


async def run_retrier(
    settings: Settings, stop: asyncio.Event, *, repo: Repository | None = None
) -> None:
    topics = topics_for(settings)
    bus = FailFastBus(make_bus(settings, topics))
    await bus.start()
    repository: Repository = (
        repo if repo is not None else await asyncio.to_thread(open_repository, settings.db)
    )
    group = group_for(settings, "retrier")
    metrics = Metrics()
    retrier = Retrier(bus, bus.consumer(group, [topics.delayed]), topics, metrics=metrics)
    observers = _observers(settings, metrics, bus, group, [topics.delayed])
    worker_group = group_for(settings, "worker")

    async def backlog() -> int:
        lag = await asyncio.to_thread(bus.inner.lag, worker_group, [topics.questions])
        return sum(lag.values())

    sweep = StaleSweep(
        repository, bus, topics, older_than_s=settings.stale_after_s, backlog=backlog
    )

    def stats() -> dict[str, Any]:
        return {
            "group": group,
            "held": retrier.held,
            "resumed": retrier.resumed,
            "stale_republished": sweep.republished,
            "sweeps_skipped": sweep.skipped,
        }

    await _run_stage(
        "retrier",
        bus,
        [retrier.run, sweep.run, *observers],
        stats,
        stop,
        [_closer(repository)] if repo is None else [],
        _publish_failed(bus),
    )


def build_gateway_app(settings: Settings, *, repo: Repository | None = None) -> FastAPI:
    """QuestionService over Kafka and the shared repository, behind the HTTP app."""
    from qaloop.gateway.guard import guard_gateway, kafka_ready, unfinished_count
    from qaloop.gateway.http import create_app

    topics = topics_for(settings)
    bus = make_bus(settings, topics)
    repository: Repository = repo if repo is not None else open_repository(settings.db)
    cache: Cache[str, CachedAnswer] = make_cache(
        settings.cache_policy, settings.cache_size, settings.cache_ttl_s or None
    )
    service = QuestionService(
        repository, bus, topics, cache, failed_recheck_s=settings.failed_recheck_s
    )
    # API keys and admission (backlog: a storage count, refreshed off the request path).
    auth = guard_gateway(
        service, settings, backlog=lambda: unfinished_count(repository), backlog_is_slow=True
    )
    # The dashboard's flow and Prometheus see every stage's backlog from here.
    lag = KafkaLag(bus, _stage_groups(settings, topics))
    service.metrics.watch_lag(lag)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        await bus.start()
        flusher = asyncio.create_task(service.run_hit_flusher(stop))
        lag_probe = asyncio.create_task(lag.run(stop))
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
            await service.flush_hits()
            await bus.close()
            if repo is None:
                await asyncio.to_thread(repository.close)
            log.info("gateway: stopped; %s", service.stats())

    def stats() -> dict[str, Any]:
        # Accepted here is not final here: the store of another process finishes questions.
        body = service.stats()
        body["mode"] = "distributed"
        return body

    return create_app(
        service,
        settings,
        stats=stats,
        auth=auth,
        ready=kafka_ready(service, bus, topics),
        lifespan=lifespan,
    )


def run_gateway(settings: Settings) -> None:
    """Blocking: uvicorn (one worker, uvloop/httptools, no access log) handles SIGTERM/SIGINT
    and the app's lifespan closes the bus and the repository."""
    from qaloop.gateway.server import bind_socket, http_limits, serve

    sock = bind_socket(settings.host, settings.port)  # before the app's lifespan starts
    serve(
        build_gateway_app(settings),
        settings.host,
        settings.port,
        settings.log_level,
        limits=http_limits(settings),
        shutdown_timeout_s=settings.shutdown_timeout_s,
        sock=sock,
    )


STAGES: dict[str, Callable[[Settings, asyncio.Event], Awaitable[None]]] = {
    "worker": run_worker,
    "judge": run_judge,
    "store": run_store,
    "retrier": run_retrier,
}


def run_stage_process(service: str, settings: Settings) -> None:
    """Entry point of one stage process: its own event loop (uvloop when installed) and
    signal handlers; returns when the stage has stopped cleanly."""
    if service == "gateway":
        run_gateway(settings)
        return
    stage = STAGES[service]
    # `kill -USR1 <pid>` writes every thread's stack to stderr: for a stage that seems stuck.
    faulthandler.register(signal.SIGUSR1, all_threads=True)

    async def main() -> None:
        stop = asyncio.Event()
        install_stop_signals(stop)
        await stage(settings, stop)

    try:
        try:
            import uvloop
        except ImportError:
            asyncio.run(main())
        else:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                runner.run(main())
    except RestartRequired as exc:
        log.error("%s (exit %d)", exc, exc.exit_code)
        raise SystemExit(exc.exit_code) from None


# ---------------------------------------------------------------------------- the sweep


class StaleSweep:
    """Re-publishes questions stored as accepted but never seen progressing (the gateway died
    between its insert and its publish, or the publish failed after the insert).

    A question waiting behind a backlog looks the same from storage, so the sweep runs only
    while the worker group's backlog on the pending topic is small, and it re-publishes a
    question at most once per `older_than_s`. A re-publish of a question that was in fact
    published only costs an LLM call: every write downstream is idempotent.
    """

    def __init__(
        self,
        repo: Repository,
        bus: Bus,
        topics: Topics,
        *,
        older_than_s: float,
        backlog: Callable[[], Awaitable[int]] | None = None,
        max_backlog: int = 1000,
        limit: int = 1000,
        every_s: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.repo = repo
        self.bus = bus
        self.topics = topics
        self.older_than_s = older_than_s
        self.backlog = backlog
        self.max_backlog = max_backlog
        self.limit = limit
        self.every_s = every_s if every_s is not None else min(30.0, max(1.0, older_than_s / 4))
        self.clock = clock
        self.republished = 0
        self.skipped = 0
        self._recent: dict[str, float] = {}

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.every_s)
            if stop.is_set():
                return
            try:
                await self.sweep_once()
            except Exception:
                log.exception("stale sweep failed (will retry)")

    async def sweep_once(self) -> int:
        if self.backlog is not None:
            pending = await self.backlog()
            if pending > self.max_backlog:
                self.skipped += 1
                log.info("stale sweep skipped: %d questions still pending", pending)
                return 0
        candidates = await asyncio.to_thread(self._stale)
        now = self.clock()
        self._recent = {q: t for q, t in self._recent.items() if t > now - self.older_than_s}
        fresh = [e for e in candidates if e.question_id not in self._recent]
        if not fresh:
            return 0
        await self.bus.publish_many(
            [out(self.topics.questions, e.evolve(state=QuestionState.QUEUED)) for e in fresh]
        )
        for e in fresh:
            self._recent[e.question_id] = now
            log.warning(
                "question %s: stuck in queued for %.0f s, re-published",
                e.question_id,
                now - e.first_seen,
            )
        self.republished += len(fresh)
        return len(fresh)

    def _stale(self) -> list[Envelope]:
        if isinstance(self.repo, StaleQueries):
            return self.repo.stale(self.older_than_s, self.limit)
        # Fallback for a repository without the query: unfinished, never progressed.
        cutoff = self.clock() - self.older_than_s
        found: list[Envelope] = []
        for e in self.repo.unfinished():
            if (
                e.state is QuestionState.QUEUED
                and e.attempt == 1
                and [ev.kind for ev in e.history] == [EventKind.ACCEPTED]
                and e.first_seen < cutoff
                and all(ev.seq == 0 for ev in self.repo.events(e.question_id))
            ):
                found.append(e)
                if len(found) >= self.limit:
                    break
        return found


# ---------------------------------------------------------------------------- helpers


Main = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


def _stage_groups(settings: Settings, topics: Topics) -> dict[str, list[str]]:
    t = topics
    return {
        group_for(settings, "worker"): [t.questions],
        group_for(settings, "judge"): [t.generated],
        group_for(settings, "store"): [
            t.questions,
            t.generated,
            t.delayed,
            t.validated,
            t.dead_letter,
        ],
        group_for(settings, "retrier"): [t.delayed],
    }


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


UNSTEADY_LIMIT_S = 60.0  # a group member not steady for this long is restarted


def _publish_failed(bus: FailFastBus) -> Callable[[], str | None]:
    def check() -> str | None:
        if bus.failures:
            return f"{bus.failures} publish(es) failed"
        for consumer in bus.consumers:
            unsteady = consumer.unsteady_for()
            if unsteady > UNSTEADY_LIMIT_S:
                return f"not a steady member of {consumer.group} for {unsteady:.0f} s"
        return None

    return check


def _batch_failed(bus: FailFastBus, runner: BatchRunner) -> Callable[[], str | None]:
    def check() -> str | None:
        if runner.stats.handler_errors:  # a batch neither written nor committed
            return f"{runner.stats.handler_errors} batch(es) failed"
        return _publish_failed(bus)()

    return check


def _runner_stats(runner: ConcurrentRunner | BatchRunner) -> dict[str, Any]:
    s = runner.stats
    return {
        "consumed": s.consumed,
        "produced": s.produced,
        "dead_lettered": s.dead_lettered,
        "handler_errors": s.handler_errors,
    }


def _closer(repo: Repository) -> Callable[[], Awaitable[None]]:
    async def close() -> None:
        await asyncio.to_thread(repo.close)

    return close
