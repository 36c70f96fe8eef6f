"""Seeded models of traffic: when requests arrive and which question each one asks.

Pure Python (no numpy, no I/O), so the traffic generator (`qaloop traffic`) and the offline
cache experiment (`qaloop experiment cache`) draw from exactly the same distributions.

Arrivals -- `arrivals(kind, rate, seed, *, on_s=1.0, off_s=4.0) -> Iterator[float]` yields
inter-arrival gaps in seconds (an infinite iterator; take what you need):

- ``"poisson"``: exponential gaps of mean 1/rate (independent users, the textbook model).
- ``"constant"``: every gap is exactly 1/rate (a load tester at a fixed rate).
- ``"bursty"``: on/off: during an ``on_s``-second burst requests arrive as a Poisson process of
  rate ``rate * (on_s + off_s) / on_s``, then nothing for ``off_s`` seconds, and so on. The
  long-run mean rate is still ``rate``; bursts are ``(on_s + off_s) / on_s`` times denser.

Popularity -- `popularity(kind, n_keys, seed, s=1.1, *, shift_every=1000, shift_by=None)
-> Popularity`; a `Popularity` is a callable returning a key in ``range(n_keys)`` per call:

- ``"uniform"``: every key equally likely (worst case for a cache: no reuse to exploit).
- ``"zipf"``: the key of rank r (1-based) has probability proportional to ``1 / r**s``; web
  and Q&A traffic is typically Zipf-like with s near 1. Ranks are mapped to keys through a
  seeded permutation, so popular keys are not simply the first rows of a dataset.
- ``"shifting"``: Zipf(s) whose hot set moves: every ``shift_every`` draws the rank-to-key
  mapping rotates by ``shift_by`` keys (default n_keys // 10), so yesterday's hot questions
  cool down and cold ones heat up (news cycles). It exposes the staleness of LFU counts.

Every draw comes from a `random.Random` seeded with `seed`: the same arguments give the same
sequence. Example::

    gaps = arrivals("poisson", rate=50.0, seed=1)
    pick = popularity("zipf", n_keys=10_000, seed=1, s=1.1)
    for t, key in schedule(gaps, pick, n=5): ...   # (absolute time in s, key)
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Iterator

ARRIVAL_KINDS = ("poisson", "constant", "bursty")
POPULARITY_KINDS = ("uniform", "zipf", "shifting")

__all__ = [
    "ARRIVAL_KINDS",
    "POPULARITY_KINDS",
    "Popularity",
    "arrivals",
    "popularity",
    "schedule",
    "zipf_probabilities",
]


def arrivals(
    kind: str, rate: float, seed: int, *, on_s: float = 1.0, off_s: float = 4.0
) -> Iterator[float]:
    """Inter-arrival gaps in seconds with long-run mean rate `rate` (requests per second)."""
    if not rate > 0 or math.isinf(rate):
        raise ValueError(f"rate must be a positive finite number, got {rate}")
    if kind == "poisson":
        return _poisson(rate, random.Random(seed))
    if kind == "constant":
        return itertools.repeat(1.0 / rate)
    if kind == "bursty":
        if not on_s > 0 or off_s < 0:
            raise ValueError(f"bursty arrivals need on_s > 0 and off_s >= 0, got {on_s}, {off_s}")
        return _bursty(rate, random.Random(seed), on_s, off_s)
    raise ValueError(f"unknown arrival kind {kind!r}; choose one of {ARRIVAL_KINDS}")


def _poisson(rate: float, rng: random.Random) -> Iterator[float]:
    while True:
        yield rng.expovariate(rate)


def _bursty(rate: float, rng: random.Random, on_s: float, off_s: float) -> Iterator[float]:
    # Draw a Poisson process in "on-time" and map it onto the wall clock, skipping off periods.
    cycle = on_s + off_s
    on_rate = rate * cycle / on_s
    on_time = 0.0
    last_real = 0.0
    while True:
        on_time += rng.expovariate(on_rate)
        burst, within = divmod(on_time, on_s)
        real = burst * cycle + within
        yield real - last_real
        last_real = real


def zipf_probabilities(n_keys: int, s: float) -> list[float]:
    """P(rank r) for r = 1..n_keys, proportional to 1 / r**s."""
    weights = [1.0 / (r**s) for r in range(1, n_keys + 1)]
    total = math.fsum(weights)
    return [w / total for w in weights]


class Popularity:
    """Which key the next request asks for. Call it: `pick()` returns an int in [0, n_keys)."""

    def __init__(
        self,
        kind: str,
        n_keys: int,
        seed: int,
        s: float = 1.1,
        *,
        shift_every: int = 1000,
        shift_by: int | None = None,
    ) -> None:
        if kind not in POPULARITY_KINDS:
            raise ValueError(f"unknown popularity kind {kind!r}; choose one of {POPULARITY_KINDS}")
        if n_keys < 1:
            raise ValueError(f"n_keys must be >= 1, got {n_keys}")
        if kind != "uniform" and not s > 0:
            raise ValueError(f"the Zipf exponent s must be > 0, got {s}")
        if shift_every < 1:
            raise ValueError(f"shift_every must be >= 1, got {shift_every}")
        self.kind = kind
        self.n_keys = n_keys
        self.s = s
        self.shift_every = shift_every
        self.shift_by = max(1, n_keys // 10) if shift_by is None else shift_by
        self.draws = 0
        self._rng = random.Random(seed)
        self._perm = list(range(n_keys))
        self._cdf: list[float] = []
        if kind != "uniform":
            random.Random(seed ^ 0x5EED).shuffle(self._perm)
            self._cdf = list(itertools.accumulate(zipf_probabilities(n_keys, s)))
            self._cdf[-1] = 1.0

    def rank(self) -> int:
        """Draw a 0-based popularity rank (0 = most popular)."""
        if self.kind == "uniform":
            return self._rng.randrange(self.n_keys)
        return min(bisect.bisect_left(self._cdf, self._rng.random()), self.n_keys - 1)

    def __call__(self) -> int:
        rank = self.rank()
        offset = 0
        if self.kind == "shifting":
            offset = (self.draws // self.shift_every) * self.shift_by
        self.draws += 1
        if self.kind == "uniform":
            return rank
        return self._perm[(rank + offset) % self.n_keys]

    def sample(self, n: int) -> list[int]:
        return [self() for _ in range(n)]


def popularity(
    kind: str,
    n_keys: int,
    seed: int,
    s: float = 1.1,
    *,
    shift_every: int = 1000,
    shift_by: int | None = None,
) -> Popularity:
    """A seeded key picker; see the module docstring for the kinds."""
    return Popularity(kind, n_keys, seed, s, shift_every=shift_every, shift_by=shift_by)


def schedule(
    gaps: Iterator[float], pick: Popularity, n: int, start: float = 0.0
) -> Iterator[tuple[float, int]]:
    """The first `n` requests as (absolute time in seconds from `start`, key)."""
    t = start
    for gap in itertools.islice(gaps, n):
        t += gap
        yield t, pick()
