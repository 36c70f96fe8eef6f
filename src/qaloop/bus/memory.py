"""The in-process bus: one append-only log per topic (one partition), a committed position per
consumer group. It is not durable by itself: in embedded mode storage records every accepted
question and its state, and the pipeline resumes unfinished questions at start."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from qaloop.bus.base import Message, OffsetTracker, OutMessage, Topics


class _Log:
    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.base = 0  # offset of records[0]; records below the slowest group are trimmed
        self.records: list[Message] = []
        self.listeners: set[asyncio.Event] = set()  # one per consumer: no lost wake-ups

    @property
    def end(self) -> int:
        return self.base + len(self.records)

    def append(self, out: OutMessage) -> None:
        self.records.append(
            Message(out.topic, 0, self.end, out.key, out.value, dict(out.headers), time.time())
        )

    def read(self, position: int, limit: int) -> list[Message]:
        start = max(0, position - self.base)
        return self.records[start : start + limit]

    def trim(self, upto: int) -> None:
        drop = upto - self.base
        if drop > 1024:  # trim in chunks: list slicing is O(n)
            del self.records[:drop]
            self.base = upto


class MemoryBus:
    def __init__(self, topics: Topics | None = None) -> None:
        self.topics = topics or Topics()
        self._logs: dict[str, _Log] = {}
        self._committed: dict[tuple[str, str], int] = {}  # (group, topic) -> position

    def _log(self, topic: str) -> _Log:
        log = self._logs.get(topic)
        if log is None:
            log = self._logs[topic] = _Log(topic)
        return log

    async def start(self) -> None:
        for topic in self.topics.all():
            self._log(topic)

    async def publish_many(self, messages: Sequence[OutMessage]) -> None:
        touched = set()
        for out in messages:
            log = self._log(out.topic)
            log.append(out)
            touched.add(log)
        for log in touched:
            for event in log.listeners:
                event.set()

    def consumer(self, group: str, topics: Sequence[str]) -> MemoryConsumer:
        return MemoryConsumer(self, group, list(topics))

    def end_offsets(self, topic: str) -> int:
        return self._log(topic).end

    def committed(self, group: str, topic: str) -> int:
        return self._committed.get((group, topic), 0)

    def lag(self, group: str, topic: str) -> int:
        return self.end_offsets(topic) - self.committed(group, topic)

    def _commit(self, group: str, topic: str, position: int) -> None:
        key = (group, topic)
        if position > self._committed.get(key, 0):
            self._committed[key] = position
            groups = [g for (g, t) in self._committed if t == topic]
            self._log(topic).trim(min(self._committed[(g, topic)] for g in groups))

    async def close(self) -> None:
        return None


class MemoryConsumer:
    def __init__(self, bus: MemoryBus, group: str, topics: list[str]) -> None:
        self.bus = bus
        self.group = group
        self.topics = topics
        # A new consumer starts at the group's committed position: uncommitted work comes back.
        self._position = {t: bus.committed(group, t) for t in topics}
        for t in topics:
            bus._committed.setdefault((group, t), 0)
        self._tracker = OffsetTracker()
        self._paused = False
        self._next_topic = 0
        self._wakeup = asyncio.Event()
        for t in topics:
            bus._log(t).listeners.add(self._wakeup)

    async def poll(self, max_records: int, timeout_s: float) -> list[Message]:
        deadline = time.monotonic() + timeout_s
        while True:
            if not self._paused:
                batch = self._take(max_records)
                if batch:
                    return batch
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            self._wakeup.clear()
            if not self._paused and self._available():
                continue
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout=remaining)
            except TimeoutError:
                return []

    def _available(self) -> bool:
        return any(self._position[t] < self.bus._log(t).end for t in self.topics)

    def _take(self, max_records: int) -> list[Message]:
        batch: list[Message] = []
        n = len(self.topics)
        for i in range(n):  # round-robin over topics so no topic starves
            topic = self.topics[(self._next_topic + i) % n]
            records = self.bus._log(topic).read(self._position[topic], max_records - len(batch))
            if records:
                self._position[topic] = records[-1].offset + 1
                for m in records:
                    self._tracker.fetched(m)
                batch.extend(records)
            if len(batch) >= max_records:
                break
        self._next_topic = (self._next_topic + 1) % n
        return batch

    async def commit(self, messages: Sequence[Message]) -> None:
        for m in messages:
            self._tracker.done(m)
        for (topic, _), position in self._tracker.committable().items():
            self.bus._commit(self.group, topic, position)

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        self._paused = False
        self._wakeup.set()

    async def close(self) -> None:
        for t in self.topics:
            self.bus._log(t).listeners.discard(self._wakeup)
