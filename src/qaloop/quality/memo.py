"""A bounded memo of values derived from a text (the judge's per-question data).

A question and its reference come back with every attempt, behind a backlog of other
questions: an entry-count LRU small enough for its worst case (a 5,000-character key) is
thrashed by a backlog of short questions, and one large enough for short ones is too large
for long ones. This one is bounded by both: at most `max_entries` keys and `max_chars`
characters of keys, the least recently used going first. Pure: no I/O, no globals.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

V = TypeVar("V")


class TextMemo(Generic[V]):
    """`compute(text)`, remembered for the most recently used texts; a text longer than
    `max_chars` is computed and not kept."""

    def __init__(self, compute: Callable[[str], V], max_entries: int, max_chars: int) -> None:
        if max_entries < 1 or max_chars < 1:
            raise ValueError("max_entries and max_chars must be >= 1")
        self.compute = compute
        self.max_entries = max_entries
        self.max_chars = max_chars
        self.chars = 0  # characters of the kept keys
        self.hits = 0
        self.misses = 0
        self._kept: OrderedDict[str, V] = OrderedDict()

    def __call__(self, text: str) -> V:
        kept = self._kept
        try:
            value = kept[text]
        except KeyError:
            pass
        else:
            self.hits += 1
            kept.move_to_end(text)
            return value
        self.misses += 1
        value = self.compute(text)
        size = len(text)
        if size > self.max_chars:
            return value
        kept[text] = value
        self.chars += size
        while len(kept) > self.max_entries or self.chars > self.max_chars:
            old, _ = kept.popitem(last=False)
            self.chars -= len(old)
        return value

    def __len__(self) -> int:
        return len(self._kept)

    def __contains__(self, text: object) -> bool:
        return text in self._kept

    def cache_clear(self) -> None:
        """Forget everything (the name functools.lru_cache gives it)."""
        self._kept.clear()
        self.chars = self.hits = self.misses = 0
