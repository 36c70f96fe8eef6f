"""The consume -> handle -> produce -> commit loop every stage runs on.

Offsets are committed only after a message's outputs are durably published (at-least-once);
downstream writes are idempotent, so a redelivery never duplicates a row. A message that can't
be decoded, or whose handler raises, becomes a dead-letter record with the reason, and the loop
carries on: one bad message never kills a consumer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from qaloop.bus.base import Bus, Consumer, Message, OutMessage
from qaloop.core import codec
from qaloop.core.model import Envelope
from qaloop.core.wire import poison
from qaloop.observability.logs import question_fields
from qaloop.observability.metrics import Metrics

log = logging.getLogger(__name__)

OneHandler = Callable[[Envelope], Awaitable[list[OutMessage]]]
BatchHandler = Callable[[list[Envelope]], Awaitable[list[OutMessage]]]


def observe_queue_wait(metrics: Metrics, stage: str, messages: Sequence[Message]) -> None:
    """Queue wait = consume time minus the message's timestamp (when the bus gave one)."""
    now = time.time()
    by_topic: dict[str, list[float]] = {}
    for m in messages:
        if m.timestamp > 0:
            by_topic.setdefault(m.topic, []).append(max(0.0, now - m.timestamp))
    for topic, waits in by_topic.items():
        histogram = metrics.queue_wait.labels(stage, topic)
        for wait in waits:
            histogram.observe(wait)


@dataclass
class StageStats:
    consumed: int = 0
    produced: int = 0
    dead_lettered: int = 0
    handler_errors: int = 0
    busy_s: float = 0.0
    extra: dict[str, int] = field(default_factory=dict)


@dataclass
class _TickBatch:
    """The outputs and messages of every handler that finished in one event-loop iteration.
    Each message holds a concurrency slot until the batch is published (or failed to be)."""

    outputs: list[OutMessage] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)


