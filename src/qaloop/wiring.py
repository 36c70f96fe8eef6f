"""One wiring for both modes: every stage, from one Settings object.

What a stage *is* — its handler, the runner it runs on and that runner's batch sizes and waits,
the topics it reads, its consumer group, the gateway's cache, the judge's gate, the recovery of
questions stored but never published — is decided here, once. The embedded pipeline
(qaloop.pipeline: every stage in one process, in-process bus, SQLite) and the distributed
services (qaloop.services.processes: one process per stage, Kafka, PostgreSQL) only choose the
adapters (bus, repository, LLM provider) and the processes. The Flink job reads its gate from
here too (`judge_gate`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from qaloop.bus.base import Bus, Topics
from qaloop.core.cache import Cache, make_cache
from qaloop.core.model import Envelope
from qaloop.core.paraphrase import ParaphraseIndex
from qaloop.core.retry import RetryPolicy
from qaloop.core.routing import GateConfig
from qaloop.gateway.service import CachedAnswer, QuestionService, StatusBoard
from qaloop.llm.accounting import Meter, meter_from_settings
from qaloop.llm.base import GenerationRequest, Provider
from qaloop.llm.batch import make_batch_client
from qaloop.llm.budget import Budget, budget_from_settings
from qaloop.llm.fallback import attach_metrics
from qaloop.observability.metrics import Metrics
from qaloop.quality.cascade import Cascade
from qaloop.services.batch_lane import BatchLane, BatchLaneConfig
from qaloop.services.gating import build_gate_stage, prompt_config, routing_config
from qaloop.services.judge import Judge
from qaloop.services.priority import PrioritySlots
from qaloop.services.recovery import Recovery
from qaloop.services.retrier import Retrier
from qaloop.services.runner import BatchRunner, ConcurrentRunner
from qaloop.services.store import Store
from qaloop.services.worker import Worker, WorkerConfig, attempt_request
from qaloop.settings import Settings
from qaloop.storage.base import Repository

if TYPE_CHECKING:
    from qaloop.bus.kafka import KafkaSettings

WORKER, JUDGE, STORE, RETRIER = "worker", "judge", "store", "retrier"
STAGES = (WORKER, JUDGE, STORE, RETRIER)

# ---------------------------------------------------------------- the numbers, in one place

JUDGE_MAX_BATCH = 256  # answers scored per call: the lexical scorers are batched
# With the embedding gate a batch buys almost nothing (all-MiniLM-L6-v2: 65, 75, 71, 68 pairs/s
# at batches of 1, 8, 32, 64; bench/results/scorers.json) and costs ~15-165 ms of CPU per
# answer, so a backlog polled as 256 answers held the first one for the whole batch (seconds).
JUDGE_EMBEDDING_MAX_BATCH = 16
STORE_MAX_BATCH = 2000  # envelopes per storage transaction
# How long an idle stage's poll waits for a message. Delivery wakes it at once (librdkafka
# returns as soon as a message is fetched; the memory bus wakes its consumers), so this is only
# how often an idle loop checks `stop`.
POLL_TIMEOUT_S = 0.2
STORE_POLL_TIMEOUT_S = 0.05
# The worker's timeout of one call: the provider's own, plus the longest rate-limit wait
# (qaloop.llm.protection), plus this margin.
REQUEST_TIMEOUT_MARGIN_S = 5.0
RETRIER_MAX_HELD = 100_000  # parked questions held in memory before the retrier pauses
# The stale sweep (Recovery) runs only while the worker group's backlog is below this: a
# question waiting behind a backlog looks stuck from storage.
SWEEP_MAX_BACKLOG = 1000
SWEEP_LIMIT = 1000  # questions re-published per sweep
COLD_PARTITIONS = 2  # partitions of the delayed and dead-letter topics
PRODUCER_LINGER_MS = 5  # how long a producer waits to batch records (Kafka, Flink sinks)
CONSUMER_FETCH_WAIT_MS = 100  # longest wait of a fetch request for data (Kafka consumers)


# ---------------------------------------------------------------- names: topics and groups


def topics_for(settings: Settings) -> Topics:
    return Topics.with_prefix(settings.topic_prefix)


def subscriptions(topics: Topics) -> dict[str, list[str]]:
    """Stage -> the topics its consumer group reads: the one map (lag probes, dashboards and
    the runners all read it). The store mirrors every topic: a question's state is visible
    while it moves, and it owns the validated and dead-letter topics."""
    t = topics
    return {
        WORKER: [t.questions],
        JUDGE: [t.generated],
        STORE: [t.questions, t.generated, t.delayed, t.validated, t.dead_letter],
        RETRIER: [t.delayed],
    }


def shared_group(settings: Settings, stage: str) -> str:
    """A stage's consumer group on a shared bus: `<topic prefix>.<stage>`, so two deployments
    with different prefixes never share a group."""
    return f"{settings.topic_prefix}.{stage}"


# ---------------------------------------------------------------- policies from settings


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
    return routing_config(settings)


def judge_max_batch(settings: Settings) -> int:
    """Answers the judge takes per poll (and scores, publishes and commits together)."""
    try:
        from qaloop.gate_config import gate_spec_from_settings
    except ImportError:  # a build without the default gate: the plain scorer path
        embeds = settings.scorer == "embedding"
    else:
        embeds = gate_spec_from_settings(settings).scorer == "embedding"
    return JUDGE_EMBEDDING_MAX_BATCH if embeds else JUDGE_MAX_BATCH


def judge_gate(
    settings: Settings,
    *,
    meter: Meter | None = None,
    budget: Budget | None = None,
    metrics: Metrics | None = None,
) -> tuple[Cascade, GateConfig]:
    """The judge's gate stage (the cheap gate, then the LLM judge for UNSURE verdicts and
    questions without a reference: qaloop.services.gating) and its routing: the single place
    they are built, for the plain judge (both modes) and the Flink job alike. The LLM judge's
    calls are priced and budgeted like generation's (`meter`, `budget`: the worker's in one
    process; built from the settings when absent)."""
    stage = build_gate_stage(settings, meter=meter, budget=budget, metrics=metrics)
    return stage, gate_config(settings)


def worker_config(settings: Settings) -> WorkerConfig:
    return WorkerConfig(
        concurrency=settings.llm_concurrency,
        request_timeout_s=(
            settings.llm_timeout_s + settings.llm_max_queue_wait_s + REQUEST_TIMEOUT_MARGIN_S
        ),
        prompt_template=settings.prompt_template,
        seed=settings.sim_seed,
        prompt=prompt_config(settings),
    )


def priority_slots(settings: Settings) -> PrioritySlots | None:
    """Interactive calls first when both lanes compete for the call slots: only when calls
    are bounded below the worker's concurrency (`llm_max_in_flight`), else nothing waits."""
    bound = settings.llm_max_in_flight
    if not bound or bound >= settings.llm_concurrency:
        return None
    return PrioritySlots(bound)


