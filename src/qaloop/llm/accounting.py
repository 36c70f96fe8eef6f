"""Cost accounting: turn one LLM call's usage metadata into a priced `Usage`, keep running
totals for metrics and stats, and summarise stored usage (cost per call, per question, per
validated answer, the shares spent on regenerations and on the LLM judge).

Keyed by purpose: the worker's calls are "generate"; an LLM judge calling the same provider
layer records "judge" (call `Meter.usage(..., purpose=JUDGE)` and put the result on the event
the judge writes). A provider that reports no usage is charged on an estimate (about four
characters a token, prompt and answer) and the usage is marked `estimated`: never free.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from qaloop.core.model import Usage
from qaloop.llm.base import Generation
from qaloop.llm.pricing import ModelPrice, PriceTable, PriceTableError, parse_deployment

log = logging.getLogger(__name__)

GENERATE = "generate"
JUDGE = "judge"
INTERACTIVE = "interactive"
BATCH = "batch"
# Providers whose calls cost nothing real: their tokens are priced as `price_as`.
UNPRICED_PROVIDERS = frozenset({"simulated", "replay"})
DEFAULT_PRICE_AS = "gemini/gemini-2.5-flash-lite"


def estimate_text_tokens(text: str) -> int:
    """~4 characters per token (OpenAI's and Google's rule of thumb for English); at least 1."""
    return max(1, math.ceil(len(text) / 4))


@dataclass
class UsageTotals:
    calls: int = 0
    estimated_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float = 0.0

    def add(self, usage: Usage) -> None:
        self.calls += 1
        self.estimated_calls += int(usage.estimated)
        self.input_tokens += usage.input_tokens
        self.output_tokens += usage.output_tokens
        self.cached_tokens += usage.cached_tokens
        self.cost_usd += usage.cost_usd


class Meter:
    """Prices calls with one price table. One per process, shared by the worker and a judge."""

    def __init__(
        self,
        table: PriceTable,
        *,
        price_as: str = DEFAULT_PRICE_AS,
        metrics: Any | None = None,
        check_price_as: bool = True,
    ) -> None:
        self.table = table
        self.price_as = parse_deployment(price_as)
        if check_price_as:
            table.require([self.price_as])
        self.metrics = metrics
        self.totals: dict[tuple[str, str, str, str], UsageTotals] = {}
        self._children: dict[tuple[str, str, str, str], tuple[Any, ...]] = {}  # metric series

    def price_for(self, provider: str, model: str, configured: str | None = None) -> ModelPrice:
        """The row for provider/model; a model the table doesn't list (a provider may report a
        new version) falls back to the configured model's row, which `require` checked."""
        if provider in UNPRICED_PROVIDERS:
            found = self.table.find(*self.price_as)
        else:
            found = self.table.find(provider, model)
            if found is None and configured:
                found = self.table.find(provider, configured)
        if found is None:
            raise PriceTableError(f"no price for {provider}/{model}: check the price table")
        return found

    def usage(
        self,
        generation: Generation,
        prompt: str,
        provider: str,
        *,
        purpose: str = GENERATE,
        lane: str = INTERACTIVE,
        configured_model: str | None = None,
    ) -> Usage:
        estimated = generation.input_tokens is None or generation.output_tokens is None
        input_tokens = generation.input_tokens
        if input_tokens is None:
            input_tokens = estimate_text_tokens(prompt)
        output_tokens = generation.output_tokens
        if output_tokens is None:
            output_tokens = estimate_text_tokens(generation.text)
        cached = min(generation.cached_tokens or 0, input_tokens)
        model = generation.model or configured_model or provider
        price = self.price_for(provider, model, configured_model)
        usage = Usage(
            purpose=purpose,
            provider=provider,
            model=model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cached_tokens=cached,
            estimated=estimated,
            lane=lane,
            cost_usd=price.cost(input_tokens, output_tokens, cached, batch=lane == BATCH),
        )
        self.record(usage)
        return usage

    def record(self, usage: Usage) -> None:
        key = (usage.purpose, usage.provider, usage.model, usage.lane)
        totals = self.totals.get(key)
        if totals is None:
            totals = self.totals[key] = UsageTotals()
        totals.add(usage)
        m = self.metrics
        if m is None:
            return
        children = self._children.get(key)
        if children is None:  # labels() takes a lock and a dict look-up: once per series
            children = self._children[key] = (
                m.llm_cost.labels(*key),
                m.llm_tokens.labels(usage.purpose, "input"),
                m.llm_tokens.labels(usage.purpose, "output"),
                m.llm_tokens.labels(usage.purpose, "cached"),
                m.llm_usage_estimated.labels(usage.purpose, usage.provider),
            )
        cost, tokens_in, tokens_out, tokens_cached, estimated = children
        cost.inc(usage.cost_usd)
        tokens_in.inc(usage.input_tokens)
        tokens_out.inc(usage.output_tokens)
        if usage.cached_tokens:
            tokens_cached.inc(usage.cached_tokens)
        if usage.estimated:
            estimated.inc()

    def as_dict(self) -> dict[str, Any]:
        """This process's spend, for /v1/stats and a worker's stats line."""
        total = UsageTotals()
        by_purpose: dict[str, float] = {}
        rows = []
        for (purpose, provider, model, lane), t in sorted(self.totals.items()):
            total.calls += t.calls
            total.estimated_calls += t.estimated_calls
            total.input_tokens += t.input_tokens
            total.output_tokens += t.output_tokens
            total.cached_tokens += t.cached_tokens
            total.cost_usd += t.cost_usd
            by_purpose[purpose] = by_purpose.get(purpose, 0.0) + t.cost_usd
            rows.append(
                {
                    "purpose": purpose,
                    "provider": provider,
                    "model": model,
                    "lane": lane,
                    "calls": t.calls,
                    "estimated_calls": t.estimated_calls,
                    "cost_usd": round(t.cost_usd, 8),
                }
            )
        return {
            "cost_usd": round(total.cost_usd, 8),
            "calls": total.calls,
            "estimated_calls": total.estimated_calls,
            "input_tokens": total.input_tokens,
            "output_tokens": total.output_tokens,
            "cached_tokens": total.cached_tokens,
            "by_purpose": {k: round(v, 8) for k, v in by_purpose.items()},
            "by_model": rows,
        }


