"""Priority lanes for LLM calls: when interactive and batch-priority questions compete for the
worker's call slots (and so for the provider's quota behind them), interactive calls go first.
A batch-priority call takes a slot only when no interactive call is waiting for one."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator


class PrioritySlots:
    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError("need at least one slot")
        self.free = slots
        self._waiting: dict[str, deque[asyncio.Future[None]]] = {
            "interactive": deque(),
            "batch": deque(),
        }
        self.waited: dict[str, int] = {"interactive": 0, "batch": 0}

    def _wake(self) -> None:
        while self.free > 0:
            queue = self._waiting["interactive"] or self._waiting["batch"]
            if not queue:
                return
            future = queue.popleft()
            if not future.done():
                self.free -= 1
                future.set_result(None)

    def try_acquire(self, lane: str) -> bool:
        """Take a slot at once if one is free and nobody of this priority or higher waits."""
        ahead = self._waiting["interactive"] or (lane == "batch" and self._waiting["batch"])
        if self.free > 0 and not ahead:
            self.free -= 1
            return True
        return False

    async def acquire(self, lane: str) -> None:
        lane = "batch" if lane == "batch" else "interactive"
        if self.try_acquire(lane):
            return
        self.waited[lane] += 1
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[lane].append(future)
        try:
            await future
        except BaseException:
            if future.done() and not future.cancelled():
                self.release()  # granted as we were cancelled: give it back
            raise

    def release(self) -> None:
        self.free += 1
        self._wake()

    @contextlib.asynccontextmanager
    async def slot(self, lane: str) -> AsyncIterator[None]:
        await self.acquire(lane)
        try:
            yield
        finally:
            self.release()
