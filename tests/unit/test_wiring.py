"""qaloop.wiring: both modes get their stages, topics and groups from one place."""

from __future__ import annotations

import pytest

from qaloop import wiring
from qaloop.bus.memory import MemoryBus
from qaloop.llm.simulated import SimulatedProvider
from qaloop.observability.metrics import Metrics
from qaloop.pipeline import EmbeddedPipeline
from qaloop.settings import Settings
from qaloop.storage.sqlite import SQLiteRepository


def test_one_group_map_covers_every_topic() -> None:
    w = wiring.Wiring(Settings(topic_prefix="p"), shared_bus=True)
    groups = w.groups()
    assert set(groups) == {"p.worker", "p.judge", "p.store", "p.retrier"}
    assert set(groups["p.store"]) == set(w.topics.all())
    assert groups["p.worker"] == [w.topics.questions]
    # an in-process bus is private to its pipeline: groups are the stage names
    assert set(wiring.Wiring(Settings(), shared_bus=False).groups()) == set(wiring.STAGES)


def test_stages_follow_the_settings() -> None:
    s = Settings(topic_prefix="p", llm_concurrency=7, scorer="jaccard", threshold=0.4)
    w = wiring.Wiring(s, shared_bus=True)
    bus = MemoryBus(w.topics)
    worker = w.worker(bus, SimulatedProvider(), Metrics())
    assert worker.runner.concurrency == 7
    assert worker.runner.consumer.group == "p.worker"  # type: ignore[attr-defined]
    judge = w.judge(bus, Metrics())
    cheap = judge.judge.stage.gate
    assert cheap is not None and cheap.name.endswith("jaccard")  # the cheap gate's scorer
    assert judge.judge.gate.threshold == 0.4 and judge.judge.stage.second is not None
    assert judge.runner.max_batch == wiring.JUDGE_MAX_BATCH
    store = w.store(bus, SQLiteRepository(":memory:"), Metrics())
    assert store.runner.consumer.topics == wiring.subscriptions(w.topics)["store"]  # type: ignore[attr-defined]


def test_the_embedded_pipeline_uses_the_wiring() -> None:
    p = EmbeddedPipeline(
        Settings(topic_prefix="e", cache_size=3), repo=SQLiteRepository(":memory:")
    )
    assert p.cache.capacity == 3  # type: ignore[attr-defined]
    assert p.topics == wiring.topics_for(p.settings)
    assert p.runners["store"].max_batch == wiring.STORE_MAX_BATCH  # type: ignore[union-attr]


def test_the_judge_takes_small_batches_only_when_its_gate_embeds() -> None:
    # the default gate embeds (all-MiniLM-L6-v2), where a batch adds latency, not throughput
    assert wiring.judge_max_batch(Settings()) == wiring.JUDGE_EMBEDDING_MAX_BATCH
    assert wiring.judge_max_batch(Settings(scorer="embedding")) == wiring.JUDGE_EMBEDDING_MAX_BATCH
    assert wiring.judge_max_batch(Settings(scorer="composite")) == wiring.JUDGE_MAX_BATCH
    assert wiring.JUDGE_EMBEDDING_MAX_BATCH < wiring.JUDGE_MAX_BATCH


def test_the_worker_and_the_llm_judge_of_one_process_share_the_meter_and_the_budget() -> None:
    """One price table and one spend ledger per process: the judge's calls count against the
    budget that stops generation (issue 12, point 3), and a separate process builds its own."""
    from qaloop.llm.judge import LLMJudge

    s = Settings(budget_usd=1.0)
    w = wiring.Wiring(s, shared_bus=False)
    bus = MemoryBus(w.topics)
    metrics = Metrics()
    worker = w.worker(bus, SimulatedProvider(), metrics).worker
    judge = w.judge(bus, metrics)
    second = judge.judge.stage.second
    assert isinstance(second, LLMJudge)
    assert worker.budget is not None and second.budget is worker.budget
    assert second.meter is worker.meter and judge.meter is worker.meter
    # the Flink job / a judge process: its own, from the same settings
    stage, _ = wiring.judge_gate(s)
    alone = stage.second
    assert isinstance(alone, LLMJudge) and alone.meter is not None
    assert alone.budget is not None and alone.budget is not worker.budget
    assert alone.budget.config == worker.budget.config


def test_the_accept_waits_for_the_disk_unless_a_replicated_publish_is_the_durable_copy() -> None:
    def waits(**overrides: object) -> bool:
        s = Settings(**overrides)  # type: ignore[arg-type]
        service = wiring.Wiring(s, shared_bus=True).question_service(
            SQLiteRepository(":memory:"), MemoryBus()
        )
        assert service.accept_waits_for_disk is s.accept_waits_for_disk()
        return service.accept_waits_for_disk

    replicated = {"bus": "kafka", "kafka_replication_factor": 3, "kafka_min_insync_replicas": 2}
    assert waits() is True  # embedded: the database is the only copy
    assert waits(bus="kafka") is True  # one in-sync replica: a broker does not fsync either
    assert waits(**replicated) is False
    assert waits(**replicated, accept_durability="storage") is True
    assert waits(**replicated, accept_durability="kafka") is False
    # embedded: no Kafka, so the database is the copy whatever the replicas say
    assert waits(kafka_replication_factor=3, kafka_min_insync_replicas=2) is True
    with pytest.raises(ValueError, match="accept_durability=kafka needs kafka_min_insync_"):
        Settings(bus="kafka", accept_durability="kafka")
