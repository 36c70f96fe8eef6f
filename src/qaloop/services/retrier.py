"""The retrier: holds parked questions until their due time, then puts them back on the
pending-questions topic. Nothing sleeps in a poll loop: held messages wait in a heap (their
offsets uncommitted, so a crash redelivers them), and the consumer is paused, still polling
to stay in its group, while the heap is full."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import Callable

from qaloop.bus.base import Bus, Consumer, Message, Topics
from qaloop.core import codec
from qaloop.core.model import Envelope, EventKind
from qaloop.core.wire import out, poison
from qaloop.observability.logs import log_event
from qaloop.observability.metrics import Metrics

log = logging.getLogger(__name__)


class Retrier:
    def __init__(
        self,
        bus: Bus,
        consumer: Consumer,
        topics: Topics,
        *,
        max_held: int = 100_000,
        poll_timeout_s: float = 0.2,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
    ) -> None:
        self.bus = bus
        self.consumer = consumer
        self.topics = topics
        self.max_held = max_held
        self.poll_timeout_s = poll_timeout_s
        self.clock = clock
        self._heap: list[tuple[float, int, Envelope, Message]] = []
        self._order = itertools.count()
        self.resumed = 0
        self._paused = False
        self.metrics = metrics if metrics is not None else Metrics()
        self.metrics.watch_gauge(
            "qaloop_parked_questions", "Parked questions held by the retrier", lambda: self.held
        )

    @property
    def held(self) -> int:
        return len(self._heap)

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                await self._release_due()
                wait = self.poll_timeout_s
                if self._heap:
                    wait = max(0.0, min(wait, self._heap[0][0] - self.clock()))
                self._flow_control()
                messages = await self.consumer.poll(1000, wait)
                for message in messages:
                    await self._hold(message)
        finally:
            await self.consumer.close()

    def _flow_control(self) -> None:
        if not self._paused and len(self._heap) >= self.max_held:
            self.consumer.pause()
            self._paused = True
        elif self._paused and len(self._heap) < self.max_held // 2:
            self.consumer.resume()
            self._paused = False

    async def _hold(self, message: Message) -> None:
        try:
            envelope = codec.decode(message.value)
        except codec.InvalidMessage as exc:
            log.warning("retrier: dead-lettering %s@%s: %s", message.topic, message.offset, exc)
            self.metrics.poison.labels("retrier").inc()
            await self.bus.publish_many([poison(self.topics.dead_letter, message, str(exc))])
            await self.consumer.commit([message])
            return
        due = envelope.due_at if envelope.due_at is not None else self.clock()
        heapq.heappush(self._heap, (due, next(self._order), envelope, message))

    async def _release_due(self) -> None:
        now = self.clock()
        due: list[tuple[Envelope, Message]] = []
        while self._heap and self._heap[0][0] <= now:
            _, _, envelope, message = heapq.heappop(self._heap)
            due.append((envelope, message))
        if not due:
            return
        outputs = []
        for envelope, _ in due:
            parked_for = now - (envelope.history[-1].at if envelope.history else now)
            resumed = envelope.with_event(EventKind.RESUMED, now, wait_s=parked_for).evolve(
                due_at=None
            )
            log_event(log, "resumed", resumed, "after %.2f s parked", parked_for, state="queued")
            self.metrics.resumed_wait.observe(max(0.0, parked_for))
            outputs.append(out(self.topics.questions, resumed))
        await self.bus.publish_many(outputs)
        await self.consumer.commit([m for _, m in due])
        self.resumed += len(due)
        self.metrics.resumed.inc(len(due))
