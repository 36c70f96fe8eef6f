"""A graceful stop of the embedded pipeline, in the order that keeps every paid answer.

Stopping every stage at once (as before) let the LLM worker wait minutes for its calls while
the judge and store had already stopped: answers that arrived meanwhile were dropped, and the
questions were paid for again after the restart. Now, on SIGTERM (uvicorn first lets open
requests finish, for at most `shutdown_timeout_s`; long-polls return at once):

1. the worker stops taking questions and waits for its calls in flight, for at most
   `shutdown_timeout_s`; what is still running then is cancelled, uncommitted: storage still
   says queued, so the restart resumes it (the one call cut short is the only one paid twice);
2. the judge and the store go on until they have consumed everything the worker published
   (bounded by `shutdown_timeout_s` too): every answer that came back is scored and stored;
3. then the judge, store, retrier and hit flusher stop (a judge batch still waiting for
   LLM-judge calls after one more bound is cancelled: its answers are stored as scoring and
   judged again after the restart), and the bus closes.

So a stop takes at most about three times `shutdown_timeout_s` (plus uvicorn's own wait for
open requests), and usually the length of the slowest LLM call in flight.

The distributed stages need no ordering (each is its own process, and Kafka keeps what one
published for the next): there only the worker's wait is bounded (ConcurrentRunner
.drain_timeout_s), below the stage's stop watchdog, so a slow LLM never turns a stop into a
hard exit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

log = logging.getLogger(__name__)


class _Lagging(Protocol):
    def lag(self, group: str, topic: str) -> int: ...


async def wait_caught_up(
    bus: _Lagging,
    groups: Mapping[str, Sequence[str]],
    busy: Sequence[Any],
    timeout_s: float,
    poll_s: float = 0.02,
) -> bool:
    """True once every group has consumed (and committed) everything on its topics and no
    runner in `busy` holds a batch, twice in a row (a batch in hand publishes more)."""
    deadline = time.monotonic() + timeout_s
    quiet = 0
    while time.monotonic() < deadline:
        lag = sum(max(0, bus.lag(g, t)) for g, topics in groups.items() for t in topics)
        holding = any(getattr(r, "_in_flight", 0) for r in busy)
        quiet = quiet + 1 if lag == 0 and not holding else 0
        if quiet >= 2:
            return True
        await asyncio.sleep(poll_s)
    return False


async def stop_embedded(
    stops: Mapping[str, asyncio.Event],
    tasks: Mapping[str, asyncio.Task[None]],
    *,
    bus: _Lagging | None,
    groups: Mapping[str, Sequence[str]],
    runners: Mapping[str, Any],
    timeout_s: float,
) -> None:
    """Stop the embedded stages in order (see the module docstring)."""
    started = time.monotonic()
    worker = runners.get("worker")
    if worker is not None:
        worker.drain_timeout_s = timeout_s
    if "worker" in stops:
        stops["worker"].set()
    if "worker" in tasks:
        await asyncio.gather(tasks["worker"], return_exceptions=True)
    if bus is not None:
        downstream = {g: t for g, t in groups.items() if g in ("judge", "store")}
        busy = [r for name, r in runners.items() if name in ("judge", "store")]
        if not await wait_caught_up(bus, downstream, busy, timeout_s):
            log.warning(
                "stop: judge/store not caught up after %.0f s; the rest is resumed at restart",
                timeout_s,
            )
    for event in stops.values():
        event.set()
    # A judge batch still waiting for LLM-judge calls is cut after the bound too: uncommitted,
    # its answers stay stored as scoring and are judged again after the restart.
    pending = [t for t in tasks.values() if not t.done()]
    if pending:
        _, late = await asyncio.wait(pending, timeout=timeout_s)
        for task in late:
            log.warning("stop: %s still busy after %.0f s: cancelled", task.get_name(), timeout_s)
            task.cancel()
    await asyncio.gather(*tasks.values(), return_exceptions=True)
    log.info("pipeline stopped in %.1f s", time.monotonic() - started)
