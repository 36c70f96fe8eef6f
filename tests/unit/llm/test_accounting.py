"""Usage -> cost: real usage, estimated usage (never free), cached tokens, simulated calls
priced as `price_as`, an unlisted reported model, the metrics and the stored summary."""

from __future__ import annotations

import pytest

from qaloop.llm.accounting import (
    BATCH,
    JUDGE,
    Meter,
    estimate_text_tokens,
    summarise,
)
from qaloop.llm.base import Generation
from qaloop.llm.pricing import PriceTable, PriceTableError
from qaloop.observability.metrics import Metrics

TABLE = PriceTable.load()
LITE = TABLE.find("gemini", "gemini-2.5-flash-lite")
MINI = TABLE.find("openai", "gpt-4o-mini")
assert LITE is not None and MINI is not None


def test_reported_usage_is_priced_exactly() -> None:
    meter = Meter(TABLE)
    g = Generation("an answer", 1.0, model="gpt-4o-mini", input_tokens=1000, output_tokens=200)
    u = meter.usage(g, "prompt", "openai")
    assert not u.estimated
    assert (u.input_tokens, u.output_tokens, u.cached_tokens) == (1000, 200, 0)
    assert u.cost_usd == pytest.approx((1000 * 0.15 + 200 * 0.60) / 1e6)
    assert u.purpose == "generate" and u.lane == "interactive"


def test_missing_usage_is_estimated_and_never_free() -> None:
    meter = Meter(TABLE)
    prompt, text = "p" * 400, "a" * 81
    u = meter.usage(Generation(text, 1.0, model="gpt-4o-mini"), prompt, "openai")
    assert u.estimated
    assert (u.input_tokens, u.output_tokens) == (100, 21)
    assert u.cost_usd > 0
    assert meter.as_dict()["estimated_calls"] == 1
    # half a report (output only) is estimated too
    half = meter.usage(Generation(text, 1.0, model="gpt-4o-mini", input_tokens=7), prompt, "openai")
    assert half.estimated and half.input_tokens == 7 and half.output_tokens == 21


def test_estimate_is_at_least_one_token() -> None:
    assert estimate_text_tokens("") == 1
    assert estimate_text_tokens("abcde") == 2


def test_cached_tokens_are_billed_at_the_cached_price() -> None:
    meter = Meter(TABLE)
    g = Generation("x", 1.0, model="gpt-4o-mini", input_tokens=1000, output_tokens=0,
                   cached_tokens=600)  # fmt: skip
    u = meter.usage(g, "p", "openai")
    assert u.cached_tokens == 600
    assert u.cost_usd == pytest.approx((400 * 0.15 + 600 * 0.075) / 1e6)


def test_batch_lane_is_billed_at_batch_prices() -> None:
    meter = Meter(TABLE)
    g = Generation("x", 1.0, model="gpt-4o-mini", input_tokens=1000, output_tokens=1000)
    inter = meter.usage(g, "p", "openai")
    batch = meter.usage(g, "p", "openai", lane=BATCH)
    assert batch.cost_usd == pytest.approx(inter.cost_usd / 2)


def test_simulated_calls_are_priced_as_price_as() -> None:
    meter = Meter(TABLE, price_as="openai/gpt-4o-mini")
    g = Generation("x", 1.0, model="simulated", input_tokens=1000, output_tokens=0)
    u = meter.usage(g, "p", "simulated")
    assert u.model == "simulated"  # the record keeps what really answered
    assert u.cost_usd == pytest.approx(1000 * 0.15 / 1e6)


def test_unlisted_reported_model_falls_back_to_the_configured_one() -> None:
    meter = Meter(TABLE)
    g = Generation("x", 1.0, model="gpt-4o-mini-2031-01-01", input_tokens=10, output_tokens=1)
    assert meter.usage(g, "p", "openai").cost_usd > 0  # prefix match
    odd = Generation("x", 1.0, model="some-proxy-alias", input_tokens=10, output_tokens=1)
    u = meter.usage(odd, "p", "openai", configured_model="gpt-4o-mini")
    assert u.model == "some-proxy-alias"
    assert u.cost_usd == pytest.approx((10 * 0.15 + 0.60) / 1e6)
    with pytest.raises(PriceTableError):
        meter.usage(odd, "p", "openai")


def test_metrics_and_stats_are_keyed_by_purpose() -> None:
    metrics = Metrics()
    meter = Meter(TABLE, metrics=metrics)
    g = Generation("x", 1.0, model="gpt-4o-mini", input_tokens=1000, output_tokens=100)
    meter.usage(g, "p", "openai")
    meter.usage(Generation("y", 1.0, model="gpt-4o-mini"), "judge prompt", "openai", purpose=JUDGE)
    stats = meter.as_dict()
    assert stats["calls"] == 2 and stats["estimated_calls"] == 1
    assert set(stats["by_purpose"]) == {"generate", "judge"}
    text = metrics.exposition().decode()
    assert (
        'qaloop_llm_cost_usd_total{lane="interactive",model="gpt-4o-mini",provider="openai",'
        'purpose="judge"}' in text
    )
    assert 'qaloop_llm_tokens_total{kind="input",purpose="generate"} 1000.0' in text
    assert 'qaloop_llm_usage_estimated_total{provider="openai",purpose="judge"} 1.0' in text


def test_summarise_cost_per_validated_answer_and_shares() -> None:
    groups = [
        {"purpose": "generate", "regeneration": False, "lane": "interactive", "estimated": False,
         "calls": 8, "input_tokens": 800, "output_tokens": 80, "cached_tokens": 0, "cost_usd": 0.6},
        {"purpose": "generate", "regeneration": True, "lane": "interactive", "estimated": True,
         "calls": 2, "input_tokens": 200, "output_tokens": 20, "cached_tokens": 0, "cost_usd": 0.2},
        {"purpose": "judge", "regeneration": False, "lane": "interactive", "estimated": False,
         "calls": 4, "input_tokens": 400, "output_tokens": 4, "cached_tokens": 0, "cost_usd": 0.2},
    ]  # fmt: skip
    s = summarise(groups, questions=8, validated=5)
    assert s["cost_usd"] == pytest.approx(1.0)
    assert s["calls"] == 14 and s["estimated_calls"] == 2
    assert s["per_validated_answer_usd"] == pytest.approx(0.2)
    assert s["per_question_usd"] == pytest.approx(0.125)
    assert s["regeneration_share"] == pytest.approx(0.2)
    assert s["judge_share"] == pytest.approx(0.2)
    # the LLM judge graded 4 of the 10 answers generated, 0.2 USD over 5 validated answers
    assert s["judge_calls"] == 4 and s["judge_answer_share"] == pytest.approx(0.4)
    assert s["judge_per_validated_answer_usd"] == pytest.approx(0.04)
    empty = summarise([], questions=0, validated=0)
    assert empty["cost_usd"] == 0 and empty["per_validated_answer_usd"] is None
    assert empty["judge_share"] is None and empty["judge_answer_share"] is None
