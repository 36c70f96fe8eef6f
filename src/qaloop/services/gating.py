"""How a Settings object becomes the judge stage's gate: the one place that builds it, for the
embedded pipeline, the distributed judge and the Flink job alike.

    scorer = a cheap scorer (composite, ...)   -> Cascade(cheap gate, LLM judge)
    scorer = "llm_judge"                       -> Cascade(None, LLM judge): every answer graded
                                                  by the LLM

The cheap gate is qaloop.quality.gate's default gate when it exists for the scorer, else a
`ScorerGate` (threshold, and `judge_unsure_band` around it). UNSURE verdicts and every answer
to a question without a reference go to the LLM judge (docs/quality.md).
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from typing import Any

from qaloop.core.model import Envelope
from qaloop.core.routing import GateConfig, prompt_feedback
from qaloop.llm.accounting import Meter, meter_from_settings
from qaloop.llm.base import Provider
from qaloop.llm.budget import Budget, budget_from_settings
from qaloop.llm.escalation import Escalation, Step, escalation_from_settings
from qaloop.quality import get_scorer, llm_judge
from qaloop.quality.cascade import Cascade, JudgeItem, ScorerGate
from qaloop.quality.verdict import Gate, GateInput
from qaloop.settings import Settings

log = logging.getLogger(__name__)


def cheap_gate(settings: Settings) -> Gate | None:
    """The default gate (qaloop.quality.gate, point 2 of issue 12) when this build has it, else
    a ScorerGate with `judge_unsure_band`; None for `scorer = llm_judge`."""
    if settings.scorer == llm_judge.NAME:
        return None
    try:  # by name: the default gate lands on its own branch (the contract is verdict.Gate)
        spec_of = importlib.import_module("qaloop.gate_config").gate_spec_from_settings
        build = importlib.import_module("qaloop.quality.gate").build_gate
    except (ImportError, AttributeError):
        return ScorerGate(
            get_scorer(settings.scorer), settings.threshold, settings.judge_unsure_band
        )
    gate: Gate = build(spec_of(settings))
    return gate


def build_gate_stage(
    settings: Settings,
    *,
    judge_provider: Provider | None = None,
    meter: Meter | None = None,
    budget: Budget | None = None,
    metrics: Any | None = None,
) -> Cascade:
    """The cascade for these settings. `judge_provider` replaces the LLM judge's provider
    (tests); by default it is built like generation's, with its own share of the quota.

    The LLM judge's calls are priced by `meter` and charged to `budget`: pass the worker's
    when both run in one process (one ledger); without them they are built from the settings
    here (a judge process, the Flink job), like the worker builds its own."""
    from qaloop.llm.factory import make_judge_provider
    from qaloop.llm.judge import LLMJudge

    if meter is None:
        meter = meter_from_settings(settings, metrics)  # a bad price table stops the start
        if budget is None:
            budget = budget_from_settings(settings, metrics)
    provider = judge_provider or make_judge_provider(settings)
    second = LLMJudge(
        provider,
        concurrency=settings.judge_concurrency,
        overload_tries=settings.overload_tries,
        backoff_base_s=settings.backoff_base_s,
        backoff_cap_s=settings.backoff_cap_s,
        max_wait_s=settings.llm_max_queue_wait_s,
        timeout_s=settings.llm_timeout_s + settings.llm_max_queue_wait_s + 5.0,
        seed=settings.sim_seed,
        meter=meter,
        budget=budget,
    )
    return Cascade(cheap_gate(settings), second)


def routing_config(settings: Settings) -> GateConfig:
    return GateConfig(
        threshold=settings.threshold,
        max_attempts=settings.max_attempts,
        feedback=settings.feedback,
        control_share=settings.feedback_control_share,
        control_seed=settings.feedback_seed,
    )


def judge_item(envelope: Envelope) -> JudgeItem:
    return JudgeItem(
        GateInput(envelope.question, envelope.answer or "", envelope.reference_answer),
        question_id=envelope.question_id,
        attempt=envelope.attempt,
        calls_so_far=envelope.llm_calls,
        feedback=prompt_feedback(envelope),
        caller=envelope.caller,
    )


@dataclass(frozen=True, slots=True)
class PromptConfig:
    """What the prompt of attempt n says beyond the template, and what it runs on: the
    feedback, and the escalation (model and temperature per attempt: qaloop.llm.escalation,
    the one place that decides them). The worker and the batch lane both read it."""

    feedback: bool = True
    escalation: Escalation = field(default_factory=Escalation)

    def step(self, attempt: int) -> Step:
        return self.escalation.step(attempt)


def prompt_config(settings: Settings) -> PromptConfig:
    return PromptConfig(feedback=settings.feedback, escalation=escalation_from_settings(settings))
