"""Supervision of one stage process: signals, health watchdogs, and the run/stop lifecycle.

Stopping (SIGTERM/SIGINT): the stage stops polling, finishes what it holds (publishing its
outputs), commits, leaves its group and flushes its producer. A SIGKILL loses nothing either:
uncommitted messages are redelivered and every downstream write is idempotent. A stage that
can't make progress any more (a failed publish, a failed batch, a consumer that never becomes
a steady group member, a stalled event loop) stops the same way and exits with 75 for its
supervisor (`qaloop up`, compose, k8s) to restart it from the committed position.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import gc
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from qaloop.bus.base import Bus, Consumer, OutMessage
from qaloop.services.runner import BatchRunner, ConcurrentRunner
from qaloop.storage.base import Repository

if TYPE_CHECKING:
    from qaloop.bus.kafka import KafkaBus, KafkaConsumer

log = logging.getLogger(__name__)

STATS_EVERY_S = 10.0
Main = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


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


def freeze_startup_heap() -> None:
    """Move everything built at start-up (modules, settings, the wiring, the model) out of the
    collector's reach: a full collection of a service's ~75,000 start-up objects stalls its
    event loop ~40 ms, a tail every question in flight then pays (`gc.freeze`)."""
    gc.collect()
    gc.freeze()


async def run_stage(
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
    freeze_startup_heap()
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


def run_process(stage: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run one stage as this process: its own event loop (uvloop when installed) and signal
    handlers; returns when the stage has stopped cleanly, exits 75 when it asked for a
    restart."""
    # `kill -USR1 <pid>` writes every thread's stack to stderr: for a stage that seems stuck;
    # a crash in C code (SIGSEGV, SIGABRT in librdkafka) writes them too, before the exit.
    faulthandler.enable(all_threads=True)
    faulthandler.register(signal.SIGUSR1, all_threads=True)

    async def main() -> None:
        stop = asyncio.Event()
        install_stop_signals(stop)
        await stage(stop)

    code = 0
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
        code = exc.exit_code
    _exit_if_librdkafka_busy(code)
    if code:
        raise SystemExit(code)


def _exit_if_librdkafka_busy(code: int) -> None:
    """A consumer close that timed out is still running inside librdkafka on a daemon thread;
    finalising the interpreter under it can crash the process (its callbacks would call into
    a dying interpreter). Exit without finalising: everything it held is uncommitted, so it is
    redelivered, and the logs are flushed first."""
    consumers = sys.modules.get("qaloop.bus.kafka.consumer")  # not imported: no consumer
    if consumers is not None and consumers.closes_still_running():
        log.warning("a Kafka consumer is still closing: exiting without finalising (%d)", code)
        logging.shutdown()
        os._exit(code)


UNSTEADY_LIMIT_S = 60.0  # a group member not steady for this long is restarted


def publish_failed(bus: FailFastBus) -> Callable[[], str | None]:
    def check() -> str | None:
        if bus.failures:
            return f"{bus.failures} publish(es) failed"
        for consumer in bus.consumers:
            unsteady = consumer.unsteady_for()
            if unsteady > UNSTEADY_LIMIT_S:
                return f"not a steady member of {consumer.group} for {unsteady:.0f} s"
        return None

    return check


def batch_failed(bus: FailFastBus, runner: BatchRunner) -> Callable[[], str | None]:
    def check() -> str | None:
        if runner.stats.handler_errors:  # a batch neither written nor committed
            return f"{runner.stats.handler_errors} batch(es) failed"
        return publish_failed(bus)()

    return check


def runner_stats(runner: ConcurrentRunner | BatchRunner) -> dict[str, Any]:
    s = runner.stats
    return {
        "consumed": s.consumed,
        "produced": s.produced,
        "dead_lettered": s.dead_lettered,
        "handler_errors": s.handler_errors,
    }


def closer(repo: Repository) -> Callable[[], Awaitable[None]]:
    async def close() -> None:
        await asyncio.to_thread(repo.close)

    return close