def batch_lane_for(
    settings: Settings,
    topics: Topics,
    bus: Bus,
    meter: Meter | None,
    budget: Budget | None = None,
) -> BatchLane | None:
    """The batch lane (docs/spend.md) when `batch_lane` is on."""
    if not settings.batch_lane:
        return None
    config = worker_config(settings)

    def request(env: Envelope, model: str | None) -> GenerationRequest:
        # the interactive lane's request: feedback prompt, the attempt's temperature and model
        return attempt_request(config, env, model=model)

    return BatchLane(
        make_batch_client(settings),
        topics,
        bus.publish_many,
        request=request,
        escalation=config.prompt.escalation,
        meter=meter,
        budget=budget,
        config=BatchLaneConfig(
            max_size=settings.batch_max_size,
            max_wait_s=settings.batch_max_wait_s,
            poll_every_s=settings.batch_poll_s,
            journal_path=settings.batch_journal,
        ),
    )


def answer_cache(settings: Settings) -> Cache[str, CachedAnswer]:
    return make_cache(settings.cache_policy, settings.cache_size, settings.cache_ttl_s or None)


def kafka_settings(settings: Settings) -> KafkaSettings:
    from qaloop.bus.kafka import KafkaSettings  # optional dependency

    return KafkaSettings(
        settings.kafka_bootstrap,
        partitions=settings.kafka_partitions,
        cold_partitions=COLD_PARTITIONS,
        replication_factor=settings.kafka_replication_factor,
        min_insync_replicas=settings.kafka_min_insync_replicas,
        session_timeout_ms=settings.kafka_session_timeout_ms,
        linger_ms=PRODUCER_LINGER_MS,
        fetch_wait_max_ms=CONSUMER_FETCH_WAIT_MS,
        client_id=f"qaloop-{settings.topic_prefix}",
        producer=dict(settings.kafka_producer_config),
        consumer=dict(settings.kafka_consumer_config),
    )


# ---------------------------------------------------------------- the stages


@dataclass
class WorkerStage:
    worker: Worker
    runner: ConcurrentRunner
    batch_lane: BatchLane | None = None  # its loop runs next to the runner (docs/spend.md)

    async def aclose(self) -> None:
        """What the worker's spend parts hold open (the batch client, the budget ledger)."""
        if self.batch_lane is not None:
            await self.batch_lane.aclose()
        if self.worker.budget is not None:
            await self.worker.budget.aclose()


@dataclass
class JudgeStage:
    judge: Judge
    runner: BatchRunner
    meter: Meter | None = None  # prices the LLM judge's calls (this process's spend)


@dataclass
class StoreStage:
    store: Store
    runner: BatchRunner


