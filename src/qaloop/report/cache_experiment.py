"""`qaloop experiment cache`: replay seeded traffic against every cache policy x size x TTL.

Offline and fast: the cache classes of qaloop.core.cache are driven directly on a virtual
clock (the request's arrival time), so hundreds of thousands of requests replay per second
and a full sweep takes seconds, not the hours the original docker-compose runs took.

Model: a request is a hit if its key is in the cache and not expired; on a miss the answer is
fetched (from storage or the LLM) and put in the cache at once. The best any cache can do on a
trace is the compulsory-miss bound: 1 - unique keys / requests (every first request misses).

Scenarios (arrival process x key popularity, from qaloop.traffic_model):
- zipf-poisson: Zipf(s=1.1) popularity, Poisson arrivals. Q&A and web traffic is Zipf-like with
  s near 1 (a few questions asked very often, a long tail asked once); independent users arrive
  as a Poisson process. The realistic baseline.
- uniform-poisson: every question equally likely: no locality for any policy to exploit, the
  lower bound of what a cache can do (e.g. a crawler or a replay of the whole dataset).
- shifting-poisson: Zipf(1.1) whose hot set moves every `shift_every` requests (news cycles):
  frequencies learned earlier go stale, which is where LFU's memory hurts.
- zipf-bursty: Zipf(1.1) with on/off bursts at the same mean rate: with a TTL, entries expire
  during the silent periods, so the arrival process matters only when a TTL is set.
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from qaloop.core.cache import Cache, make_cache
from qaloop.report.tables import Cell, Table, mean
from qaloop.traffic_model import arrivals, popularity


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    arrival: str
    popularity: str
    why: str


SCENARIOS = (
    Scenario("zipf-poisson", "poisson", "zipf", "realistic: few hot questions, long tail"),
    Scenario("uniform-poisson", "poisson", "uniform", "no locality: the worst case"),
    Scenario("shifting-poisson", "poisson", "shifting", "hot set moves: stale frequencies"),
    Scenario("zipf-bursty", "bursty", "zipf", "same mean rate in on/off bursts: TTL interplay"),
)


@dataclass(frozen=True, slots=True)
class CacheConfig:
    n_requests: int = 100_000
    n_keys: int = 10_000
    rate: float = 50.0  # requests per second (virtual time)
    s: float = 1.1
    shift_every: int = 5_000
    burst_on_s: float = 2.0
    burst_off_s: float = 18.0
    policies: tuple[str, ...] = ("lru", "lfu", "fifo")
    sizes: tuple[int, ...] = (100, 250, 500, 1000, 1500, 2500, 5000, 10000)
    ttls_s: tuple[float, ...] = (0.0, 10.0, 60.0, 300.0)
    ttl_size: int = 1500  # the size at which the TTL sweep runs
    seed: int = 1
    scenarios: tuple[Scenario, ...] = SCENARIOS


@dataclass(frozen=True, slots=True)
class RunResult:
    scenario: str
    arrival: str
    popularity: str
    policy: str
    size: int
    ttl_s: float
    requests: int
    hits: int
    misses: int
    evictions: int
    expirations: int
    hit_rate: float
    bound: float  # compulsory-miss bound of this trace


@dataclass(slots=True)
class CacheResults:
    config: CacheConfig
    runs: list[RunResult] = field(default_factory=list)
    elapsed_s: float = 0.0

    def get(self, scenario: str, policy: str, size: int, ttl_s: float = 0.0) -> RunResult:
        for r in self.runs:
            if (r.scenario, r.policy, r.size, r.ttl_s) == (scenario, policy, size, ttl_s):
                return r
        raise KeyError((scenario, policy, size, ttl_s))


def make_trace(scenario: Scenario, cfg: CacheConfig) -> tuple[list[float], list[int]]:
    """Arrival times (s) and keys of `cfg.n_requests` requests: the same for every policy."""
    gaps = arrivals(
        scenario.arrival, cfg.rate, cfg.seed, on_s=cfg.burst_on_s, off_s=cfg.burst_off_s
    )
    times = list(itertools.accumulate(itertools.islice(gaps, cfg.n_requests)))
    pick = popularity(scenario.popularity, cfg.n_keys, cfg.seed, cfg.s, shift_every=cfg.shift_every)
    return times, pick.sample(cfg.n_requests)


def compulsory_bound(keys: Sequence[int]) -> float:
    return 1.0 - len(set(keys)) / len(keys) if keys else 0.0


def replay(
    times: Sequence[float], keys: Sequence[int], policy: str, size: int, ttl_s: float
) -> tuple[int, int, int, int]:
    """(hits, misses, evictions, expirations) of one cache on one trace, on a virtual clock."""
    now = [0.0]
    cache: Cache[int, bool] = make_cache(policy, size, ttl_s or None, clock=lambda: now[0])
    get, put = cache.get, cache.put
    for t, key in zip(times, keys, strict=True):
        now[0] = t
        if get(key) is None:
            put(key, True)
    st = cache.stats
    return st.hits, st.misses, st.evictions, st.expirations


def plan(cfg: CacheConfig) -> list[tuple[Scenario, str, int, float]]:
    runs = []
    for sc in cfg.scenarios:
        for policy in cfg.policies:
            runs += [(sc, policy, size, 0.0) for size in cfg.sizes]
            runs += [(sc, policy, cfg.ttl_size, ttl) for ttl in cfg.ttls_s if ttl > 0]
    return runs


def run(cfg: CacheConfig, on_run: Callable[[], None] | None = None) -> CacheResults:
    import time

    started = time.perf_counter()
    results = CacheResults(cfg)
    traces: dict[str, tuple[list[float], list[int], float]] = {}
    for sc, policy, size, ttl in plan(cfg):
        if sc.name not in traces:
            times, keys = make_trace(sc, cfg)
            traces[sc.name] = (times, keys, compulsory_bound(keys))
        times, keys, bound = traces[sc.name]
        hits, misses, evictions, expirations = replay(times, keys, policy, size, ttl)
        results.runs.append(
            RunResult(
                sc.name,
                sc.arrival,
                sc.popularity,
                policy,
                size,
                ttl,
                len(keys),
                hits,
                misses,
                evictions,
                expirations,
                hits / len(keys),
                bound,
            )
        )
        if on_run is not None:
            on_run()
    results.elapsed_s = time.perf_counter() - started
    return results


# --- tables and conclusions -------------------------------------------------------------------


def size_table(res: CacheResults) -> Table:
    cfg = res.config
    rows: list[list[Cell]] = []
    for sc in cfg.scenarios:
        for policy in cfg.policies:
            rates = [100 * res.get(sc.name, policy, size).hit_rate for size in cfg.sizes]
            bound = res.get(sc.name, policy, cfg.sizes[0]).bound
            rows.append([sc.name, policy, *rates, 100 * bound])
    return Table(
        f"Hit rate (%) by policy and size, no TTL ({cfg.n_requests} requests, {cfg.n_keys} keys)",
        ["traffic", "policy", *[f"size {s}" for s in cfg.sizes], "bound (infinite cache)"],
        rows,
        "bound = 1 - unique keys / requests: every first request for a key must miss.",
        digits=1,
    )


def ttl_table(res: CacheResults) -> Table:
    cfg = res.config
    ttls = [t for t in cfg.ttls_s if t > 0]
    rows: list[list[Cell]] = []
    for sc in cfg.scenarios:
        for policy in cfg.policies:
            base = res.get(sc.name, policy, cfg.ttl_size)
            rows.append(
                [
                    sc.name,
                    policy,
                    *[100 * res.get(sc.name, policy, cfg.ttl_size, t).hit_rate for t in ttls],
                    100 * base.hit_rate,
                ]
            )
    return Table(
        f"Hit rate (%) by TTL at size {cfg.ttl_size} (mean rate {cfg.rate:g} req/s)",
        ["traffic", "policy", *[f"TTL {t:g} s" for t in ttls], "no TTL"],
        rows,
        digits=1,
    )


def _scenario_mean(res: CacheResults, name: str) -> float:
    cfg = res.config
    return mean([res.get(name, p, s).hit_rate for p in cfg.policies for s in cfg.sizes]) or 0.0


def conclusions(res: CacheResults) -> list[str]:
    """Plain-language answers: which traffic stresses the cache, which policy and size."""
    cfg = res.config
    names = [sc.name for sc in cfg.scenarios]
    means = {n: _scenario_mean(res, n) for n in names}
    worst = min(means, key=lambda n: means[n])
    lines = [
        f"Most stressful popularity: {worst} (mean hit rate {100 * means[worst]:.1f} % over all "
        "policies and sizes, vs "
        + ", ".join(f"{n} {100 * m:.1f} %" for n, m in means.items() if n != worst)
        + ")."
    ]
    ttls = [t for t in cfg.ttls_s if t > 0]
    if "zipf-poisson" in names and "zipf-bursty" in names and ttls:
        t = min(ttls)
        p = cfg.policies[0]
        steady = res.get("zipf-poisson", p, cfg.ttl_size, t).hit_rate
        bursty = res.get("zipf-bursty", p, cfg.ttl_size, t).hit_rate
        harder = "bursty" if bursty < steady else "Poisson"
        lines.append(
            f"Arrivals matter only with a TTL: at TTL {t:g} s ({p}, size {cfg.ttl_size}) Poisson "
            f"arrivals give {100 * steady:.1f} %, bursty ones {100 * bursty:.1f} %: {harder} "
            f"arrivals stress a TTL cache more (without a TTL the hit rate depends only on the key "
            "order, not on timing)."
        )
    realistic = [n for n in names if not n.startswith("uniform")] or names
    per_scenario = {
        n: {p: mean([res.get(n, p, s).hit_rate for s in cfg.sizes]) or 0.0 for p in cfg.policies}
        for n in realistic
    }
    for n, by_policy in per_scenario.items():
        lead = max(by_policy, key=lambda p: by_policy[p])
        lines.append(
            f"On {n} the best policy is {lead} (mean over sizes: "
            + ", ".join(f"{p} {100 * m:.1f} %" for p, m in by_policy.items())
            + ")."
        )
    worst_case = {p: min(d[p] for d in per_scenario.values()) for p in cfg.policies}
    best = max(worst_case, key=lambda p: worst_case[p])
    lines.append(
        f"Policy: choose {best}: the best worst case over the skewed traffics ("
        + ", ".join(f"{p} {100 * m:.1f} %" for p, m in worst_case.items())
        + "), i.e. never far behind where another policy wins, and safe when popularity moves."
    )
    if "shifting-poisson" in names and "lfu" in cfg.policies and "lru" in cfg.policies:
        size = cfg.sizes[len(cfg.sizes) // 2]
        lfu = res.get("shifting-poisson", "lfu", size).hit_rate
        lru = res.get("shifting-poisson", "lru", size).hit_rate
        lines.append(
            f"When the hot set shifts, LFU's old counts go stale: at size {size} LFU "
            f"{100 * lfu:.1f} % vs LRU {100 * lru:.1f} %."
        )
    if ttls and "zipf-poisson" in names:
        t = min(ttls)
        no_ttl = res.get("zipf-poisson", best, cfg.ttl_size).hit_rate
        with_ttl = res.get("zipf-poisson", best, cfg.ttl_size, t).hit_rate
        lines.append(
            f"TTL: on zipf-poisson a {t:g} s TTL cuts {best}'s hit rate from {100 * no_ttl:.1f} % "
            f"to {100 * with_ttl:.1f} %; validated answers don't go stale, so keep TTL 0 unless "
            "answers must be refreshed."
        )
    ref = "zipf-poisson" if "zipf-poisson" in names else realistic[0]
    bound = res.get(ref, best, cfg.sizes[0]).bound
    chosen = next(
        (s for s in cfg.sizes if res.get(ref, best, s).hit_rate >= 0.9 * bound), cfg.sizes[-1]
    )
    got = res.get(ref, best, chosen).hit_rate
    lines.append(
        f"Size: on {ref}, {best} with {chosen} entries ({100 * chosen / cfg.n_keys:.0f} % of the "
        f"{cfg.n_keys} keys) reaches {100 * got:.1f} % of requests, >= 90 % of the "
        f"{100 * bound:.1f} % an infinite cache could serve; beyond that, memory buys little."
    )
    return lines


def write_csv(res: CacheResults, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as fh:
        fields = list(RunResult.__dataclass_fields__)
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for r in res.runs:
            row = asdict(r)
            row["hit_rate"] = f"{r.hit_rate:.6f}"
            row["bound"] = f"{r.bound:.6f}"
            writer.writerow(row)
    return path
