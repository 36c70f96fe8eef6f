"""The worker's prompt: the question's language, what was wrong with the rejected attempt (in
the feedback arm only, never the reference), and per-attempt escalation."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from qaloop.bus.base import Topics
from qaloop.core.model import Envelope, QuestionState
from qaloop.core.routing import GateConfig, judge
from qaloop.llm.base import DEFAULT_PROMPT_TEMPLATE
from qaloop.llm.escalation import Escalation, Step
from qaloop.quality.verdict import Outcome, Reason, Verdict
from qaloop.services import worker as worker_module
from qaloop.services.gating import PromptConfig
from qaloop.services.worker import (
    Worker,
    WorkerConfig,
    attempt_request,
    build_prompt,
    question_language,
)
from tests.unit.services.test_worker import POLICY, ScriptedProvider

REFERENCE = "SECRET-REFERENCE-TEXT the answer is 42"


def _rejected(reason: Reason, control_share: float = 0.0, max_attempts: int = 3) -> Envelope:
    env = Envelope(
        "a" * 32,
        "Why is the sky blue?",
        REFERENCE,
        "t",
        1.0,
        answer="Why is the sky blue?",
        state=QuestionState.SCORING,
    )
    verdict = Verdict(0.1, Outcome.FAIL, reason, "repeats the question", "gate")
    _, routed = judge(env, verdict, GateConfig(0.5, max_attempts, control_share=control_share), 2.0)
    return routed


async def _prompt(env: Envelope, prompt: PromptConfig | None = None) -> tuple[str, object]:
    provider = ScriptedProvider(["an answer"])
    config = WorkerConfig(prompt=prompt or PromptConfig())
    worker = Worker(provider, Topics(), config, POLICY, clock=lambda: 3.0)
    await worker.handle(env)
    [request] = provider.requests
    return request.prompt, request


async def test_the_regeneration_prompt_says_what_was_wrong_without_the_reference() -> None:
    prompt, request = await _prompt(_rejected(Reason.ECHO))
    assert Reason.ECHO.feedback in prompt
    assert "rejected" in prompt and prompt.rstrip().endswith("Answer:")
    assert "SECRET-REFERENCE-TEXT" not in prompt and "repeats the question" not in prompt
    assert request.feedback == "echo"  # type: ignore[attr-defined]


async def test_the_control_arm_gets_the_plain_prompt() -> None:
    env = _rejected(Reason.ECHO, control_share=1.0)
    assert env.arm == "control"
    prompt, request = await _prompt(env)
    assert prompt == build_prompt(DEFAULT_PROMPT_TEMPLATE, env.question, None)
    assert "rejected" not in prompt and request.feedback is None  # type: ignore[attr-defined]


async def test_feedback_off_means_plain_prompts() -> None:
    prompt, _ = await _prompt(_rejected(Reason.OFF_TOPIC), PromptConfig(feedback=False))
    assert "rejected" not in prompt


def test_every_reason_gives_words_and_the_first_attempt_is_plain() -> None:
    for reason in Reason:
        prompt = build_prompt(DEFAULT_PROMPT_TEMPLATE, "Why?", reason.value)
        assert "rejected" in prompt and "better answer" in prompt
    assert build_prompt(DEFAULT_PROMPT_TEMPLATE, "Why?", None) == DEFAULT_PROMPT_TEMPLATE.replace(
        "{question}", "Why?"
    )
    assert "rejected" in build_prompt("{question}", "Why?", "not-a-reason")


def test_a_spanish_question_is_asked_to_be_answered_in_spanish() -> None:
    q = "¿Por qué el cielo es azul y no de otro color durante el día?"
    assert "answer in Spanish" in build_prompt(DEFAULT_PROMPT_TEMPLATE, q, None)
    assert "answer in" not in build_prompt(DEFAULT_PROMPT_TEMPLATE, "Why is the sky blue?", None)


async def test_escalation_per_attempt() -> None:
    escalation = Escalation(("simulated/simulated", "simulated/big"), (0.2, 0.7))
    pc = PromptConfig(escalation=escalation)
    assert [pc.step(a).temperature for a in (1, 2, 3, 4)] == [0.2, 0.7, 0.7, 0.7]
    assert [pc.step(a).model for a in (1, 2, 3)] == ["simulated", "big", "big"]
    assert PromptConfig().step(2) == Step()
    _, request = await _prompt(_rejected(Reason.LOW_SCORE), pc)  # attempt 2
    assert request.temperature == 0.7  # type: ignore[attr-defined]
    # the fallback chain starts at the attempt's deployment; the provider's model is its own
    assert request.deployment == "simulated/big" and request.model is None  # type: ignore[attr-defined]


def test_the_question_language_is_detected_once_per_question(monkeypatch: Any) -> None:
    calls: list[str] = []

    def detect(text: str) -> str:
        calls.append(text)
        return "es"

    monkeypatch.setattr(worker_module, "detect_language", detect)
    monkeypatch.setattr(worker_module, "_LANGUAGES", OrderedDict())
    monkeypatch.setattr(worker_module, "LANGUAGE_CACHE_SIZE", 2)
    first = Envelope("b" * 32, "¿Por qué el cielo es azul?", None, "t", 1.0)
    for attempt in (1, 2, 3):  # a regeneration asks the cache, not the detector
        assert question_language(first.evolve(attempt=attempt)) == "es"
    assert calls == [first.question]
    request = attempt_request(WorkerConfig(), first)
    assert "answer in Spanish" in request.prompt and len(calls) == 1
    for qid in ("c" * 32, "d" * 32):  # bounded: the least recently used id goes first
        question_language(Envelope(qid, "Otra pregunta?", None, "t", 1.0))
    question_language(first)
    assert len(calls) == 4 and list(worker_module._LANGUAGES) == ["d" * 32, "b" * 32]
