"""The embedded mode: every stage in one process over the in-process bus and SQLite.

At start, every question storage knows as unfinished is put back on the topic its state says
(queued -> pending questions, or delayed when parked; generating -> pending questions; scoring
-> generated answers): together with the write-before-202 in the gateway, a crash (even
SIGKILL) and restart loses no accepted question. Replays are harmless: writes are idempotent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from qaloop.bus.base import Bus, OutMessage, Topics
from qaloop.bus.memory import MemoryBus
from qaloop.core.cache import Cache, make_cache
from qaloop.core.model import Envelope, QuestionState
from qaloop.core.retry import RetryPolicy
from qaloop.core.routing import GateConfig
from qaloop.gateway.admission import Admission
from qaloop.gateway.service import CachedAnswer, QuestionService, StatusBoard
from qaloop.lifecycle import stop_embedded
from qaloop.llm.base import Provider
from qaloop.llm.factory import make_provider
from qaloop.observability.lag import MemoryLag
from qaloop.observability.metrics import Metrics
from qaloop.quality import get_scorer
from qaloop.services.judge import Judge
from qaloop.services.retrier import Retrier
from qaloop.services.runner import BatchRunner, ConcurrentRunner, out
from qaloop.services.store import Store
from qaloop.services.worker import Worker, WorkerConfig
from qaloop.settings import Settings
from qaloop.storage.base import Repository, open_repository

log = logging.getLogger(__name__)


def retry_policy(settings: Settings) -> RetryPolicy:
    return RetryPolicy(
        overload_tries=settings.overload_tries,
        backoff_base_s=settings.backoff_base_s,
        backoff_cap_s=settings.backoff_cap_s,
        quota_default_delay_s=settings.quota_default_delay_s,
        quota_day_delay_s=settings.quota_day_delay_s,
        max_parks=settings.max_parks,
        max_total_s=settings.retry_max_total_s,
    )


def gate_config(settings: Settings) -> GateConfig:
    return GateConfig(threshold=settings.threshold, max_attempts=settings.max_attempts)


def worker_config(settings: Settings) -> WorkerConfig:
    return WorkerConfig(
        concurrency=settings.llm_concurrency,
        # the provider's own timeout + the longest rate-limit wait (qaloop.llm.protection)
        request_timeout_s=settings.llm_timeout_s + settings.llm_max_queue_wait_s + 5.0,
        prompt_template=settings.prompt_template,
        seed=settings.sim_seed,
    )


def resume_message(envelope: Envelope, topics: Topics) -> OutMessage:
    """Where an unfinished question goes back to after a restart."""
    if envelope.state is QuestionState.SCORING and envelope.answer is not None:
        return out(topics.generated, envelope)
    if envelope.due_at is not None:
        return out(topics.delayed, envelope)
    return out(topics.questions, envelope.evolve(state=QuestionState.QUEUED))


class EmbeddedPipeline:
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
        self.topics = Topics.with_prefix(settings.topic_prefix)
        self.bus: Bus = bus or MemoryBus(self.topics)
        self.repo = repo or open_repository(settings.db)
        self.provider = provider or make_provider(settings)
        self.board = StatusBoard()
        self.cache: Cache[str, CachedAnswer] = make_cache(
            settings.cache_policy, settings.cache_size, settings.cache_ttl_s or None
        )
        self.service = QuestionService(
            self.repo,
            self.bus,
            self.topics,
            self.cache,
            board=self.board,
            clock=clock,
            metrics=m,
            admission=Admission(registry=m.registry),  # checks added by the entry point
            failed_recheck_s=settings.failed_recheck_s,
        )
        self.worker = Worker(
            self.provider,
            self.topics,
            worker_config(settings),
            retry_policy(settings),
            clock=clock,
            on_start=self.board.started,
            metrics=m,
        )
        self.judge = Judge(
            get_scorer(settings.scorer),
            gate_config(settings),
            self.topics,
            clock=clock,
            metrics=m,
        )
        self.store = Store(
            self.repo, self.topics, on_final=self.service.notify_final, clock=clock, metrics=m
        )
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.resumed = 0
        self.retrier: Retrier | None = None
        self.runners: dict[str, Any] = {}

    async def start(self) -> None:
        await self.bus.start()
        t = self.topics
        m = self.metrics
        if isinstance(self.bus, MemoryBus):
            groups = {
                "worker": [t.questions],
                "judge": [t.generated],
                "store": self.store.subscriptions(),
                "retrier": [t.delayed],
            }
            m.watch_lag(MemoryLag(self.bus, groups))
        worker = ConcurrentRunner(
            "worker",
            self.bus,
            self.bus.consumer("worker", [t.questions]),
            self.worker.handle,
            concurrency=self.settings.llm_concurrency,
            dead_letter_topic=t.dead_letter,
            metrics=m,
        )
        judge = BatchRunner(
            "judge",
            self.bus,
            self.bus.consumer("judge", [t.generated]),
            self.judge.handle_batch,
            max_batch=256,
            metrics=m,
        )
        store = BatchRunner(
            "store",
            self.bus,
            self.bus.consumer("store", self.store.subscriptions()),
            self.store.handle_batch,
            max_batch=2000,
            poll_timeout_s=0.05,
            metrics=m,
        )
        self.retrier = Retrier(self.bus, self.bus.consumer("retrier", [t.delayed]), t, metrics=m)
        self.runners = {"worker": worker, "judge": judge, "store": store}
        await self._resume()
        # One stop event per stage: they stop in order (qaloop.lifecycle.stop_embedded).
        self._stops = {n: asyncio.Event() for n in ("worker", "judge", "store", "retrier", "hits")}
        for name, coro in (
            ("worker", worker.run(self._stops["worker"])),
            ("judge", judge.run(self._stops["judge"])),
            ("store", store.run(self._stops["store"])),
            ("retrier", self.retrier.run(self._stops["retrier"])),
            ("hits", self.service.run_hit_flusher(self._stops["hits"])),
        ):
            self._tasks.append(asyncio.create_task(coro, name=name))

    async def _resume(self) -> None:
        unfinished = await asyncio.to_thread(self.repo.unfinished)
        if not unfinished:
            return
        messages = [resume_message(e, self.topics) for e in unfinished]
        self.service.in_flight.update(e.question_id for e in unfinished)
        await self.bus.publish_many(messages)
        self.resumed = len(unfinished)
        log.info("resumed %d unfinished questions from storage", len(unfinished))

    def pause_workers(self) -> None:
        """Stop handing pending questions to the LLM worker (accepting still works)."""
        self.runners["worker"].consumer.pause()

    def resume_workers(self) -> None:
        self.runners["worker"].consumer.resume()

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
        t = self.topics
        await stop_embedded(
            getattr(self, "_stops", {}),
            {task.get_name(): task for task in self._tasks},
            bus=self.bus if isinstance(self.bus, MemoryBus) else None,
            groups={"judge": [t.generated], "store": self.store.subscriptions()},
            runners=self.runners,
            timeout_s=self.settings.shutdown_timeout_s,
        )
        await self.service.flush_hits()
        await self.provider.aclose()
        await self.bus.close()

    def stats(self) -> dict[str, Any]:
        return {
            **self.service.stats(),
            "pipeline": {
                **self.worker.stats.as_dict(),
                "resumed_from_park": self.retrier.resumed if self.retrier else 0,
                "held_parked": self.retrier.held if self.retrier else 0,
                "judge_decisions": dict(self.judge.decisions),
                "judge_unscored": self.judge.unscored,
                "judge_quality": dict(self.judge.quality),
                "resumed_at_start": self.resumed,
                "in_flight": len(self.service.in_flight),
            },
            "storage": self.repo.state_counts(),
        }
