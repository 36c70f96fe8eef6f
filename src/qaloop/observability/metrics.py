"""Every Prometheus metric of qaloop, defined in one place (docs/observability.md lists them).

A `Metrics` owns its registry (never prometheus_client's global one): two pipelines, or a test
and a pipeline, in one process don't collide on names. Stages receive the `Metrics` of their
process; a stage built without one gets a private `Metrics()` that nobody scrapes.

Two kinds of metric:
- plain prometheus_client counters and histograms, moved where the thing happens (an LLM
  call, a judge decision, a storage transaction);
- values read at scrape time by a collector from counters the code keeps anyway (the
  gateway's request outcomes, the cache's statistics, consumer lag): they cost the hot path
  nothing. The per-request and per-message histograms are `FastHistogram`s, lock-free bucket
  arrays observed from the event loop thread only (~0.3 µs instead of ~1.7 µs).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = [
    "CONTENT_TYPE_LATEST",
    "FastHistogram",
    "FastHistogramFamily",
    "LabelCache",
    "LagSample",
    "Metrics",
]

# No `<name>_created` series: they double the exposition and nothing here reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
QUEUE_WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)
LLM_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0)
BATCH_BUCKETS = (0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
ANSWER_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0)
SCORE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)

# The gateway's in-memory counters (QuestionService.counters) -> outcome label.
GATEWAY_OUTCOMES = {
    "answered_cache": "cache",
    "answered_storage": "storage",
    "answered_failed": "failed",
    "accepted": "accepted",
    "coalesced": "joined",
    "answered_paraphrase": "paraphrase",
}


@dataclass(frozen=True, slots=True)
class LagSample:
    group: str
    topic: str
    partition: int
    lag: int


class LagSource(Protocol):
    def lag_samples(self) -> Sequence[LagSample]: ...


class CacheLike(Protocol):
    capacity: int

    @property
    def stats(self) -> Any: ...

    def __len__(self) -> int: ...


class FastHistogram:
    """A histogram for one event-loop thread: bisect into a bucket array, no lock."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(sorted(bounds))
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        total = 0
        for bound, n in zip((*self.bounds, math.inf), self.counts, strict=True):
            total += n
            out.append(("+Inf" if bound == math.inf else _fmt(bound), float(total)))
        return out


def _fmt(bound: float) -> str:
    return repr(float(bound))


class FastHistogramFamily:
    """Labelled FastHistograms, for the per-message histograms (queue wait, LLM call, score,
    time to answer): observed from the event loop thread only; a scrape (any thread) reads
    them as they are. Children are created on first use and kept."""

    def __init__(
        self,
        name: str,
        doc: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        self.name = name
        self.doc = doc
        self.labelnames = list(labelnames)
        self.buckets = tuple(buckets)
        self._children: dict[tuple[str, ...], FastHistogram] = {}
        registry.register(_FunctionCollector(self.collect))  # type: ignore[arg-type]

    def labels(self, *values: str) -> FastHistogram:
        child = self._children.get(values)
        if child is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name} takes labels {self.labelnames}, got {values}")
            child = self._children[values] = FastHistogram(self.buckets)
        return child

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.doc, labels=self.labelnames)
        for values, child in list(self._children.items()):
            family.add_metric(list(values), child.cumulative(), child.sum)
        yield family


class LabelCache:
    """`metric.labels(*values)` memoised: prometheus_client's `labels()` takes a lock and
    validates on every call; a stage calling it per message keeps its children here."""

    def __init__(self, metric: Any) -> None:
        self.metric = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self.metric.labels(*values)
        return child


class _FunctionCollector:
    """A collector whose metrics are computed when Prometheus scrapes."""

    def __init__(self, collect: Callable[[], Iterable[Metric]]) -> None:
        self._collect = collect

    def collect(self) -> Iterator[Metric]:
        yield from self._collect()


