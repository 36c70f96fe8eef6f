"""In-memory caches with LRU, LFU and FIFO eviction and an optional TTL. All operations O(1).

LFU breaks frequency ties by least-recent use. An entry past its TTL is never served: it is
dropped (and counted as an expiration) when it is next read, or when eviction meets it.
"""

from __future__ import annotations

import enum
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

K = TypeVar("K")
V = TypeVar("V")
K_contra = TypeVar("K_contra", contravariant=True)

Clock = Callable[[], float]


class Policy(enum.StrEnum):
    LRU = "lru"
    LFU = "lfu"
    FIFO = "fifo"


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    expirations: int = 0

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {
            "hits": self.hits,
            "misses": self.misses,
            "evictions": self.evictions,
            "expirations": self.expirations,
            "hit_rate": round(self.hit_rate, 6),
        }


class Cache(Protocol[K_contra, V]):
    stats: CacheStats
    capacity: int

    def get(self, key: K_contra) -> V | None: ...
    def put(self, key: K_contra, value: V) -> None: ...
    def __len__(self) -> int: ...
    def __contains__(self, key: object) -> bool: ...


class _Base(Generic[K, V]):
    def __init__(self, capacity: int, ttl_s: float | None = None, clock: Clock = time.monotonic):
        if capacity < 1:
            raise ValueError(f"cache capacity must be >= 1, got {capacity}")
        if ttl_s is not None and ttl_s <= 0:
            ttl_s = None  # TTL 0 means "no expiry", as in the original system
        self.capacity = capacity
        self.ttl_s = ttl_s
        self.clock = clock
        self.stats = CacheStats()

    def _expires_at(self) -> float:
        return float("inf") if self.ttl_s is None else self.clock() + self.ttl_s


class _OrderedCache(_Base[K, V]):
    """LRU and FIFO differ only in whether a hit refreshes the entry's position."""

    refresh_on_hit: bool = True

    def __init__(self, capacity: int, ttl_s: float | None = None, clock: Clock = time.monotonic):
        super().__init__(capacity, ttl_s, clock)
        self._data: OrderedDict[K, tuple[V, float]] = OrderedDict()

    def get(self, key: K) -> V | None:
        item = self._data.get(key)
        if item is None:
            self.stats.misses += 1
            return None
        value, expires_at = item
        if expires_at <= self.clock():
            del self._data[key]
            self.stats.expirations += 1
            self.stats.misses += 1
            return None
        if self.refresh_on_hit:
            self._data.move_to_end(key)
        self.stats.hits += 1
        return value

    def put(self, key: K, value: V) -> None:
        if key in self._data:
            self._data[key] = (value, self._expires_at())
            if self.refresh_on_hit:
                self._data.move_to_end(key)
            return
        if len(self._data) >= self.capacity:
            _, (_, expires_at) = self._data.popitem(last=False)
            if expires_at <= self.clock():
                self.stats.expirations += 1
            else:
                self.stats.evictions += 1
        self._data[key] = (value, self._expires_at())

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data


class LRUCache(_OrderedCache[K, V]):
    refresh_on_hit = True


class FIFOCache(_OrderedCache[K, V]):
    refresh_on_hit = False


class LFUCache(_Base[K, V]):
    """Frequency buckets of insertion-ordered keys plus the current minimum frequency."""

    def __init__(self, capacity: int, ttl_s: float | None = None, clock: Clock = time.monotonic):
        super().__init__(capacity, ttl_s, clock)
        self._entries: dict[K, tuple[V, float, int]] = {}  # key -> (value, expires_at, freq)
        self._buckets: dict[int, OrderedDict[K, None]] = {}
        self._min_freq = 0

    def _bump(self, key: K, freq: int) -> int:
        bucket = self._buckets[freq]
        del bucket[key]
        if not bucket:
            del self._buckets[freq]
            if self._min_freq == freq:
                self._min_freq = freq + 1
        self._buckets.setdefault(freq + 1, OrderedDict())[key] = None
        return freq + 1

    def _remove(self, key: K) -> None:
        _, _, freq = self._entries.pop(key)
        bucket = self._buckets[freq]
        del bucket[key]  # the original LFU forgot this line and raised KeyError later
        if not bucket:
            del self._buckets[freq]

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            self.stats.misses += 1
            return None
        value, expires_at, freq = entry
        if expires_at <= self.clock():
            self._remove(key)
            self.stats.expirations += 1
            self.stats.misses += 1
            return None
        self._entries[key] = (value, expires_at, self._bump(key, freq))
        self.stats.hits += 1
        return value

    def put(self, key: K, value: V) -> None:
        entry = self._entries.get(key)
        if entry is not None:
            _, _, freq = entry
            self._entries[key] = (value, self._expires_at(), self._bump(key, freq))
            return
        if len(self._entries) >= self.capacity:
            victim = next(iter(self._buckets[self._min_freq]))
            _, expires_at, _ = self._entries[victim]
            self._remove(victim)
            if expires_at <= self.clock():
                self.stats.expirations += 1
            else:
                self.stats.evictions += 1
        self._entries[key] = (value, self._expires_at(), 1)
        self._buckets.setdefault(1, OrderedDict())[key] = None
        self._min_freq = 1

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries


def make_cache(
    policy: Policy | str, capacity: int, ttl_s: float | None = None, clock: Clock = time.monotonic
) -> LRUCache[K, V] | LFUCache[K, V] | FIFOCache[K, V]:
    match Policy(policy):
        case Policy.LRU:
            return LRUCache(capacity, ttl_s, clock)
        case Policy.LFU:
            return LFUCache(capacity, ttl_s, clock)
        case Policy.FIFO:
            return FIFOCache(capacity, ttl_s, clock)
