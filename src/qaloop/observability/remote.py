"""The gateway's dashboard in distributed mode: the worker, judge, store and retrier counters
live in other processes, so the dashboard reads their metrics ports (QALOOP_METRICS_TARGETS,
`host:port` each; a name is resolved to every address it has, so `worker:9100` in compose reaches
every replica) and adds them to its own samples."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Sequence

import httpx
from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger(__name__)

Values = dict[str, list[tuple[dict[str, str], float]]]

# What the gateway already knows better: its own counters, and every group's lag.
_LOCAL_ONLY = ("qaloop_gateway_", "qaloop_cache_", "qaloop_consumer_lag", "qaloop_questions_")


def parse_targets(raw: str) -> list[tuple[str, int]]:
    targets = []
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not port.isdigit() or not host:
            raise ValueError(f"metrics target {item!r} is not host:port")
        targets.append((host.strip("[]"), int(port)))
    return targets


def parse_exposition(text: str) -> Values:
    found: Values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith(_LOCAL_ONLY):
                continue
            found.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return found


class RemoteMetrics:
    def __init__(self, targets: Sequence[tuple[str, int]], timeout_s: float = 1.0) -> None:
        self.targets = list(targets)
        self.timeout_s = timeout_s
        self.reached = 0  # endpoints read at the last fetch

    async def _addresses(self) -> list[str]:
        loop = asyncio.get_running_loop()
        urls: list[str] = []
        for host, port in self.targets:
            try:
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError:
                continue  # not up (yet): the others still count
            for address in dict.fromkeys(str(info[4][0]) for info in infos):
                shown = f"[{address}]" if ":" in address else address
                urls.append(f"http://{shown}:{port}/metrics")
        return urls

    async def fetch(self) -> Values:
        urls = await self._addresses()
        async with httpx.AsyncClient(timeout=self.timeout_s) as client:
            texts = await asyncio.gather(*(_get(client, url) for url in urls))
        merged: Values = {}
        self.reached = 0
        for text in texts:
            if text is None:
                continue
            self.reached += 1
            for name, samples in parse_exposition(text).items():
                merged.setdefault(name, []).extend(samples)
        return merged


async def _get(client: httpx.AsyncClient, url: str) -> str | None:
    try:
        response = await client.get(url)
        response.raise_for_status()
        return response.text
    except httpx.HTTPError as exc:
        log.debug("metrics target %s: %s", url, exc)
        return None
