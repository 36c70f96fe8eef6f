"""Consumer lag per group, topic and partition.

- In-process bus: read at scrape time from MemoryBus (end offset minus the group's committed
  position; one partition per topic).
- Kafka: the group's committed offsets against the partitions' high watermarks, probed every
  few seconds from a thread (network round trips never run on the event loop or inside a
  scrape); a scrape reads the last probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from qaloop.observability.metrics import LagSample

if TYPE_CHECKING:
    from qaloop.bus.kafka import KafkaBus
    from qaloop.bus.memory import MemoryBus

log = logging.getLogger(__name__)


class MemoryLag:
    def __init__(self, bus: MemoryBus, groups: Mapping[str, Sequence[str]]) -> None:
        self.bus = bus
        self.groups = {g: list(t) for g, t in groups.items()}

    def lag_samples(self) -> list[LagSample]:
        return [
            LagSample(group, topic, 0, max(0, self.bus.lag(group, topic)))
            for group, topics in self.groups.items()
            for topic in topics
        ]


class KafkaLag:
    """Probes committed offsets vs high watermarks for some groups; `run` refreshes them."""

    def __init__(
        self, bus: KafkaBus, groups: Mapping[str, Sequence[str]], every_s: float = 5.0
    ) -> None:
        self.bus = bus
        self.groups = {g: list(t) for g, t in groups.items()}
        self.every_s = every_s
        self.samples: list[LagSample] = []
        self.probed_at = 0.0
        self._probes: dict[str, Any] = {}

    def lag_samples(self) -> list[LagSample]:
        return list(self.samples)

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    self.samples = await asyncio.to_thread(self.probe)
                    self.probed_at = time.time()
                except Exception:
                    log.warning("consumer lag probe failed (will retry)", exc_info=True)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.every_s)
        finally:
            await asyncio.to_thread(self.close)

    def probe(self) -> list[LagSample]:
        """Blocking: call from a thread."""
        from confluent_kafka import Consumer  # optional dependency

        from qaloop.bus.kafka.admin import group_lag, topic_partitions

        samples: list[LagSample] = []
        for group, topics in self.groups.items():
            probe = self._probes.get(group)
            if probe is None:
                config = {**self.bus.consumer_config(group), "client.id": "qaloop-lag-probe"}
                probe = self._probes[group] = Consumer(config)
            parts = topic_partitions(probe, topics)
            if not parts:
                continue
            # A group with no commit yet starts at the earliest retained offset.
            samples += [LagSample(group, t, p, lag) for t, p, lag in group_lag(probe, parts)]
        return samples

    def close(self) -> None:
        probes, self._probes = self._probes, {}
        for probe in probes.values():
            with contextlib.suppress(Exception):
                probe.close()
