"""qaloop.quality.memo.TextMemo: both bounds hold, the least recently used goes first, and a
hit does not compute again."""

from __future__ import annotations

import random

import pytest

from qaloop.quality.memo import TextMemo


def counting() -> tuple[list[str], TextMemo[int]]:
    calls: list[str] = []

    def compute(text: str) -> int:
        calls.append(text)
        return len(text) * 7

    return calls, TextMemo(compute, max_entries=3, max_chars=10)


def test_a_hit_returns_the_kept_value_without_computing() -> None:
    calls, memo = counting()
    assert memo("abc") == 21
    assert memo("abc") == 21
    assert calls == ["abc"]
    assert (memo.hits, memo.misses) == (1, 1)


def test_the_entry_bound_evicts_the_least_recently_used() -> None:
    calls, memo = counting()
    for t in ("a", "b", "c"):
        memo(t)
    memo("a")  # now "b" is the least recently used
    memo("d")
    assert "b" not in memo
    assert all(t in memo for t in ("a", "c", "d"))
    assert len(memo) == 3
    memo("b")
    assert calls == ["a", "b", "c", "d", "b"]


def test_the_character_bound_evicts_until_it_holds() -> None:
    _, memo = counting()
    memo("aaaa")
    memo("bbbb")
    assert memo.chars == 8
    memo("ccc")  # 11 > 10: the oldest goes
    assert "aaaa" not in memo
    assert "bbbb" in memo and "ccc" in memo
    assert memo.chars == 7


def test_a_text_longer_than_the_character_bound_is_computed_and_not_kept() -> None:
    calls, memo = counting()
    memo("x")
    assert memo("y" * 11) == 77
    assert memo("y" * 11) == 77
    assert calls == ["x", "y" * 11, "y" * 11]
    assert list(memo._kept) == ["x"]
    assert memo.chars == 1


def test_the_bounds_hold_on_random_traffic_and_values_are_right() -> None:
    rng = random.Random(3)
    memo = TextMemo(lambda t: t[::-1], max_entries=20, max_chars=60)
    for _ in range(5_000):
        text = "q" * rng.randint(1, 12) + str(rng.randint(0, 40))
        assert memo(text) == text[::-1]
        assert len(memo) <= 20
        assert memo.chars <= 60
        assert memo.chars == sum(len(k) for k in memo._kept)
    assert memo.hits > 0 and memo.misses > 0


def test_cache_clear_forgets_everything() -> None:
    calls, memo = counting()
    memo("abc")
    memo.cache_clear()
    assert len(memo) == 0 and memo.chars == 0 and memo.hits == 0
    memo("abc")
    assert calls == ["abc", "abc"]


def test_bounds_must_be_positive() -> None:
    with pytest.raises(ValueError):
        TextMemo(str.upper, max_entries=0, max_chars=10)
