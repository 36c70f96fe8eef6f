"""The LLM judge's spend (docs/spend.md): each verdict's call is priced with purpose "judge"
into the SCORED event (storage's llm_usage gets a judge row), counted in the envelope's
`llm_calls`, charged to the generation's spend budget, and a reached budget stops the call."""

from __future__ import annotations

import json

import pytest

from qaloop.core import codec
from qaloop.core.model import Envelope, EventKind, QuestionState
from qaloop.core.routing import Decision, GateConfig, judge
from qaloop.llm.accounting import JUDGE, Meter
from qaloop.llm.base import Generation, GenerationRequest
from qaloop.llm.budget import Budget, BudgetConfig, LocalLedger
from qaloop.llm.judge import LLMJudge
from qaloop.llm.pricing import PriceTable
from qaloop.quality.cascade import JudgeItem
from qaloop.quality.verdict import GateInput, Reason
from qaloop.storage.usage import usage_rows

PASS = json.dumps({"score": 8, "verdict": "pass", "reason": "ok", "explanation": "fine"})
TABLE = PriceTable.load()
MINI = TABLE.find("openai", "gpt-4o-mini")
assert MINI is not None


class Grader:
    """An OpenAI-like judge provider: a pass, with or without usage metadata."""

    name = "openai"
    model = "gpt-4o-mini"

    def __init__(self, *, usage: bool = True) -> None:
        self.usage = usage
        self.requests: list[GenerationRequest] = []

    async def generate(self, request: GenerationRequest) -> Generation:
        self.requests.append(request)
        if not self.usage:
            return Generation(PASS, 1.0, model="gpt-4o-mini")
        return Generation(PASS, 1.0, model="gpt-4o-mini", input_tokens=900, output_tokens=40)

    async def aclose(self) -> None:
        return None


def _item(caller: str | None = None) -> JudgeItem:
    return JudgeItem(
        GateInput("Why is the sky blue?", "Rayleigh scattering of sunlight.", None),
        question_id="q1",
        attempt=1,
        calls_so_far=1,
        caller=caller,
    )


class SpyMeter(Meter):
    def __init__(self) -> None:
        super().__init__(TABLE)
        self.purposes: list[str] = []

    def usage(self, *args: object, **kw: object) -> object:  # type: ignore[override]
        self.purposes.append(str(kw.get("purpose")))
        return super().usage(*args, **kw)  # type: ignore[arg-type]


async def test_the_meter_is_called_with_purpose_judge_and_prices_the_call() -> None:
    meter = SpyMeter()
    [j] = await LLMJudge(Grader(), meter=meter).judge_many([_item()])  # type: ignore[arg-type]
    assert meter.purposes == [JUDGE]
    usage = j.cost.usage
    assert usage is not None and usage.purpose == JUDGE and not usage.estimated
    assert (usage.provider, usage.model) == ("openai", "gpt-4o-mini")
    assert usage.cost_usd == pytest.approx(MINI.cost(900, 40, 0))
    assert j.cost.tokens == 940
    assert meter.as_dict()["by_purpose"] == {JUDGE: pytest.approx(usage.cost_usd)}


async def test_a_judge_call_without_usage_is_estimated_never_free() -> None:
    [j] = await LLMJudge(Grader(usage=False), meter=Meter(TABLE)).judge_many([_item()])
    assert j.cost.usage is not None and j.cost.usage.estimated and j.cost.usage.cost_usd > 0


async def test_no_meter_no_usage() -> None:
    [j] = await LLMJudge(Grader()).judge_many([_item()])
    assert j.cost.usage is None and j.cost.calls == 1


async def test_the_usage_rides_the_scored_event_into_llm_usage_and_llm_calls() -> None:
    [j] = await LLMJudge(Grader(), meter=Meter(TABLE)).judge_many([_item()])
    env = Envelope("q1", "Why is the sky blue?", None, "t1", 1.0, llm_calls=1)
    env = env.with_event(EventKind.ACCEPTED, 1.0).evolve(
        state=QuestionState.SCORING, answer="Rayleigh scattering of sunlight."
    )
    decision, routed = judge(env, j.verdict, GateConfig(), 2.0, j.cost)
    assert decision is Decision.VALIDATE
    assert routed.llm_calls == 2  # one generation + one judge call (docs/spend.md)
    routed = codec.decode(codec.encode(routed))  # what the store receives
    [row] = usage_rows([routed])
    assert row[4] == JUDGE and row[-1] == pytest.approx(j.cost.usage.cost_usd)  # type: ignore[union-attr]


async def test_judge_calls_are_charged_to_the_spend_budget() -> None:
    budget = Budget(BudgetConfig(limit_usd=1.0, per_key_usd=1.0), LocalLedger())
    [j] = await LLMJudge(Grader(), meter=Meter(TABLE), budget=budget).judge_many([_item("alice")])
    assert j.cost.usage is not None
    spent = budget.last_spent
    assert spent["global"] == pytest.approx(j.cost.usage.cost_usd)
    assert spent["key:alice"] == pytest.approx(j.cost.usage.cost_usd)


async def test_a_reached_budget_stops_the_call_and_never_validates() -> None:
    budget = Budget(BudgetConfig(limit_usd=0.001), LocalLedger())
    await budget.charge(None, 0.002)  # generation spent it (one ledger)
    provider = Grader()
    [j] = await LLMJudge(provider, meter=Meter(TABLE), budget=budget).judge_many([_item()])
    assert provider.requests == []  # no call was made
    assert j.verdict.reason is Reason.JUDGE_ERROR and not j.verdict.passed
    assert j.verdict.detail.startswith("budget:")
    assert j.cost.calls == 0 and budget.stops == 1


def test_the_flink_jobs_map_meters_the_llm_judge_too() -> None:
    """The Flink job builds its gate stage where the plain judge does (wiring.judge_gate): an
    answer the simulated LLM judge grades leaves the map with a priced judge usage."""
    from qaloop.bus.base import Message
    from qaloop.flink.core import GateFunction
    from qaloop.settings import Settings

    settings = Settings(scorer="llm_judge", topic_prefix="fj")
    gate = GateFunction.from_settings(settings)
    env = Envelope("e" * 32, "Why is the sky blue?", None, "t", 1.0, llm_calls=1)
    env = env.with_event(EventKind.ACCEPTED, 1.0).evolve(
        state=QuestionState.SCORING,
        answer="Sunlight is scattered by air molecules, and blue light the most.",
    )
    routed = gate.process(Message("fj.generated", 0, 1, env.question_id, codec.encode(env), {}))
    out = codec.decode(routed.value)
    scored = [e for e in out.history if e.kind is EventKind.SCORED]
    assert scored and scored[-1].usage is not None and scored[-1].usage.purpose == JUDGE
    assert scored[-1].usage.cost_usd > 0 and out.llm_calls >= 2
