"""The embedded mode: every stage in one process over the in-process bus and SQLite.

The stages are built by qaloop.wiring, as in the distributed mode; this module only chooses
the adapters (MemoryBus, a private repository) and runs the stages as tasks. At start, every
question storage knows as unfinished is put back on the topic its state says
(qaloop.services.recovery): together with the write-before-202 in the gateway, a crash (even
SIGKILL) and restart loses no accepted question. Replays are harmless: writes are idempotent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from qaloop.bus.base import Bus
from qaloop.bus.memory import MemoryBus
from qaloop.gateway.service import StatusBoard
from qaloop.lifecycle import stop_embedded
from qaloop.llm.accounting import cost_stats
from qaloop.llm.base import Provider
from qaloop.llm.factory import make_provider
from qaloop.llm.fallback import fallback_stats
from qaloop.observability.lag import MemoryLag
from qaloop.observability.metrics import Metrics
from qaloop.services.recovery import Recovery
from qaloop.services.retrier import Retrier
from qaloop.services.runner import BatchRunner, ConcurrentRunner
from qaloop.services.webhooks import chain, webhook_dispatcher
from qaloop.settings import Settings
from qaloop.storage.base import Repository
from qaloop.storage.factory import open_repository
from qaloop.wiring import WORKER, Wiring

log = logging.getLogger(__name__)


class EmbeddedPipeline:
    """Every stage (qaloop.wiring) as an asyncio task of this process, over the in-process bus
    and a private repository."""

    def __init__(
        self,
        settings: Settings,
        *,
        provider: Provider | None = None,
        repo: Repository | None = None,
        bus: Bus | None = None,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics if metrics is not None else Metrics()  # one registry per pipeline
        m = self.metrics
        self.wiring = Wiring(settings, shared_bus=False, clock=clock)
        self.topics = self.wiring.topics
        self.bus: Bus = bus or MemoryBus(self.topics)
        self.repo = repo or open_repository(settings.db)
        self.provider = provider or make_provider(settings)
        self.board = StatusBoard()
        self.service = self.wiring.question_service(self.repo, self.bus, m, board=self.board)
        self.cache = self.service.cache
        self._stop = asyncio.Event()
        self._stops: dict[str, asyncio.Event] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.resumed = 0
        w = self.wiring
        # The stages' consumers join their groups at once; nothing is polled before start().
        worker = w.worker(self.bus, self.provider, m, on_start=self.board.started)
        self.worker_stage = worker
        judge = w.judge(self.bus, m)
        # Callbacks (callback_url) are delivered next to the store, which sees every final.
        self.webhooks = webhook_dispatcher(settings, self.repo, clock)
        on_final = chain(
            self.service.notify_final, self.webhooks.notify_final if self.webhooks else None
        )
        store = w.store(self.bus, self.repo, m, on_final=on_final)
        self.worker = worker.worker
        self.judge = judge.judge
        self.store = store.store
        self.retrier: Retrier = w.retrier(self.bus, m)
        self.recovery: Recovery = w.recovery(self.repo, self.bus)
        self.runners: dict[str, ConcurrentRunner | BatchRunner] = {
            "worker": worker.runner,
            "judge": judge.runner,
            "store": store.runner,
        }

    async def start(self) -> None:
        await self.bus.start()
        if isinstance(self.bus, MemoryBus):
            self.metrics.watch_lag(MemoryLag(self.bus, self.wiring.groups()))
        await self._resume()
        # One stop event per task: they stop in order (qaloop.lifecycle.stop_embedded).
        stop = self._stop_for
        for name, coro in (
            *((name, runner.run(stop(name))) for name, runner in self.runners.items()),
            ("retrier", self.retrier.run(stop("retrier"))),
            ("hits", self.service.run_hit_flusher(stop("hits"))),
            *([("webhooks", self.webhooks.run(stop("webhooks")))] if self.webhooks else []),
            *self._spend_tasks(),
        ):
            self._tasks.append(asyncio.create_task(coro, name=name))

    def _stop_for(self, name: str) -> asyncio.Event:
        return self._stops.setdefault(name, asyncio.Event())

    def _spend_tasks(self) -> list[tuple[str, Any]]:
        lane = self.worker_stage.batch_lane
        return [("batch", lane.run(self._stop_for("batch")))] if lane is not None else []

    async def _resume(self) -> None:
        """The in-process bus starts empty: every unfinished question goes back (Recovery)."""
        unfinished = await self.recovery.republish_unfinished()
        self.service.in_flight.update(e.question_id for e in unfinished)
        self.resumed = len(unfinished)

    def pause_workers(self) -> None:
        """Stop handing pending questions to the LLM worker (accepting still works)."""
        self.runners[WORKER].consumer.pause()

    def resume_workers(self) -> None:
        self.runners[WORKER].consumer.resume()

    async def drain(self, timeout_s: float = 60.0) -> bool:
        """Wait until every question accepted or resumed here is final."""
        deadline = time.monotonic() + timeout_s
        while self.service.in_flight:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    async def stop(self) -> None:
        self._stop.set()
        self.service.closing.set()
        subs = self.wiring.groups()
        await stop_embedded(
            self._stops,
            {task.get_name(): task for task in self._tasks},
            bus=self.bus if isinstance(self.bus, MemoryBus) else None,
            groups={
                "judge": subs[self.wiring.group("judge")],
                "store": subs[self.wiring.group("store")],
            },
            runners=self.runners,
            timeout_s=self.settings.shutdown_timeout_s,
        )
        await self.service.flush_hits()
        if self.webhooks is not None:
            self.webhooks.outbox.close()
        await self.provider.aclose()
        await self.worker_stage.aclose()
        await self.judge.aclose()  # the LLM judge's provider
        await self.bus.close()

    def stats(self) -> dict[str, Any]:
        counts = self.repo.state_counts()
        lane = self.worker_stage.batch_lane
        return {
            **self.service.stats(),
            "pipeline": {
                **self.worker.stats.as_dict(),
                "resumed_from_park": self.retrier.resumed,
                "held_parked": self.retrier.held,
                "judge_decisions": dict(self.judge.decisions),
                "judge_unscored": self.judge.unscored,
                "judge_gates": self.judge.stats(),
                "judge_quality": dict(self.judge.quality),
                "resumed_at_start": self.resumed,
                "in_flight": len(self.service.in_flight),
            },
            "storage": counts,
            "cost": cost_stats(self.repo, counts),
            "fallbacks": fallback_stats(self.provider),
            "batch_lane": lane.stats.as_dict() if lane is not None else {},
            "budget": self.worker.budget.as_dict() if self.worker.budget is not None else {},
        }