class ConcurrentRunner:
    """Up to `concurrency` messages handled at once (the LLM worker: calls overlap).

    The outputs of the handlers that finish in the same event-loop iteration are published in
    one `publish_many` and their offsets committed in one `commit`, in the next iteration (no
    timer: nothing waits longer than it did). Published one at a time from 256 tasks, a
    produce call took the worker ~3x the CPU of one in the judge's batches (16 against 6 µs)
    and ~330 µs of wall time (BENCHMARKS.md, "the worker's and the broker's CPU").
    """

    def __init__(
        self,
        name: str,
        bus: Bus,
        consumer: Consumer,
        handler: OneHandler,
        *,
        concurrency: int,
        dead_letter_topic: str,
        poll_timeout_s: float = 0.2,
        metrics: Metrics | None = None,
    ) -> None:
        self.name = name
        self.bus = bus
        self.consumer = consumer
        self.handler = handler
        self.concurrency = concurrency
        self.dead_letter_topic = dead_letter_topic
        self.poll_timeout_s = poll_timeout_s
        self.stats = StageStats()
        self.metrics = metrics if metrics is not None else Metrics()
        self._consumed = self.metrics.consumed.labels(name)
        self._produced = self.metrics.produced.labels(name)
        # Messages holding a slot: being handled, or waiting for their batch's publish.
        self.metrics.in_flight.labels(name).set_function(
            lambda: self.concurrency - self._slots._value
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(concurrency)
        self._batch: _TickBatch | None = None
        self._sends: set[asyncio.Task[None]] = set()
        # Bound of the drain on stop (None: wait for every call); see qaloop.lifecycle.
        self.drain_timeout_s: float | None = None

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                await self._slots.acquire()
                self._slots.release()
                free = self._slots._value
                messages = await self.consumer.poll(max(1, free), self.poll_timeout_s)
                if messages:
                    observe_queue_wait(self.metrics, self.name, messages)
                    self._consumed.inc(len(messages))
                for message in messages:
                    await self._slots.acquire()
                    task = asyncio.create_task(self._handle(message))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
        finally:
            await self._drain()
            await self.consumer.close()

    async def _drain(self) -> None:
        """Let the calls in flight finish (their outputs are published and committed), for at
        most `drain_timeout_s`; cancel the rest, uncommitted, so they are redelivered."""
        if self._tasks:
            await self._drain_tasks()
        self._flush()  # the last handlers' batch, if its flush has not run yet
        if self._sends:  # a batch being published: its commit follows its publish, never alone
            await asyncio.wait(set(self._sends), timeout=self.drain_timeout_s)

    async def _drain_tasks(self) -> None:
        _, pending = await asyncio.wait(set(self._tasks), timeout=self.drain_timeout_s)
        if pending:
            log.warning(
                "%s: %d message(s) still in flight after %.0f s: handing them back uncommitted",
                self.name,
                len(pending),
                self.drain_timeout_s or 0,
            )
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _handle(self, message: Message) -> None:
        try:
            self.stats.consumed += 1
            outputs = await handle_one(self, message)
        except BaseException:  # cancelled (a drain that timed out): nothing to publish
            self._slots.release()
            raise
        self._join_batch(outputs, message)

    def _join_batch(self, outputs: list[OutMessage], message: Message) -> None:
        """Join this iteration's batch; its send releases the message's slot once published
        (then committed) or failed. The handler's task ends here: no future per message to
        wait on, nor the task step that woke it (bench_worker.py --in-process)."""
        batch = self._batch
        if batch is None:
            batch = self._batch = _TickBatch()
            asyncio.get_running_loop().call_soon(self._flush)
        batch.outputs.extend(outputs)
        batch.messages.append(message)

    def _flush(self) -> None:
        batch, self._batch = self._batch, None
        if batch is not None:
            task = asyncio.ensure_future(self._send(batch))
            self._sends.add(task)
            task.add_done_callback(self._sends.discard)

    async def _send(self, batch: _TickBatch) -> None:
        try:
            if batch.outputs:
                await self.bus.publish_many(batch.outputs)
                self.stats.produced += len(batch.outputs)
                self._produced.inc(len(batch.outputs))
            await self.consumer.commit(batch.messages)
        except Exception:  # the publish itself failed: leave uncommitted, they will come back
            log.exception(
                "%s: could not publish the outputs of %d message(s) (offsets %s)",
                self.name,
                len(batch.messages),
                ", ".join(str(m.offset) for m in batch.messages[:10]),
            )
        finally:
            for _ in batch.messages:
                self._slots.release()


async def handle_one(runner: ConcurrentRunner, message: Message) -> list[OutMessage]:
    try:
        envelope = codec.decode(message.value)
    except codec.InvalidMessage as exc:
        runner.stats.dead_lettered += 1
        runner.metrics.poison.labels(runner.name).inc()
        log.warning("%s: dead-lettering %s@%s: %s", runner.name, message.topic, message.offset, exc)
        return [poison(runner.dead_letter_topic, message, str(exc))]
    try:
        return await runner.handler(envelope)
    except Exception as exc:
        runner.stats.handler_errors += 1
        runner.metrics.handler_errors.labels(runner.name).inc()
        log.exception(
            "%s: handler failed on question %s",
            runner.name,
            envelope.question_id,
            extra=question_fields(envelope, stage=runner.name),
        )
        return [poison(runner.dead_letter_topic, message, f"handler error: {exc!r}")]


class BatchRunner:
    """Messages handled a batch at a time (the judge scores in batches; the store writes one
    transaction per batch)."""

    def __init__(
        self,
        name: str,
        bus: Bus,
        consumer: Consumer,
        handler: Callable[[Sequence[Message]], Awaitable[list[OutMessage]]],
        *,
        max_batch: int,
        poll_timeout_s: float = 0.2,
        metrics: Metrics | None = None,
    ) -> None:
        self.name = name
        self.bus = bus
        self.consumer = consumer
        self.handler = handler
        self.max_batch = max_batch
        self.poll_timeout_s = poll_timeout_s
        self.stats = StageStats()
        self.metrics = metrics if metrics is not None else Metrics()
        self._in_flight = 0
        self.metrics.in_flight.labels(name).set_function(lambda: self._in_flight)

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                messages = await self.consumer.poll(self.max_batch, self.poll_timeout_s)
                if not messages:
                    continue
                started = time.perf_counter()
                self.stats.consumed += len(messages)
                observe_queue_wait(self.metrics, self.name, messages)
                self.metrics.consumed.labels(self.name).inc(len(messages))
                self._in_flight = len(messages)
                try:
                    outputs = await self.handler(messages)
                    if outputs:
                        await self.bus.publish_many(outputs)
                        self.stats.produced += len(outputs)
                        self.metrics.produced.labels(self.name).inc(len(outputs))
                    await self.consumer.commit(messages)
                except Exception:
                    # Nothing committed: the batch comes back after a restart. Don't spin on it.
                    self.stats.handler_errors += 1
                    self.metrics.handler_errors.labels(self.name).inc()
                    log.exception("%s: batch of %d failed", self.name, len(messages))
                    await asyncio.sleep(1.0)
                finally:
                    self._in_flight = 0
                self.stats.busy_s += time.perf_counter() - started
        finally:
            await self.consumer.close()


def decode_batch(
    messages: Sequence[Message], dead_letter_topic: str | None
) -> tuple[list[tuple[Envelope, Message]], list[OutMessage]]:
    """Split a batch into decoded envelopes and dead-letter records (when this stage owns the
    topic; a projection that doesn't own it passes None and just skips what it can't read)."""
    good: list[tuple[Envelope, Message]] = []
    bad: list[OutMessage] = []
    for message in messages:
        try:
            good.append((codec.decode(message.value), message))
        except codec.InvalidMessage as exc:
            if dead_letter_topic is not None:
                log.warning("dead-lettering %s@%s: %s", message.topic, message.offset, exc)
                bad.append(poison(dead_letter_topic, message, str(exc)))
    return good, bad