def summarise(
    groups: Iterable[Mapping[str, Any]], *, questions: int, validated: int
) -> dict[str, Any]:
    """Stored spend, from grouped usage rows (`Repository.usage_totals`): each group has
    purpose, regeneration (attempt > 1), lane, estimated, calls, the token sums and cost_usd.

    The cost per validated answer is *all* spend (failed questions, regenerations and judge
    calls included) over the validated answers: what one validated answer really costs. The
    LLM judge's part: its priced calls (one per answer it graded), their share of the answers
    generated (`judge_answer_share`: every generated answer is judged once) and its cost per
    validated answer."""
    total = calls = estimated = 0.0
    input_tokens = output_tokens = cached_tokens = 0
    by_purpose: dict[str, float] = {}
    by_lane: dict[str, float] = {}
    regenerations = 0.0
    calls_by_purpose: dict[str, int] = {}
    for g in groups:
        cost = float(g["cost_usd"] or 0.0)
        n = int(g["calls"])
        total += cost
        calls += n
        if g["estimated"]:
            estimated += n
        input_tokens += int(g["input_tokens"] or 0)
        output_tokens += int(g["output_tokens"] or 0)
        cached_tokens += int(g["cached_tokens"] or 0)
        by_purpose[str(g["purpose"])] = by_purpose.get(str(g["purpose"]), 0.0) + cost
        by_lane[str(g["lane"])] = by_lane.get(str(g["lane"]), 0.0) + cost
        calls_by_purpose[str(g["purpose"])] = calls_by_purpose.get(str(g["purpose"]), 0) + n
        if g["regeneration"] and g["purpose"] == GENERATE:
            regenerations += cost

    def share(part: float) -> float | None:
        return round(part / total, 4) if total > 0 else None

    return {
        "cost_usd": round(total, 8),
        "calls": int(calls),
        "estimated_calls": int(estimated),
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cached_tokens": cached_tokens,
        "questions": questions,
        "validated": validated,
        "per_call_usd": round(total / calls, 10) if calls else None,
        "per_question_usd": round(total / questions, 10) if questions else None,
        "per_validated_answer_usd": round(total / validated, 10) if validated else None,
        "by_purpose": {k: round(v, 8) for k, v in sorted(by_purpose.items())},
        "by_lane": {k: round(v, 8) for k, v in sorted(by_lane.items())},
        "regeneration_share": share(regenerations),
        "judge_share": share(by_purpose.get(JUDGE, 0.0)),
        "judge_calls": calls_by_purpose.get(JUDGE, 0),
        "judge_answer_share": (
            round(calls_by_purpose.get(JUDGE, 0) / calls_by_purpose[GENERATE], 4)
            if calls_by_purpose.get(GENERATE)
            else None
        ),
        "judge_per_validated_answer_usd": (
            round(by_purpose.get(JUDGE, 0.0) / validated, 10) if validated else None
        ),
    }


def cost_stats(repo: Any, counts: dict[str, int] | None = None) -> dict[str, Any]:
    """Stored spend (every process's calls) for /v1/stats, from a Repository."""
    counts = counts if counts is not None else repo.state_counts()
    totals = repo.usage_totals()
    return summarise(
        totals["groups"], questions=totals["questions"], validated=counts.get("validated", 0)
    )


def meter_from_settings(settings: Any, metrics: Any | None = None) -> Meter:
    """The price table of `settings.price_table` (or the shipped one), checked against every
    model the settings will call: a PriceTableError here stops the process at start."""
    from qaloop.llm.factory import configured_deployments

    table = PriceTable.load(settings.price_table)
    deployments = configured_deployments(settings)
    table.require([d for d in deployments if d[0] not in UNPRICED_PROVIDERS])
    unpriced = any(d[0] in UNPRICED_PROVIDERS for d in deployments)
    return Meter(table, price_as=settings.price_as, metrics=metrics, check_price_as=unpriced)
