"""The Kafka bus (confluent-kafka / librdkafka), honouring the semantics of qaloop.bus.base.

Producer: idempotent, acks=all; `publish_many` hands every message to librdkafka and returns
only when the broker has acknowledged all of them (delivery reports, served by a background
thread that polls the producer, are bridged to one asyncio future per call). A failed delivery
raises KafkaDeliveryError: the caller leaves its input uncommitted and it comes back.

Consumer: no auto-commit. `poll` runs `consume()` on the consumer's own thread, so the event
loop stays free; `commit` marks messages done in an OffsetTracker and commits, with explicit
offsets, only the contiguous done prefix of each partition. Commits are asynchronous and
coalesced (one request in flight, at most one per 50 ms; a failed one is retried with the
next): outputs are acknowledged before the offsets that cover them are committed, which is the
order at-least-once needs, and a blocking commit can deadlock against a group coordinator that
waits for this consumer to poll (seen on a broker restart). Rebalances: on revoke, the done
prefix of every partition is committed and the tracker forgets the revoked partitions;
messages still in flight there may be redelivered to the new owner, which is harmless because
every downstream write is idempotent. `pause`/`resume` act on every assigned partition (and on
partitions assigned while paused), and the caller keeps polling, so it stays in its group.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

from confluent_kafka import Consumer as RawConsumer
from confluent_kafka import (
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]
from confluent_kafka.cimpl import NewPartitions, NewTopic

from qaloop.bus.base import Message, OffsetTracker, OutMessage, Topics

log = logging.getLogger(__name__)

T = TypeVar("T")

# Commit failures that only mean "the group moved on": the messages come back, nothing is lost.
_REBALANCE_CODES = {
    KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError.ILLEGAL_GENERATION,
    KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError._NO_OFFSET,
    KafkaError._ASSIGNMENT_LOST,
}


class KafkaDeliveryError(RuntimeError):
    """At least one message of a `publish_many` call was not acknowledged by the broker."""


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    bootstrap: str = "127.0.0.1:19092"
    partitions: int = 6  # questions, generated, validated: bounds the useful consumers per group
    cold_partitions: int = 2  # delayed, dead letter
    replication_factor: int = 1
    # with acks=all a write succeeds once this many replicas have it (topics created here)
    min_insync_replicas: int = 1
    session_timeout_ms: int = 10_000  # how long a killed consumer holds its partitions
    linger_ms: float = 5.0
    client_id: str = "qaloop"
    producer: dict[str, Any] = field(default_factory=dict)  # extra librdkafka settings
    consumer: dict[str, Any] = field(default_factory=dict)


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


class KafkaBus:
    def __init__(
        self,
        settings: KafkaSettings | str,
        topics: Topics | None = None,
    ) -> None:
        self.settings = KafkaSettings(settings) if isinstance(settings, str) else settings
        self.topics = topics or Topics()
        self._producer: Producer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pump_handle: asyncio.TimerHandle | None = None
        self._admin_client: AdminClient | None = None

    # ------------------------------------------------------------------ lifecycle

    def topic_partitions(self) -> dict[str, int]:
        s, t = self.settings, self.topics
        return {
            t.questions: s.partitions,
            t.generated: s.partitions,
            t.validated: s.partitions,
            t.delayed: s.cold_partitions,
            t.dead_letter: s.cold_partitions,
        }

    async def start(self) -> None:
        if self._producer is not None:
            return
        await asyncio.to_thread(self._ensure_topics)
        self._producer = Producer(self._producer_config())
        self._loop = asyncio.get_running_loop()
        self._pump()

    def _base_config(self) -> dict[str, Any]:
        return {
            "bootstrap.servers": self.settings.bootstrap,
            "client.id": self.settings.client_id,
        }

    def _producer_config(self) -> dict[str, Any]:
        return {
            **self._base_config(),
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": self.settings.linger_ms,
            "batch.num.messages": 10_000,
            "queue.buffering.max.messages": 500_000,
            "queue.buffering.max.kbytes": 1_048_576,
            **self.settings.producer,
        }

    def _admin(self) -> AdminClient:
        return AdminClient(self._base_config())

    def _ensure_topics(self) -> None:
        """Create the topics (idempotent; never relies on broker auto-creation) and grow the
        partition count of existing ones that have fewer than configured."""
        s = self.settings
        if s.min_insync_replicas > s.replication_factor:
            raise ValueError(
                f"min.insync.replicas {s.min_insync_replicas} > replication factor "
                f"{s.replication_factor}: no acks=all write could ever succeed"
            )
        admin = self._admin()
        wanted = self.topic_partitions()
        existing = admin.list_topics(timeout=30).topics
        new = [
            NewTopic(
                name,
                num_partitions=n,
                replication_factor=s.replication_factor,
                config={"min.insync.replicas": str(s.min_insync_replicas)},
            )
            for name, n in wanted.items()
            if name not in existing
        ]
        if new:
            for name, future in admin.create_topics(new, operation_timeout=30).items():
                try:
                    future.result()
                    log.info("created topic %s (%d partitions)", name, wanted[name])
                except KafkaException as exc:
                    if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                        raise
        grow = [
            NewPartitions(name, n)
            for name, n in wanted.items()
            if name in existing and len(existing[name].partitions) < n
        ]
        if grow:
            for name, future in admin.create_partitions(grow, operation_timeout=30).items():
                future.result()
                log.info("grew topic %s to %d partitions", name, wanted[name])
        # Wait until the metadata shows every partition (a new topic takes a moment).
        deadline = time.monotonic() + 30
        while True:
            meta = admin.list_topics(timeout=10).topics
            if all(
                name in meta and len(meta[name].partitions) >= n and meta[name].error is None
                for name, n in wanted.items()
            ):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"topics not ready after 30 s: {sorted(wanted)}")
            time.sleep(0.1)

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

    # ------------------------------------------------------------------ producing

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

    # ------------------------------------------------------------------ consuming

    def consumer(self, group: str, topics: Sequence[str]) -> KafkaConsumer:
        return KafkaConsumer(self, group, list(topics))

    def consumer_config(self, group: str) -> dict[str, Any]:
        timeout = self.settings.session_timeout_ms
        return {
            **self._base_config(),
            "group.id": group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "cooperative-sticky",
            "session.timeout.ms": timeout,
            "heartbeat.interval.ms": max(500, timeout // 5),
            "fetch.wait.max.ms": 100,
            "enable.partition.eof": False,
            **self.settings.consumer,
        }

    # ------------------------------------------------------------------ observability

    def _admin_cached(self) -> AdminClient:
        if self._admin_client is None:
            self._admin_client = self._admin()
        return self._admin_client

    def lag(self, group: str, topics: Iterable[str]) -> dict[str, int]:
        """Messages not yet committed by `group`, per topic (blocking: call from a thread).
        Two admin requests: the group's committed offsets and the partitions' end offsets."""
        admin = self._admin_cached()
        names = list(topics)
        result = dict.fromkeys(names, 0)
        meta = admin.list_topics(timeout=10).topics
        parts = [TopicPartition(t, p) for t in names if t in meta for p in meta[t].partitions]
        if not parts:
            return result
        request = [ConsumerGroupTopicPartitions(group, parts)]
        answer = admin.list_consumer_group_offsets(request, request_timeout=10)[group].result()
        committed = {(tp.topic, tp.partition): tp.offset for tp in answer.topic_partitions or ()}
        ends = self._offsets_at(admin, parts, _spec("latest"))
        # A partition the group never committed is read from its earliest retained offset.
        missing = [tp for tp in parts if committed.get((tp.topic, tp.partition), -1) < 0]
        starts = self._offsets_at(admin, missing, _spec("earliest")) if missing else {}
        for tp in parts:
            key = (tp.topic, tp.partition)
            position = committed.get(key, -1)
            if position < 0:
                position = starts.get(key, 0)
            result[tp.topic] += max(0, ends.get(key, 0) - position)
        return result

    @staticmethod
    def _offsets_at(
        admin: AdminClient, parts: list[TopicPartition], spec: Any
    ) -> dict[tuple[str, int], int]:
        futures = admin.list_offsets({tp: spec for tp in parts}, request_timeout=10)
        return {(tp.topic, tp.partition): f.result().offset for tp, f in futures.items()}

    def end_offsets(self, topics: Iterable[str]) -> dict[str, int]:
        """Messages ever written per topic (sum of end offsets; blocking)."""
        admin = self._admin_cached()
        names = list(topics)
        meta = admin.list_topics(timeout=10).topics
        parts = [TopicPartition(t, p) for t in names if t in meta for p in meta[t].partitions]
        result = dict.fromkeys(names, 0)
        for (topic, _), offset in self._offsets_at(admin, parts, _spec("latest")).items():
            result[topic] += offset
        return result


class _Tracker(OffsetTracker):
    def forget(self, partitions: Iterable[tuple[str, int]]) -> None:
        for tp in partitions:
            self._pending.pop(tp, None)


def _to_message(raw: Any) -> Message:
    key = raw.key()
    headers = raw.headers()
    _, ts_ms = raw.timestamp()
    return Message(
        topic=raw.topic(),
        partition=raw.partition(),
        offset=raw.offset(),
        key=None if key is None else key.decode("utf-8", "replace"),
        value=raw.value(),
        headers={}
        if not headers
        else {k: "" if v is None else v.decode("utf-8", "replace") for k, v in headers},
        timestamp=ts_ms / 1000.0 if ts_ms and ts_ms > 0 else 0.0,
    )


class _SerialThread:
    """One daemon thread running submitted calls in order (consume, close). A daemon, so a
    call stuck on an unreachable broker can never keep the process from exiting."""

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]] | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._calls.get()) is not None:
            call, future = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(call())
            except BaseException as exc:
                future.set_exception(exc)

    def submit(self, call: Callable[[], T]) -> asyncio.Future[T]:
        future: Future[T] = Future()
        self._calls.put((call, future))
        return asyncio.wrap_future(future)

    def stop(self) -> None:
        self._calls.put(None)


class KafkaConsumer:
    """See the module docstring. Commits are asynchronous and coalesced: at most one commit
    request in flight, at most one per `commit_interval_s`; a blocking commit could wait
    forever on a coordinator that is itself waiting for this consumer to poll (seen when the
    broker restarts), and the order of events is all that at-least-once needs: outputs are
    published (acknowledged) before the offsets that cover them are committed."""

    commit_interval_s = 0.05
    close_timeout_s = 30.0

    def __init__(self, bus: KafkaBus, group: str, topics: list[str]) -> None:
        self.bus = bus
        self.group = group
        self.topics = topics
        self._lock = threading.Lock()  # tracker, pause flag, assignment (poll vs loop thread)
        self._tracker = _Tracker()
        self._paused = False
        self._assigned: set[tuple[str, int]] = set()
        self._retry: dict[tuple[str, int], int] = {}  # positions whose commit failed
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._commit_handle: asyncio.TimerHandle | None = None
        self._commits_in_flight = 0
        self._dirty = False
        self._last_commit = 0.0
        self._thread = _SerialThread(f"kafka-poll-{group}")
        self._created = time.monotonic()
        self._steady_at: float | None = None  # last time librdkafka reported the group steady
        self._raw = RawConsumer(
            {
                **bus.consumer_config(group),
                "on_commit": self._on_commit,
                "statistics.interval.ms": 5000,
                "stats_cb": self._on_stats,
            }
        )
        self._raw.subscribe(
            topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )

    # -- rebalance callbacks: run on the poll thread, inside consume()

    def _on_assign(self, consumer: RawConsumer, partitions: list[TopicPartition]) -> None:
        with self._lock:
            self._assigned.update((p.topic, p.partition) for p in partitions)
            paused = self._paused
        log.info("%s: assigned %s", self.group, _names(partitions))
        if paused and partitions:
            consumer.incremental_assign(partitions)
            consumer.pause(partitions)

    def _on_revoke(self, consumer: RawConsumer, partitions: list[TopicPartition]) -> None:
        revoked = {(p.topic, p.partition) for p in partitions}
        with self._lock:
            positions = self._committable_locked()
            self._tracker.forget(revoked)
            self._assigned -= revoked
            for tp in revoked:
                self._retry.pop(tp, None)
        log.info("%s: revoked %s", self.group, _names(partitions))
        if positions:  # hand over what is done (asynchronously: never block a rebalance)
            try:
                consumer.commit(offsets=_offsets(positions), asynchronous=True)
            except KafkaException as exc:
                log.info("%s: commit on revoke failed (redelivered): %s", self.group, exc)

    def _on_lost(self, consumer: RawConsumer, partitions: list[TopicPartition]) -> None:
        lost = {(p.topic, p.partition) for p in partitions}
        with self._lock:
            self._tracker.forget(lost)
            self._assigned -= lost
            for tp in lost:
                self._retry.pop(tp, None)
        log.warning(
            "%s: lost %s (their uncommitted messages will be redelivered)",
            self.group,
            _names(partitions),
        )

    # -- group membership watchdog

    def _on_stats(self, raw: str) -> None:
        """librdkafka statistics (poll thread, every 5 s): remember when the group membership
        was last steady."""
        try:
            cgrp = json.loads(raw).get("cgrp") or {}
        except ValueError:
            return
        if cgrp.get("state") == "up" and cgrp.get("join_state") == "steady":
            self._steady_at = time.monotonic()

    def unsteady_for(self) -> float:
        """Seconds since this consumer was last a steady member of its group (since it was
        created, if never). A consumer that can't rejoin after a broker outage (seen once,
        mid-join during a broker restart) stays unsteady: its process should be restarted."""
        if self._closed:
            return 0.0
        since = self._steady_at if self._steady_at is not None else self._created
        return time.monotonic() - since

    # -- polling

    def _consume(self, max_records: int, timeout_s: float) -> list[Message]:
        raws = self._raw.consume(num_messages=max(1, max_records), timeout=max(0.0, timeout_s))
        batch: list[Message] = []
        with self._lock:
            for raw in raws:
                err = raw.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        log.warning("%s: consume error: %s", self.group, err)
                    continue
                message = _to_message(raw)
                self._tracker.fetched(message)
                batch.append(message)
        return batch

    async def poll(self, max_records: int, timeout_s: float) -> list[Message]:
        if self._closed:
            return []
        self._loop = asyncio.get_running_loop()
        return await self._thread.submit(functools.partial(self._consume, max_records, timeout_s))

    # -- committing

    def _committable_locked(self) -> dict[tuple[str, int], int]:
        positions = self._tracker.committable()
        for tp, pos in self._retry.items():
            if pos > positions.get(tp, -1):
                positions[tp] = pos
        self._retry.clear()
        return {tp: pos for tp, pos in positions.items() if tp in self._assigned}

    async def commit(self, messages: Sequence[Message]) -> None:
        with self._lock:
            for m in messages:
                self._tracker.done(m)
        self._loop = asyncio.get_running_loop()
        self._request_commit()

    def _request_commit(self) -> None:
        if self._closed or self._loop is None:
            return
        if self._commit_handle is not None or self._commits_in_flight:
            self._dirty = True  # picked up when the scheduled / in-flight one is done
            return
        delay = max(0.0, self._last_commit + self.commit_interval_s - time.monotonic())
        self._commit_handle = self._loop.call_later(delay, self._commit_now)

    def _commit_now(self) -> None:
        self._commit_handle = None
        self._dirty = False
        self._last_commit = time.monotonic()
        self._commits_in_flight += 1
        future = self._thread.submit(self._commit_on_thread)
        future.add_done_callback(self._commit_sent)

    def _commit_on_thread(self) -> tuple[bool, dict[tuple[str, int], int], Any]:
        """On the poll thread, like every call on the consumer: librdkafka's Python binding
        holds the GIL in an asynchronous commit, which stalls (or deadlocks) against a
        consume() running on another thread. Returns (sent, positions not sent, error)."""
        with self._lock:
            positions = self._committable_locked()
        if not positions:
            return False, {}, None
        try:
            self._raw.commit(offsets=_offsets(positions), asynchronous=True)
        except KafkaException as exc:
            return False, positions, exc.args[0] if exc.args else exc
        return True, {}, None

    def _commit_sent(
        self, future: asyncio.Future[tuple[bool, dict[tuple[str, int], int], Any]]
    ) -> None:
        sent = False
        if future.cancelled():
            pass
        elif future.exception() is not None:
            log.warning("%s: commit failed: %r", self.group, future.exception())
        else:
            sent, unsent, error = future.result()
            if unsent:
                self._commit_failed(unsent, error)
        if not sent:  # no commit report will come for this one
            self._commits_in_flight = max(0, self._commits_in_flight - 1)
            if self._dirty or self._retry:
                self._request_commit()

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """Commit result (poll thread): hand it to the event loop."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nothing to retry
            loop.call_soon_threadsafe(self._commit_done, err, partitions)

    def _commit_done(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        self._commits_in_flight = max(0, self._commits_in_flight - 1)
        failed = {
            (p.topic, p.partition): p.offset
            for p in partitions
            if (err is not None or p.error is not None) and p.offset >= 0
        }
        if failed:
            first = err if err is not None else next(p.error for p in partitions if p.error)
            self._commit_failed(failed, first)
        if self._dirty or self._retry:
            self._request_commit()

    def _commit_failed(self, positions: dict[tuple[str, int], int], err: Any) -> None:
        code = err.code() if isinstance(err, KafkaError) else None
        with self._lock:
            for tp, pos in positions.items():
                if tp in self._assigned and pos > self._retry.get(tp, -1):
                    self._retry[tp] = pos  # retried with the next commit
        if code in _REBALANCE_CODES:
            log.info("%s: commit deferred by a rebalance: %s", self.group, err)
        else:
            log.warning("%s: commit failed (retried with the next one): %s", self.group, err)

    # -- flow control

    def pause(self) -> None:
        with self._lock:
            self._paused = True
        self._on_thread(self._set_paused, True)

    def resume(self) -> None:
        with self._lock:
            self._paused = False
        self._on_thread(self._set_paused, False)

    def _set_paused(self, paused: bool) -> None:
        assignment = self._raw.assignment()
        if assignment:
            (self._raw.pause if paused else self._raw.resume)(assignment)

    def _on_thread(self, call: Callable[..., Any], *args: Any) -> None:
        """Fire and forget, in order with the polls (the next poll sees the effect)."""
        future = self._thread.submit(functools.partial(call, *args))
        future.add_done_callback(self._log_failure)

    def _log_failure(self, future: asyncio.Future[Any]) -> None:
        if not future.cancelled() and future.exception() is not None:
            log.warning("%s: %r", self.group, future.exception())

    # -- shutdown

    def _close(self) -> None:
        with self._lock:
            positions = self._committable_locked()
        if positions:
            try:
                self._raw.commit(offsets=_offsets(positions), asynchronous=True)
            except KafkaException as exc:
                log.warning("%s: final commit failed (will be redelivered): %s", self.group, exc)
        # Waits for outstanding commits, then leaves the group (on_revoke hands over the rest).
        self._raw.close()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._commit_handle is not None:
            self._commit_handle.cancel()
            self._commit_handle = None
        # On the poll thread: after any consume() still running, never concurrently with it.
        try:
            await asyncio.wait_for(self._thread.submit(self._close), self.close_timeout_s)
        except TimeoutError:
            log.warning(
                "%s: close timed out after %.0f s (broker unreachable?); uncommitted "
                "messages will be redelivered",
                self.group,
                self.close_timeout_s,
            )
        finally:
            self._thread.stop()


def _spec(kind: str) -> Any:
    """OffsetSpec.latest() / .earliest() (untyped in the binding's stubs)."""
    return getattr(OffsetSpec, kind)()


def _offsets(positions: dict[tuple[str, int], int]) -> list[TopicPartition]:
    return [TopicPartition(t, p, pos) for (t, p), pos in sorted(positions.items())]


def _names(partitions: Sequence[TopicPartition]) -> str:
    return ", ".join(f"{p.topic}[{p.partition}]" for p in partitions) or "nothing"
