"""The producer: idempotent, acks=all; `publish_many` hands every message to librdkafka and
returns only when the broker has acknowledged all of them. Delivery reports are served on the
event loop's thread (a loop timer polls the producer) and bridged to one asyncio future per
call. A failed delivery raises KafkaDeliveryError: the caller leaves its input uncommitted
and it comes back."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from confluent_kafka import KafkaError, Producer

from qaloop.bus.base import OutMessage
from qaloop.bus.kafka.config import KafkaSettings, producer_config
from qaloop.bus.kafka.errors import KafkaDeliveryError

log = logging.getLogger(__name__)


class _Delivery:
    """Counts the delivery reports of one publish_many call and completes one asyncio future
    when the last one arrives. Reports are served on the event loop's thread (the bus polls
    the producer from a loop timer), so no lock and no cross-thread wake-up per message."""

    __slots__ = ("error", "future", "remaining")

    def __init__(self, loop: asyncio.AbstractEventLoop, count: int) -> None:
        self.future: asyncio.Future[None] = loop.create_future()
        self.remaining = count
        self.error: str | None = None

    def report(self, err: KafkaError | None, _msg: object) -> None:
        self.settle(1, None if err is None else str(err))

    def settle(self, count: int, error: str | None) -> None:
        if error is not None and self.error is None:
            self.error = error
        self.remaining -= count
        if self.remaining == 0 and not self.future.done():
            if self.error is not None:
                self.future.set_exception(KafkaDeliveryError(self.error))
            else:
                self.future.set_result(None)


class KafkaProducer:
    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        self._producer: Producer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pump_handle: asyncio.TimerHandle | None = None

    @property
    def started(self) -> bool:
        return self._producer is not None

    def start(self) -> None:
        """On the event loop that will publish."""
        if self._producer is not None:
            return
        self._producer = Producer(producer_config(self.settings))
        self._loop = asyncio.get_running_loop()
        self._pump()

    def _pump(self) -> None:
        """Serve delivery reports: every millisecond while messages await one, else twice a
        second (librdkafka's other callbacks)."""
        self._pump_handle = None
        producer, loop = self._producer, self._loop
        if producer is None or loop is None or loop.is_closed():
            return
        producer.poll(0)
        self._pump_handle = loop.call_later(0.001 if len(producer) else 0.5, self._pump)

    def _pump_soon(self) -> None:
        handle, loop = self._pump_handle, self._loop
        if loop is not None and (handle is None or handle.when() > loop.time() + 0.001):
            if handle is not None:
                handle.cancel()
            self._pump_handle = loop.call_later(0.001, self._pump)

    async def close(self) -> None:
        producer = self._producer
        if producer is None:
            return
        deadline = time.monotonic() + 30
        while len(producer) and time.monotonic() < deadline:  # flush, serving reports here
            producer.poll(0)
            await asyncio.sleep(0.005)
        if len(producer):
            log.warning("closing with %d undelivered messages", len(producer))
        if self._pump_handle is not None:
            self._pump_handle.cancel()
            self._pump_handle = None
        self._producer = None
        self._loop = None

    async def publish_many(self, messages: Sequence[OutMessage]) -> None:
        if not messages:
            return
        producer = self._producer
        if producer is None:
            raise RuntimeError("KafkaBus.start() was not called (or the bus is closed)")
        delivery = _Delivery(asyncio.get_running_loop(), len(messages))
        for i, m in enumerate(messages):
            key = m.key.encode("utf-8", "replace")
            headers: list[tuple[str, str | bytes | None]] = [
                (k, v.encode("utf-8", "replace")) for k, v in m.headers.items()
            ]
            try:
                while True:
                    try:
                        producer.produce(
                            m.topic,
                            value=m.value,
                            key=key,
                            headers=headers,
                            on_delivery=delivery.report,
                        )
                        break
                    except BufferError:  # local queue full: wait for deliveries to drain it
                        self._pump_soon()
                        await asyncio.sleep(0.005)
            except Exception as exc:  # e.g. message too large: the rest is not sent
                delivery.settle(len(messages) - i, f"produce to {m.topic} failed: {exc!r}")
                break
        self._pump_soon()
        await delivery.future
