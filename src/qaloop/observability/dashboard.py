"""The live dashboard's data: a ring buffer of snapshots of the process's metrics, sampled
every second, turned into per-second rates and current totals for `/v1/dashboard-data`.

Everything comes from the `Metrics` registry the process exports anyway (so the dashboard and
Prometheus never disagree), plus the question counts per state from storage (every few
seconds, in a thread). Ten minutes of history are kept: 600 small dicts.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from qaloop.observability.metrics import Metrics, by_label, total
from qaloop.observability.remote import RemoteMetrics, Values

log = logging.getLogger(__name__)

HISTORY_S = 600
WINDOW_S = 300  # what the page shows


@dataclass(slots=True)
class Snapshot:
    t: float
    asked: float
    outcomes: dict[str, float]
    cache_hits: float
    cache_misses: float
    llm: dict[str, float]  # outcome -> calls
    decisions: dict[tuple[str, str], float]  # (decision, attempt) -> n
    score_sum: dict[str, float]
    score_count: dict[str, float]
    lag: dict[str, float]  # group -> messages
    values: dict[str, float] = field(default_factory=dict)  # single numbers (gauges, totals)


def take_snapshot(metrics: Metrics, now: float, remote: Values | None = None) -> Snapshot:
    v = metrics.values()
    for name, samples in (remote or {}).items():
        v.setdefault(name, []).extend(samples)
    decisions: dict[tuple[str, str], float] = {}
    for labels, n in v.get("qaloop_judge_decisions_total", ()):
        key = (labels.get("decision", ""), labels.get("attempt", ""))
        decisions[key] = decisions.get(key, 0.0) + n
    outcomes = by_label(v, "qaloop_gateway_questions_total", "outcome")
    singles = {
        "cache_evictions": total(v, "qaloop_cache_evictions_total"),
        "cache_expirations": total(v, "qaloop_cache_expirations_total"),
        "cache_entries": total(v, "qaloop_cache_entries"),
        "cache_capacity": total(v, "qaloop_cache_capacity"),
        "in_flight": total(v, "qaloop_questions_in_flight"),
        "generating": total(v, "qaloop_stage_in_flight", stage="worker"),
        "parked": total(v, "qaloop_parked_questions"),
        "retries": total(v, "qaloop_llm_retries_total"),
        "parked_total": total(v, "qaloop_llm_parked_total"),
        "recovered": total(v, "qaloop_llm_recovered_total"),
        "resumed": total(v, "qaloop_retrier_resumed_total"),
        "llm_gave_up": total(v, "qaloop_llm_gave_up_total"),
        "stored_validated": total(v, "qaloop_store_envelopes_total", state="validated"),
        "stored_failed": total(v, "qaloop_store_envelopes_total", state="failed"),
        "dead_letters": total(v, "qaloop_store_dead_letters_total"),
        "request_count": total(v, "qaloop_gateway_request_seconds_count"),
        "request_sum": total(v, "qaloop_gateway_request_seconds_sum"),
        "llm_seconds_sum": total(v, "qaloop_llm_call_seconds_sum"),
        "llm_seconds_count": total(v, "qaloop_llm_call_seconds_count"),
        "time_to_answer_sum": total(v, "qaloop_time_to_answer_seconds_sum"),
        "time_to_answer_count": total(v, "qaloop_time_to_answer_seconds_count"),
    }
    for stage, n in by_label(v, "qaloop_stage_poison_total", "stage").items():
        singles[f"poison:{stage}"] = n
    for stage, n in by_label(v, "qaloop_stage_handler_errors_total", "stage").items():
        singles[f"handler_errors:{stage}"] = n
    for code, n in by_label(v, "qaloop_gateway_rejected_total", "code").items():
        singles[f"rejected:{code}"] = n
    return Snapshot(
        t=now,
        asked=sum(outcomes.values()),
        outcomes=outcomes,
        cache_hits=total(v, "qaloop_cache_hits_total"),
        cache_misses=total(v, "qaloop_cache_misses_total"),
        llm=by_label(v, "qaloop_llm_calls_total", "outcome"),
        decisions=decisions,
        score_sum=by_label(v, "qaloop_judge_score_sum", "attempt"),
        score_count=by_label(v, "qaloop_judge_score_count", "attempt"),
        lag=by_label(v, "qaloop_consumer_lag", "group"),
        values=singles,
    )


class DashboardSampler:
    def __init__(
        self,
        metrics: Metrics,
        state_counts: Callable[[], dict[str, int]] | None = None,
        *,
        mode: str = "embedded",
        remote: RemoteMetrics | None = None,
        every_s: float = 1.0,
        states_every_s: float = 2.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.metrics = metrics
        self.state_counts = state_counts
        self.remote = remote
        self.mode = mode
        self.every_s = every_s
        self.states_every_s = states_every_s
        self.clock = clock
        self.history: deque[Snapshot] = deque(maxlen=int(HISTORY_S / every_s))
        self.states: dict[str, int] = {}
        self._states_at = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.sample()
            except Exception:
                log.warning("dashboard sample failed", exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.every_s)

    async def sample(self) -> Snapshot:
        now = self.clock()
        remote = None
        if self.remote is not None:
            try:
                remote = await self.remote.fetch()
            except Exception:
                log.warning("could not read the services' metrics", exc_info=True)
        snap = take_snapshot(self.metrics, now, remote)
        self.history.append(snap)
        if self.state_counts is not None and now - self._states_at >= self.states_every_s:
            self._states_at = now
            self.states = await asyncio.to_thread(self.state_counts)
        return snap

    async def data(self) -> dict[str, Any]:
        # Sampled on demand too: the page works without the background task (tests, or an
        # app served without its lifespan).
        if not self.history or self.clock() - self.history[-1].t >= self.every_s:
            await self.sample()
        data = dashboard_data(list(self.history), self.states, self.mode)
        data["metrics_sources"] = 1 + (self.remote.reached if self.remote is not None else 0)
        return data


def _rate(a: float, b: float, dt: float) -> float:
    return round(max(0.0, b - a) / dt, 3) if dt > 0 else 0.0


def dashboard_data(history: list[Snapshot], states: dict[str, int], mode: str) -> dict[str, Any]:
    last = history[-1]
    window = [s for s in history if s.t >= last.t - WINDOW_S]
    series: dict[str, list[float | None]] = {
        k: []
        for k in (
            "asked",
            "accepted",
            "cache",
            "llm_calls",
            "llm_errors",
            "validated",
            "failed",
            "hit_rate",
        )
    }
    lag_groups = sorted({g for s in window for g in s.lag})
    lag_series: dict[str, list[float | None]] = {g: [] for g in lag_groups}
    times: list[float] = []
    for prev, cur in itertools.pairwise(window):
        dt = cur.t - prev.t
        times.append(round(cur.t, 3))
        series["asked"].append(_rate(prev.asked, cur.asked, dt))
        series["accepted"].append(
            _rate(prev.outcomes.get("accepted", 0), cur.outcomes.get("accepted", 0), dt)
        )
        series["cache"].append(
            _rate(prev.outcomes.get("cache", 0), cur.outcomes.get("cache", 0), dt)
        )
        series["llm_calls"].append(_rate(sum(prev.llm.values()), sum(cur.llm.values()), dt))
        errors_prev = sum(n for k, n in prev.llm.items() if k != "ok")
        errors_cur = sum(n for k, n in cur.llm.items() if k != "ok")
        series["llm_errors"].append(_rate(errors_prev, errors_cur, dt))
        series["validated"].append(_rate(_decided(prev, "validate"), _decided(cur, "validate"), dt))
        failed_prev = _decided(prev, "give_up") + prev.values.get("llm_gave_up", 0)
        failed_cur = _decided(cur, "give_up") + cur.values.get("llm_gave_up", 0)
        series["failed"].append(_rate(failed_prev, failed_cur, dt))
        hits = cur.cache_hits - prev.cache_hits
        lookups = hits + cur.cache_misses - prev.cache_misses
        series["hit_rate"].append(round(hits / lookups, 4) if lookups > 0 else None)
        for g in lag_groups:
            lag_series[g].append(cur.lag.get(g))

    attempts = sorted({a for (_, a) in last.decisions} | set(last.score_count), key=_int)
    per_attempt = []
    for a in attempts:
        validated = last.decisions.get(("validate", a), 0)
        regenerated = last.decisions.get(("regenerate", a), 0)
        gave_up = last.decisions.get(("give_up", a), 0) + last.decisions.get(("judge_error", a), 0)
        decided = validated + regenerated + gave_up
        count = last.score_count.get(a, 0)
        per_attempt.append(
            {
                "attempt": _int(a),
                "decided": int(decided),
                "validated": int(validated),
                "regenerated": int(regenerated),
                "gave_up": int(gave_up),
                "pass_rate": round(validated / decided, 4) if decided else None,
                "mean_score": round(last.score_sum.get(a, 0) / count, 4) if count else None,
            }
        )
    v = last.values
    lookups = last.cache_hits + last.cache_misses
    errors = {k: int(n) for k, n in sorted(last.llm.items()) if k != "ok" and n}
    for key, n in sorted(v.items()):
        if n and key.split(":", 1)[0] in ("poison", "handler_errors", "rejected"):
            errors[key] = int(n)
    return {
        "mode": mode,
        "now": last.t,
        "window_s": WINDOW_S,
        "totals": {
            "asked": int(last.asked),
            "outcomes": {k: int(n) for k, n in last.outcomes.items()},
            "llm_calls": int(sum(last.llm.values())),
            "llm_ok": int(last.llm.get("ok", 0)),
            "validated": int(_decided(last, "validate")),
            "regenerated": int(_decided(last, "regenerate")),
            "gave_up": int(_decided(last, "give_up") + v.get("llm_gave_up", 0)),
            "retries": int(v.get("retries", 0)),
            "parked_total": int(v.get("parked_total", 0)),
            "resumed": int(v.get("resumed", 0)),
            "recovered": int(v.get("recovered", 0)),
            "dead_letters": int(v.get("dead_letters", 0)),
            "mean_request_ms": _mean_ms(v, "request_sum", "request_count"),
            "mean_llm_ms": _mean_ms(v, "llm_seconds_sum", "llm_seconds_count"),
            "mean_time_to_answer_s": _mean(v, "time_to_answer_sum", "time_to_answer_count"),
        },
        "flow": {
            "accepted": int(last.outcomes.get("accepted", 0)),
            "in_flight": int(v.get("in_flight", 0)),
            "waiting_for_worker": _lag(last, "worker"),
            "generating": int(v.get("generating", 0)),
            "waiting_for_judge": _lag(last, "judge"),
            "parked": int(v.get("parked", 0)),
            "waiting_for_store": _lag(last, "store"),
            "validated": int(_decided(last, "validate")),
            "failed": int(_decided(last, "give_up") + v.get("llm_gave_up", 0)),
        },
        "storage": states,
        "lag": {g: int(n) for g, n in sorted(last.lag.items())},
        "per_attempt": per_attempt,
        "errors": errors,
        "cache": {
            "hits": int(last.cache_hits),
            "misses": int(last.cache_misses),
            "hit_rate": round(last.cache_hits / lookups, 4) if lookups else None,
            "evictions": int(v.get("cache_evictions", 0)),
            "expirations": int(v.get("cache_expirations", 0)),
            "entries": int(v.get("cache_entries", 0)),
            "capacity": int(v.get("cache_capacity", 0)),
        },
        "series": {"t": times, **series, "lag": lag_series},
    }


# A judge error (the LLM judge failed) ends the question like a give-up.
_AS = {"judge_error": "give_up"}


def _decided(s: Snapshot, decision: str) -> float:
    return sum(n for (d, _), n in s.decisions.items() if _AS.get(d, d) == decision)


def _lag(s: Snapshot, stage: str) -> int | None:
    for group, n in s.lag.items():
        if group == stage or group.endswith(f".{stage}"):
            return int(n)
    return None


def _int(value: str) -> int:
    return int(value) if value.isdigit() else 0


def _mean(v: dict[str, float], sum_key: str, count_key: str) -> float | None:
    count = v.get(count_key, 0)
    return round(v.get(sum_key, 0) / count, 4) if count else None


def _mean_ms(v: dict[str, float], sum_key: str, count_key: str) -> float | None:
    mean = _mean(v, sum_key, count_key)
    return None if mean is None else round(mean * 1000, 3)
