from __future__ import annotations

import itertools
import statistics
from collections import Counter
from collections.abc import Iterator

import pytest

from qaloop.traffic_model import arrivals, popularity, schedule, zipf_probabilities


def take(it: Iterator[float], n: int) -> list[float]:
    return list(itertools.islice(it, n))


@pytest.mark.parametrize("kind", ["poisson", "constant", "bursty"])
def test_arrivals_have_the_requested_mean_rate(kind: str) -> None:
    gaps = take(arrivals(kind, rate=20.0, seed=3), 20_000)
    assert all(g >= 0 for g in gaps)
    assert 1 / statistics.fmean(gaps) == pytest.approx(20.0, rel=0.05)


def test_arrivals_are_seeded() -> None:
    assert take(arrivals("poisson", 5.0, seed=1), 50) == take(arrivals("poisson", 5.0, seed=1), 50)
    assert take(arrivals("poisson", 5.0, seed=1), 50) != take(arrivals("poisson", 5.0, seed=2), 50)


def test_constant_gaps_are_exact() -> None:
    assert take(arrivals("constant", 4.0, seed=0), 3) == [0.25, 0.25, 0.25]


def test_bursty_arrivals_leave_silent_off_periods() -> None:
    times = list(itertools.accumulate(take(arrivals("bursty", 10.0, 7, on_s=1.0, off_s=4.0), 5000)))
    # Every arrival falls inside an on-period: [5k, 5k + 1).
    assert all((t % 5.0) < 1.0 + 1e-9 for t in times)
    assert max(b - a for a, b in itertools.pairwise(times)) > 3.5


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError):
        arrivals("weibull", 1.0, 0)
    with pytest.raises(ValueError):
        arrivals("poisson", 0.0, 0)
    with pytest.raises(ValueError):
        popularity("pareto", 10, 0)
    with pytest.raises(ValueError):
        popularity("zipf", 0, 0)


def test_uniform_covers_keys_evenly() -> None:
    counts = Counter(popularity("uniform", 10, seed=1).sample(20_000))
    assert set(counts) == set(range(10))
    assert max(counts.values()) / min(counts.values()) < 1.2


def test_zipf_matches_its_probabilities() -> None:
    pick = popularity("zipf", 100, seed=2, s=1.1)
    counts = Counter(pick.rank() for _ in range(50_000))
    probs = zipf_probabilities(100, 1.1)
    assert counts[0] / 50_000 == pytest.approx(probs[0], rel=0.05)
    assert counts[1] / 50_000 == pytest.approx(probs[1], rel=0.08)
    assert sum(probs) == pytest.approx(1.0)


def test_zipf_keys_are_permuted_and_seeded() -> None:
    a = popularity("zipf", 1000, seed=5).sample(200)
    assert a == popularity("zipf", 1000, seed=5).sample(200)
    assert all(0 <= k < 1000 for k in a)
    top = Counter(popularity("zipf", 1000, seed=5).sample(5000)).most_common(1)[0][0]
    assert top != 0  # rank 0 maps through a permutation


def test_shifting_moves_the_hot_set() -> None:
    pick = popularity("shifting", 1000, seed=4, s=1.2, shift_every=2000, shift_by=100)
    first = Counter(pick.sample(2000))
    second = Counter(pick.sample(2000))
    hot_before = {k for k, _ in first.most_common(10)}
    hot_after = {k for k, _ in second.most_common(10)}
    assert len(hot_before & hot_after) <= 2


def test_schedule_yields_increasing_times() -> None:
    reqs = list(schedule(arrivals("constant", 2.0, 0), popularity("uniform", 5, 0), n=4))
    assert [t for t, _ in reqs] == [0.5, 1.0, 1.5, 2.0]
    assert all(0 <= k < 5 for _, k in reqs)
