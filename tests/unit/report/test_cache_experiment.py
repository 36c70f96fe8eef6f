from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import pytest

from qaloop.report import cache_experiment as C
from qaloop.traffic_model import arrivals, popularity

SMALL = C.CacheConfig(
    n_requests=20_000,
    n_keys=1_000,
    rate=20.0,
    sizes=(50, 200, 1_000),
    ttls_s=(0.0, 5.0),
    ttl_size=200,
    shift_every=2_000,
    seed=3,
)


@pytest.fixture(scope="module")
def results() -> C.CacheResults:
    return C.run(SMALL)


@pytest.mark.parametrize("policy", ["lru", "lfu", "fifo"])
def test_a_cache_as_large_as_the_key_space_only_misses_first_requests(policy: str) -> None:
    keys = popularity("zipf", 500, seed=9).sample(5_000)
    times = [float(i) for i in range(len(keys))]
    hits, misses, evictions, _ = C.replay(times, keys, policy, 500, 0.0)
    assert misses == len(set(keys))
    assert hits == len(keys) - len(set(keys))
    assert hits / len(keys) == pytest.approx(C.compulsory_bound(keys))
    assert evictions == 0


def test_a_ttl_shorter_than_every_gap_never_hits() -> None:
    times = list(itertools.accumulate(itertools.islice(arrivals("constant", 10.0, 0), 1000)))
    keys = [i % 5 for i in range(1000)]
    assert C.replay(times, keys, "lru", 100, 0.05)[0] == 0
    assert C.replay(times, keys, "lru", 100, 0.0)[0] == 995


def test_every_planned_run_has_a_result(results: C.CacheResults) -> None:
    assert len(results.runs) == len(C.plan(SMALL)) == 4 * 3 * (3 + 1)
    for r in results.runs:
        assert r.hits + r.misses == r.requests == SMALL.n_requests
        assert 0.0 <= r.hit_rate <= r.bound + 1e-12


def test_size_equal_to_key_space_reaches_the_bound(results: C.CacheResults) -> None:
    for sc in SMALL.scenarios:
        for policy in SMALL.policies:
            r = results.get(sc.name, policy, 1_000)
            assert r.hit_rate == pytest.approx(r.bound)


def test_known_orderings(results: C.CacheResults) -> None:
    for size in (50, 200):
        # Zipf: recency beats insertion order; frequency beats both on a stationary Zipf.
        assert (
            results.get("zipf-poisson", "lru", size).hit_rate
            >= results.get("zipf-poisson", "fifo", size).hit_rate
        )
        assert (
            results.get("zipf-poisson", "lfu", size).hit_rate
            >= results.get("zipf-poisson", "lru", size).hit_rate
        )
        # A moving hot set makes LFU's counts stale.
        assert (
            results.get("shifting-poisson", "lfu", size).hit_rate
            < results.get("shifting-poisson", "lru", size).hit_rate
        )
    # Uniform: hit rate ~ size / keys, whatever the policy.
    assert results.get("uniform-poisson", "lru", 200).hit_rate == pytest.approx(0.2, abs=0.02)
    # Without a TTL only the key order matters: the same keys, different timing, same result.
    assert (
        results.get("zipf-bursty", "lru", 200).hits == results.get("zipf-poisson", "lru", 200).hits
    )


def test_conclusions_name_the_stressful_traffic_and_a_choice(results: C.CacheResults) -> None:
    text = "\n".join(C.conclusions(results))
    assert "Most stressful popularity: uniform-poisson" in text
    assert "Policy: choose lru" in text
    assert "LFU's old counts go stale" in text
    assert "Size: on zipf-poisson" in text


def test_tables_and_csv(results: C.CacheResults, tmp_path: Path) -> None:
    size = C.size_table(results)
    assert len(size.rows) == 12
    assert size.columns[-1] == "bound (infinite cache)"
    ttl = C.ttl_table(results)
    assert ttl.columns == ["traffic", "policy", "TTL 5 s", "no TTL"]
    path = C.write_csv(results, tmp_path / "c.csv")
    lines = path.read_text().splitlines()
    assert lines[0].startswith("scenario,arrival,popularity,policy,size,ttl_s,requests,hits")
    assert len(lines) == 1 + len(results.runs)


def test_runs_are_repeatable() -> None:
    cfg = dataclasses.replace(SMALL, n_requests=2_000, scenarios=SMALL.scenarios[:1])
    assert C.run(cfg).runs == C.run(cfg).runs


def test_replay_is_fast() -> None:
    keys = popularity("zipf", 10_000, seed=1).sample(100_000)
    times = [i / 50 for i in range(len(keys))]
    import time

    started = time.perf_counter()
    C.replay(times, keys, "lfu", 1500, 60.0)
    assert 100_000 / (time.perf_counter() - started) > 5_000  # thousands of requests/s at least
