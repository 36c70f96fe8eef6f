"""The consumer: no auto-commit. `poll` runs `consume()` on the consumer's own thread, so the
event loop stays free; `commit` marks messages done in an OffsetTracker and commits, with
explicit offsets, only the contiguous done prefix of each partition (see qaloop.bus.kafka)."""

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
from typing import Any, TypeVar

from confluent_kafka import Consumer as RawConsumer
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from qaloop.bus.base import Message, OffsetTracker
from qaloop.bus.kafka.errors import REBALANCE_CODES

log = logging.getLogger(__name__)

T = TypeVar("T")

# Consumers whose close() gave up waiting while librdkafka was still closing on their poll
# thread (a daemon). Python must not finalise under that call: its callbacks would run in a
# dying interpreter. The process entry point exits without finalising while any remain.
_closing_abandoned: set[KafkaConsumer] = set()


def closes_still_running() -> int:
    """How many consumers are still closing on a daemon thread after close() timed out."""
    return sum(1 for c in list(_closing_abandoned) if not c._raw_closed)


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

    def __init__(self, config: dict[str, Any], group: str, topics: list[str]) -> None:
        self.group = group
        self.topics = topics
        self._lock = threading.Lock()  # tracker, pause flag, assignment (poll vs loop thread)
        self._tracker = _Tracker()
        self._paused = False
        self._assigned: set[tuple[str, int]] = set()
        self._retry: dict[tuple[str, int], int] = {}  # positions whose commit failed
        self._closed = False  # close() was called (on the event loop)
        # the librdkafka handle is closed (set on the poll thread, which alone touches it):
        # a call queued behind the close must never reach the handle
        self._raw_closed = False
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
                **config,
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
        """Up to `max_records`, returning as soon as there is at least one: librdkafka's
        consume(n, t) waits until it has n messages or t has passed, which under a light load
        made every hop wait the whole timeout (200 ms per stage). So: take what is already
        fetched, without waiting; if nothing, wait (up to the timeout) for the first one, then
        add what arrived with it. Under load the local queue is full and batches stay large."""
        if self._raw_closed:
            return []
        wanted = max(1, max_records)
        raws = self._raw.consume(num_messages=wanted, timeout=0)
        if not raws:
            raws = self._raw.consume(num_messages=1, timeout=max(0.0, timeout_s))
            if raws and wanted > 1:
                raws += self._raw.consume(num_messages=wanted - 1, timeout=0)
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
        if self._raw_closed:
            return False, {}, None
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
        if code in REBALANCE_CODES:
            log.info("%s: commit deferred by a rebalance: %s", self.group, err)
        else:
            log.warning("%s: commit failed (retried with the next one): %s", self.group, err)

    # -- flow control

    def pause(self) -> None:
        if self._closed:
            return
        with self._lock:
            self._paused = True
        self._on_thread(self._set_paused, True)

    def resume(self) -> None:
        if self._closed:
            return
        with self._lock:
            self._paused = False
        self._on_thread(self._set_paused, False)

    def _set_paused(self, paused: bool) -> None:
        if self._raw_closed:
            return
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
        if self._raw_closed:
            return
        with self._lock:
            positions = self._committable_locked()
        if positions:
            try:
                self._raw.commit(offsets=_offsets(positions), asynchronous=True)
            except KafkaException as exc:
                log.warning("%s: final commit failed (will be redelivered): %s", self.group, exc)
        # Waits for outstanding commits, then leaves the group (on_revoke hands over the rest).
        try:
            self._raw.close()
        finally:
            self._raw_closed = True

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
            _closing_abandoned.add(self)
            log.warning(
                "%s: close timed out after %.0f s (broker unreachable?); uncommitted "
                "messages will be redelivered",
                self.group,
                self.close_timeout_s,
            )
        finally:
            self._thread.stop()


def _offsets(positions: dict[tuple[str, int], int]) -> list[TopicPartition]:
    return [TopicPartition(t, p, pos) for (t, p), pos in sorted(positions.items())]


def _names(partitions: Sequence[TopicPartition]) -> str:
    return ", ".join(f"{p.topic}[{p.partition}]" for p in partitions) or "nothing"