class Wiring:
    """Builds the stages of one deployment over the adapters its caller chose.

    `shared_bus`: the bus is shared by several deployments and processes (Kafka), so consumer
    groups carry the topic prefix; an in-process bus names them by stage only."""

    def __init__(
        self,
        settings: Settings,
        *,
        shared_bus: bool,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.topics = topics_for(settings)
        self.shared_bus = shared_bus
        self.clock = clock
        self._spend: tuple[Meter, Budget | None] | None = None

    def spend(self, metrics: Metrics) -> tuple[Meter, Budget | None]:
        """This process's meter and spend budget, built once: the worker and the LLM judge
        of one process price with one table and charge one ledger."""
        if self._spend is None:
            s = self.settings
            # a bad price table stops the start here
            self._spend = (meter_from_settings(s, metrics), budget_from_settings(s, metrics))
        return self._spend

    def group(self, stage: str) -> str:
        return shared_group(self.settings, stage) if self.shared_bus else stage

    def groups(self) -> dict[str, list[str]]:
        """Consumer group -> its topics, for every stage (the lag probes)."""
        return {self.group(stage): topics for stage, topics in subscriptions(self.topics).items()}

    def topics_of(self, stage: str) -> list[str]:
        return subscriptions(self.topics)[stage]

    def worker(
        self,
        bus: Bus,
        provider: Provider,
        metrics: Metrics,
        *,
        on_start: Callable[[Envelope], None] | None = None,
    ) -> WorkerStage:
        s = self.settings
        meter, budget = self.spend(metrics)
        attach_metrics(provider, metrics)
        worker = Worker(
            provider,
            self.topics,
            worker_config(s),
            retry_policy(s),
            clock=self.clock,
            on_start=on_start,
            metrics=metrics,
            meter=meter,
            budget=budget,
            priority=priority_slots(s),
            batch_lane=batch_lane_for(s, self.topics, bus, meter, budget),
        )
        runner = ConcurrentRunner(
            WORKER,
            bus,
            bus.consumer(self.group(WORKER), self.topics_of(WORKER)),
            worker.handle,
            concurrency=s.llm_concurrency,
            dead_letter_topic=self.topics.dead_letter,
            poll_timeout_s=POLL_TIMEOUT_S,
            metrics=metrics,
        )
        return WorkerStage(worker, runner, worker.batch_lane)

    def judge(self, bus: Bus, metrics: Metrics) -> JudgeStage:
        meter, budget = self.spend(metrics)
        stage, gate = judge_gate(self.settings, meter=meter, budget=budget, metrics=metrics)
        judge = Judge(stage, gate, self.topics, clock=self.clock, metrics=metrics)
        runner = BatchRunner(
            JUDGE,
            bus,
            bus.consumer(self.group(JUDGE), self.topics_of(JUDGE)),
            judge.handle_batch,
            max_batch=judge_max_batch(self.settings),
            poll_timeout_s=POLL_TIMEOUT_S,
            metrics=metrics,
        )
        return JudgeStage(judge, runner, meter)

    def store(
        self,
        bus: Bus,
        repo: Repository,
        metrics: Metrics,
        *,
        on_final: Callable[[Envelope], None] | None = None,
    ) -> StoreStage:
        store = Store(repo, self.topics, on_final=on_final, clock=self.clock, metrics=metrics)
        runner = BatchRunner(
            STORE,
            bus,
            bus.consumer(self.group(STORE), self.topics_of(STORE)),
            store.handle_batch,
            max_batch=STORE_MAX_BATCH,
            poll_timeout_s=STORE_POLL_TIMEOUT_S,
            metrics=metrics,
        )
        return StoreStage(store, runner)

    def retrier(self, bus: Bus, metrics: Metrics) -> Retrier:
        return Retrier(
            bus,
            bus.consumer(self.group(RETRIER), self.topics_of(RETRIER)),
            self.topics,
            max_held=RETRIER_MAX_HELD,
            poll_timeout_s=POLL_TIMEOUT_S,
            clock=self.clock,
            metrics=metrics,
        )

    def recovery(
        self,
        repo: Repository,
        bus: Bus,
        *,
        backlog: Callable[[], Awaitable[int]] | None = None,
    ) -> Recovery:
        return Recovery(
            repo,
            bus,
            self.topics,
            older_than_s=self.settings.stale_after_s,
            backlog=backlog,
            max_backlog=SWEEP_MAX_BACKLOG,
            limit=SWEEP_LIMIT,
            clock=self.clock,
        )

    def question_service(
        self,
        repo: Repository,
        bus: Bus,
        metrics: Metrics | None = None,
        *,
        board: StatusBoard | None = None,
    ) -> QuestionService:
        service = QuestionService(
            repo,
            bus,
            self.topics,
            answer_cache(self.settings),
            board=board,
            clock=self.clock,
            metrics=metrics,
            failed_recheck_s=self.settings.failed_recheck_s,
            accept_waits_for_disk=self.settings.accept_waits_for_disk(),
        )
        if self.settings.paraphrase_cache:  # off by default (docs/spend.md)
            service.paraphrases = ParaphraseIndex(
                self.settings.paraphrase_threshold, capacity=self.settings.cache_size * 10
            )
        return service