class Metrics:
    """The metrics of one process (one embedded pipeline, or one distributed service)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry

        # --- gateway (besides what the collector reads from QuestionService.counters)
        self.request_seconds = FastHistogram(REQUEST_BUCKETS)
        self.rejected = Counter(
            "qaloop_gateway_rejected",
            "Requests refused with a 4xx, by error code",
            ["code"],
            registry=r,
        )

        # --- LLM worker
        self.llm_calls = Counter(
            "qaloop_llm_calls",
            "LLM calls by provider and outcome (ok or the error class)",
            ["provider", "outcome"],
            registry=r,
        )
        self.llm_seconds = FastHistogramFamily(
            "qaloop_llm_call_seconds",
            "Duration of one LLM call (answers and errors)",
            ["provider", "outcome"],
            LLM_BUCKETS,
            r,
        )
        self.llm_retries = Counter(
            "qaloop_llm_retries",
            "In-process retries after an LLM error (backoff in the call's task)",
            ["error_class"],
            registry=r,
        )
        self.llm_parked = Counter(
            "qaloop_llm_parked",
            "Questions parked on the delayed topic after an LLM error",
            ["error_class"],
            registry=r,
        )
        self.llm_gave_up = Counter(
            "qaloop_llm_gave_up",
            "Questions dead-lettered by the worker (permanent error or budget spent)",
            ["error_class"],
            registry=r,
        )
        self.llm_recovered = Counter(
            "qaloop_llm_recovered",
            "Answers obtained after LLM errors (retried or parked since the last answer), by class",
            ["error_class"],
            registry=r,
        )

        # --- spend (qaloop.llm.accounting)
        self.llm_cost = Counter(
            "qaloop_llm_cost_usd",
            "Spend on LLM calls in USD (price table x usage), by purpose, provider, model, lane",
            ["purpose", "provider", "model", "lane"],
            registry=r,
        )
        self.llm_tokens = Counter(
            "qaloop_llm_tokens",
            "Tokens of LLM calls by purpose and kind (input, output, cached part of input)",
            ["purpose", "kind"],
            registry=r,
        )
        self.llm_usage_estimated = Counter(
            "qaloop_llm_usage_estimated",
            "LLM calls whose provider reported no usage (tokens estimated, still charged)",
            ["purpose", "provider"],
            registry=r,
        )

        self.llm_fallbacks = Counter(
            "qaloop_llm_fallbacks",
            "Calls moved to the next deployment of the fallback chain, by deployment and reason",
            ["deployment", "reason"],
            registry=r,
        )

        self.budget_spent = Gauge(
            "qaloop_budget_spent_usd",
            "Spend counted against a budget this period, as last charged here (scope: global, key)",
            ["scope"],
            registry=r,
        )
        self.budget_soft = Counter(
            "qaloop_budget_soft_exceeded",
            "Times a spend budget's soft limit was crossed (once per scope and period)",
            ["scope"],
            registry=r,
        )
        self.budget_stops = Counter(
            "qaloop_budget_stops",
            "LLM calls (or new questions) stopped because a spend budget is reached",
            ["scope"],
            registry=r,
        )

        # --- retrier
        self.resumed = Counter(
            "qaloop_retrier_resumed", "Parked questions put back on the questions topic", registry=r
        )
        self.resumed_wait = Histogram(
            "qaloop_retrier_parked_seconds",
            "How long a question stayed parked before it was resumed",
            buckets=QUEUE_WAIT_BUCKETS,
            registry=r,
        )

        # --- judge
        self.decisions = Counter(
            "qaloop_judge_decisions",
            "Quality-gate decisions (validate, regenerate, give_up) by attempt",
            ["decision", "attempt"],
            registry=r,
        )
        self.scores = FastHistogramFamily(
            "qaloop_judge_score",
            "Quality scores by attempt (sum/count is the mean score)",
            ["attempt"],
            SCORE_BUCKETS,
            r,
        )
        self.scoring_seconds = Histogram(
            "qaloop_judge_scoring_seconds",
            "Time to score one batch of answers",
            buckets=BATCH_BUCKETS,
            registry=r,
        )

        # --- store
        self.store_write_seconds = Histogram(
            "qaloop_store_write_seconds",
            "Duration of one storage transaction (a batch of envelopes and dead letters)",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.stored = Counter(
            "qaloop_store_envelopes",
            "Envelopes projected into storage, by the state they carried",
            ["state"],
            registry=r,
        )
        self.dead_letters = Counter(
            "qaloop_store_dead_letters", "Dead letters recorded by the store", registry=r
        )
        self.time_to_answer = FastHistogramFamily(
            "qaloop_time_to_answer_seconds",
            "From first seen to a final state (validated or failed), as the store records it",
            ["outcome"],
            ANSWER_BUCKETS,
            r,
        )

        # --- every consuming stage
        self.queue_wait = FastHistogramFamily(
            "qaloop_queue_wait_seconds",
            "Time a message waited in its topic: consume time minus the message timestamp",
            ["stage", "topic"],
            QUEUE_WAIT_BUCKETS,
            r,
        )
        self.consumed = Counter(
            "qaloop_stage_consumed", "Messages consumed, by stage", ["stage"], registry=r
        )
        self.produced = Counter(
            "qaloop_stage_produced", "Messages published, by stage", ["stage"], registry=r
        )
        self.poison = Counter(
            "qaloop_stage_poison",
            "Undecodable messages dead-lettered, by stage",
            ["stage"],
            registry=r,
        )
        self.handler_errors = Counter(
            "qaloop_stage_handler_errors",
            "Handler exceptions (message dead-lettered or batch retried), by stage",
            ["stage"],
            registry=r,
        )
        self.in_flight = Gauge(
            "qaloop_stage_in_flight", "Messages being handled now, by stage", ["stage"], registry=r
        )

        self._lag_sources: list[LagSource] = []
        self.registry.register(_FunctionCollector(self._collect_lag))  # type: ignore[arg-type]

    # ------------------------------------------------------------------ scrape-time sources

    def watch_gateway(
        self,
        counters: Mapping[str, int],
        cache: CacheLike,
        in_flight: Callable[[], int] | None = None,
    ) -> None:
        """Expose the gateway's own counters and its cache, read when scraped."""

        def collect() -> Iterator[Metric]:
            asked = CounterMetricFamily(
                "qaloop_gateway_questions",
                "POST /v1/questions handled, by outcome",
                labels=["outcome"],
            )
            for key, outcome in GATEWAY_OUTCOMES.items():
                asked.add_metric([outcome], counters.get(key, 0))
            yield asked
            seconds = self.request_seconds
            yield _histogram(
                "qaloop_gateway_request_seconds",
                "Duration of POST /v1/questions inside the app",
                seconds,
            )
            stats = cache.stats
            for name, value, doc in (
                ("hits", stats.hits, "Cache hits"),
                ("misses", stats.misses, "Cache misses"),
                ("evictions", stats.evictions, "Entries evicted to make room"),
                ("expirations", stats.expirations, "Entries dropped past their TTL"),
            ):
                yield CounterMetricFamily(f"qaloop_cache_{name}", doc, value=value)
            yield GaugeMetricFamily("qaloop_cache_entries", "Entries in the cache", len(cache))
            yield GaugeMetricFamily("qaloop_cache_capacity", "Cache capacity", cache.capacity)
            if in_flight is not None:
                yield GaugeMetricFamily(
                    "qaloop_questions_in_flight",
                    "Questions accepted by this process and not final yet",
                    in_flight(),
                )

        self.registry.register(_FunctionCollector(collect))  # type: ignore[arg-type]

    def watch_gauge(self, name: str, doc: str, read: Callable[[], float]) -> None:
        """A gauge whose value is read at scrape time (e.g. parked questions held)."""

        def collect() -> Iterator[Metric]:
            yield GaugeMetricFamily(name, doc, read())

        self.registry.register(_FunctionCollector(collect))  # type: ignore[arg-type]

    def watch_lag(self, source: LagSource) -> None:
        self._lag_sources.append(source)

    def lag_samples(self) -> list[LagSample]:
        out: list[LagSample] = []
        for source in self._lag_sources:
            out.extend(source.lag_samples())
        return out

    def _collect_lag(self) -> Iterator[Metric]:
        if not self._lag_sources:
            return
        family = GaugeMetricFamily(
            "qaloop_consumer_lag",
            "Messages not yet committed by a consumer group, per topic and partition",
            labels=["group", "topic", "partition"],
        )
        for s in self.lag_samples():
            family.add_metric([s.group, s.topic, str(s.partition)], s.lag)
        yield family

    # ------------------------------------------------------------------ exposition

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def values(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        """Every sample now, by sample name (for the dashboard and tests)."""
        found: dict[str, list[tuple[dict[str, str], float]]] = {}
        for family in self.registry.collect():
            for sample in family.samples:
                found.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
        return found


def _histogram(name: str, doc: str, hist: FastHistogram) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, doc, buckets=hist.cumulative(), sum_value=hist.sum)


def total(
    values: Mapping[str, list[tuple[dict[str, str], float]]], name: str, **labels: str
) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    return sum(
        v
        for sample_labels, v in values.get(name, ())
        if all(sample_labels.get(k) == want for k, want in labels.items())
    )


def by_label(
    values: Mapping[str, list[tuple[dict[str, str], float]]], name: str, label: str
) -> dict[str, float]:
    out: dict[str, float] = {}
    for sample_labels, v in values.get(name, ()):
        key = sample_labels.get(label, "")
        out[key] = out.get(key, 0.0) + v
    return out
