"""Each cache policy against a simple reference model (hypothesis), plus TTL and counters."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qaloop.core.cache import FIFOCache, LFUCache, LRUCache, Policy, make_cache


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class ReferenceCache:
    """O(n) but obviously right: a list of [key, value, inserted, last_used, freq, expires]."""

    def __init__(self, policy: str, capacity: int, ttl: float | None, clock: FakeClock) -> None:
        self.policy, self.capacity, self.ttl, self.clock = policy, capacity, ttl, clock
        self.items: list[list[Any]] = []
        self.tick = 0
        self.hits = self.misses = self.evictions = self.expirations = 0

    def _find(self, key: int) -> list[Any] | None:
        return next((it for it in self.items if it[0] == key), None)

    def get(self, key: int) -> Any:
        self.tick += 1
        item = self._find(key)
        if item is None:
            self.misses += 1
            return None
        if item[5] <= self.clock():
            self.items.remove(item)
            self.expirations += 1
            self.misses += 1
            return None
        item[3] = self.tick
        item[4] += 1
        self.hits += 1
        return item[1]

    def put(self, key: int, value: Any) -> None:
        self.tick += 1
        expires = float("inf") if self.ttl is None else self.clock() + self.ttl
        item = self._find(key)
        if item is not None:
            item[1], item[5] = value, expires
            item[3] = self.tick
            if self.policy == "lfu":
                item[4] += 1
            return
        if len(self.items) >= self.capacity:
            if self.policy == "fifo":
                victim = min(self.items, key=lambda it: it[2])
            elif self.policy == "lru":
                victim = min(self.items, key=lambda it: it[3])
            else:  # lfu: lowest frequency, then least recently used
                victim = min(self.items, key=lambda it: (it[4], it[3]))
            self.items.remove(victim)
            if victim[5] <= self.clock():
                self.expirations += 1
            else:
                self.evictions += 1
        self.items.append([key, value, self.tick, self.tick, 1, expires])


operations = st.lists(
    st.one_of(
        st.tuples(st.just("get"), st.integers(0, 12)),
        st.tuples(st.just("put"), st.integers(0, 12)),
        st.tuples(st.just("tick"), st.integers(0, 3)),
    ),
    max_size=200,
)


@pytest.mark.parametrize("policy", ["lru", "lfu", "fifo"])
@pytest.mark.parametrize("ttl", [None, 2.5])
@settings(max_examples=150, deadline=None)
@given(ops=operations, capacity=st.integers(1, 6))
def test_policy_matches_reference_model(
    policy: str, ttl: float | None, ops: list[tuple[str, int]], capacity: int
) -> None:
    clock = FakeClock()
    cache: Any = make_cache(policy, capacity, ttl, clock)
    model = ReferenceCache(policy, capacity, ttl, clock)
    # FIFO refreshes nothing on a hit, but the reference tracks last use: only LRU/LFU read it.
    for n, (op, arg) in enumerate(ops):
        if op == "get":
            assert cache.get(arg) == model.get(arg), f"step {n}: get({arg})"
        elif op == "put":
            cache.put(arg, n)
            model.put(arg, n)
        else:
            clock.now += arg
        assert len(cache) == len(model.items)
        assert cache.stats.hits == model.hits
        assert cache.stats.misses == model.misses
        assert cache.stats.evictions == model.evictions
        assert cache.stats.expirations == model.expirations
        assert {it[0] for it in model.items} == {k for k in range(13) if k in cache}


def test_lfu_survives_repeated_evictions() -> None:
    """The original LFU raised KeyError on the second or third eviction."""
    cache: LFUCache[str, int] = LFUCache(2)
    for i in range(50):
        cache.put(f"k{i}", i)
        cache.get(f"k{i}")
    assert len(cache) == 2
    assert cache.stats.evictions == 48


def test_lru_evicts_least_recently_used() -> None:
    cache: LRUCache[str, int] = LRUCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1
    cache.put("c", 3)
    assert "b" not in cache and "a" in cache and "c" in cache


def test_fifo_ignores_hits() -> None:
    cache: FIFOCache[str, int] = FIFOCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    cache.get("a")
    cache.put("c", 3)
    assert "a" not in cache


def test_ttl_expires_and_counts() -> None:
    clock = FakeClock()
    cache: LRUCache[str, int] = LRUCache(10, ttl_s=5, clock=clock)
    cache.put("a", 1)
    clock.now = 4.9
    assert cache.get("a") == 1
    clock.now = 5.0
    assert cache.get("a") is None
    assert cache.stats.as_dict() == {
        "hits": 1,
        "misses": 1,
        "evictions": 0,
        "expirations": 1,
        "hit_rate": 0.5,
    }


def test_ttl_zero_means_never() -> None:
    clock = FakeClock()
    cache: LFUCache[str, int] = LFUCache(1, ttl_s=0, clock=clock)
    cache.put("a", 1)
    clock.now = 1e9
    assert cache.get("a") == 1


def test_invalid_capacity_and_policy() -> None:
    with pytest.raises(ValueError, match="capacity"):
        LRUCache(0)
    with pytest.raises(ValueError):
        make_cache("mru", 3)
    assert Policy("lfu") is Policy.LFU
