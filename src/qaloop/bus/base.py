"""The bus interface. Semantics every implementation honours (tests/contract/test_bus.py):

- `publish_many` returns only when every message is durably written (Kafka: acks=all).
- Messages with the same key keep their order (the key is the question id).
- A consumer group sees each message at least once; `commit` marks messages done and the
  group's position advances over the contiguous done prefix only, so a consumer that dies
  before committing gets the uncommitted messages again (at-least-once, never at-most-once).
- `pause`/`resume` stop and restart delivery without leaving the group (for delayed retries).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from qaloop.core.wire import Message, OutMessage

__all__ = ["Bus", "Consumer", "Message", "OffsetTracker", "OutMessage", "Topics"]


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic names. `delayed` holds parked retries; `dead_letter` every final error."""

    questions: str = "qaloop.questions"
    generated: str = "qaloop.generated"
    validated: str = "qaloop.validated"
    delayed: str = "qaloop.delayed"
    dead_letter: str = "qaloop.dead-letter"

    @classmethod
    def with_prefix(cls, prefix: str) -> Topics:
        return cls(
            *(
                f"{prefix}.{name}"
                for name in ("questions", "generated", "validated", "delayed", "dead-letter")
            )
        )

    def all(self) -> list[str]:
        return [self.questions, self.generated, self.validated, self.delayed, self.dead_letter]


class Consumer(Protocol):
    async def poll(self, max_records: int, timeout_s: float) -> list[Message]: ...

    async def commit(self, messages: Sequence[Message]) -> None: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    async def close(self) -> None: ...


class Bus(Protocol):
    topics: Topics

    async def start(self) -> None: ...

    async def publish_many(self, messages: Sequence[OutMessage]) -> None: ...

    def consumer(self, group: str, topics: Sequence[str]) -> Consumer: ...

    async def close(self) -> None: ...


class OffsetTracker:
    """Tracks fetched vs done offsets per (topic, partition); yields what is safe to commit.

    Kafka commits a position, not a set: with many messages in flight at once, the position can
    only move past an offset when it and every earlier fetched offset are done.
    """

    def __init__(self) -> None:
        self._pending: dict[tuple[str, int], dict[int, bool]] = {}

    def fetched(self, message: Message) -> None:
        self._pending.setdefault((message.topic, message.partition), {})[message.offset] = False

    def done(self, message: Message) -> None:
        part = self._pending.get((message.topic, message.partition))
        if part is not None and message.offset in part:
            part[message.offset] = True

    def committable(self) -> dict[tuple[str, int], int]:
        """Next position per partition (last contiguous done offset + 1); forgets them."""
        result: dict[tuple[str, int], int] = {}
        for tp, offsets in self._pending.items():
            last = None
            for offset in sorted(offsets):
                if not offsets[offset]:
                    break
                last = offset
            if last is not None:
                for offset in [o for o in offsets if o <= last]:
                    del offsets[offset]
                result[tp] = last + 1
        return result

    def in_flight(self) -> int:
        return sum(1 for offsets in self._pending.values() for done in offsets.values() if not done)
