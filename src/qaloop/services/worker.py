"""The LLM worker: pending question -> generated answer, parked retry, or dead letter.

Many calls in flight at once (ConcurrentRunner). Overload/server errors are retried inside the
call's own task with full-jitter backoff (the task sleeps; the consumer loop never does); quota
errors park the question on the delayed topic; permanent errors dead-letter it with the reason.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from qaloop.bus.base import OutMessage, Topics
from qaloop.core.model import Envelope, ErrorClass, EventKind, QuestionState, Usage
from qaloop.core.retry import GiveUp, Park, RetryNow, RetryPolicy, on_llm_error
from qaloop.core.routing import prompt_feedback
from qaloop.core.wire import out
from qaloop.llm.accounting import GENERATE, Meter
from qaloop.llm.base import (
    DEFAULT_PROMPT_TEMPLATE,
    Generation,
    GenerationRequest,
    LLMError,
    Provider,
    ServerError,
    render_prompt,
)
from qaloop.llm.budget import Budget, BudgetStop
from qaloop.observability.logs import log_event
from qaloop.observability.metrics import Metrics
from qaloop.quality.lang import detect_language
from qaloop.quality.verdict import Reason
from qaloop.services.batch_lane import BatchLane
from qaloop.services.gating import PromptConfig
from qaloop.services.priority import PrioritySlots

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    concurrency: int = 64
    request_timeout_s: float = 60.0
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE
    seed: int = 42  # seeds backoff jitter per (question, attempt, try): runs are repeatable
    prompt: PromptConfig = field(default_factory=PromptConfig)  # feedback, escalation


class WorkerStats:
    def __init__(self) -> None:
        self.llm_calls = 0
        self.answers = 0
        self.errors: Counter[str] = Counter()  # LLM errors by class
        self.retried_now: Counter[str] = Counter()
        self.parked: Counter[str] = Counter()
        self.dead_lettered: Counter[str] = Counter()
        # Answers obtained after errors of a class (in-process retries or parks in between).
        self.recovered: Counter[str] = Counter()

    def as_dict(self) -> dict[str, Any]:
        """The counters as reported by /v1/stats (embedded) and a worker service's stats."""
        return {
            "llm_calls": self.llm_calls,
            "answers": self.answers,
            "llm_errors": dict(self.errors),
            "retried_in_process": dict(self.retried_now),
            "parked": dict(self.parked),
            "recovered": dict(self.recovered),
            "llm_dead_lettered": dict(self.dead_lettered),
        }


class Worker:
    def __init__(
        self,
        provider: Provider,
        topics: Topics,
        config: WorkerConfig,
        retry: RetryPolicy,
        *,
        clock: Callable[[], float] = time.time,
        on_start: Callable[[Envelope], None] | None = None,
        metrics: Metrics | None = None,
        meter: Meter | None = None,
        budget: Budget | None = None,
        batch_lane: BatchLane | None = None,
        priority: PrioritySlots | None = None,
    ) -> None:
        self.provider = provider
        self.meter = meter
        self.budget = budget
        self.batch_lane = batch_lane
        self.priority = priority
        self.topics = topics
        self.config = config
        self.retry = retry
        self.clock = clock
        self.on_start = on_start
        self.stats = WorkerStats()
        self.metrics = metrics if metrics is not None else Metrics()
        name = getattr(provider, "name", type(provider).__name__)
        self._llm_ok = self.metrics.llm_calls.labels(name, "ok")
        self._llm_ok_s = self.metrics.llm_seconds.labels(name, "ok")
        self._llm_error_s = self.metrics.llm_seconds.labels(name, "error")
        self._provider_name = name
        # The call's own timeout only when the provider can't bound the call below it: one
        # asyncio.timeout fewer per call where it can (a ProtectedProvider without a
        # concurrency bound, and no priority slots to wait for here).
        bound = getattr(provider, "call_bound_s", None)
        bounded = isinstance(bound, (int, float)) and bound < config.request_timeout_s
        self._own_timeout = priority is not None or not bounded

    def _rng(self, envelope: Envelope, try_no: int) -> random.Random:
        key = f"backoff:{self.config.seed}:{envelope.question_id}:{envelope.attempt}:{try_no}"
        return random.Random(hashlib.blake2b(key.encode(), digest_size=8).digest())

    async def handle(self, envelope: Envelope) -> list[OutMessage]:
        if self.on_start is not None:
            self.on_start(envelope)
        taken = await self._to_batch_lane(envelope)
        if taken is not None:
            return taken
        # The GENERATING state is never published (every way out of the loop below sets the
        # state it publishes), so no copy is made for it: the log line says it.
        env = envelope
        log_event(log, "generating", env, state="generating")
        m = self.metrics
        while True:
            stop = await self._spend_stop(env)
            if stop is not None:
                return [out(self.topics.delayed, self._park_for_spend(env, stop))]
            try_no = env.tries_in_attempt + 1
            step = self.config.prompt.step(env.attempt)
            request = attempt_request(self.config, env, deployment=step.deployment)
            started = self.clock()
            call_started = time.perf_counter()
            self.stats.llm_calls += 1
            try:
                if self._own_timeout:
                    async with asyncio.timeout(self.config.request_timeout_s):  # no extra task
                        generation = await self._call(env, request)
                else:  # the provider's bound ends the call first (ServerError, not TimeoutError)
                    generation = await self._call(env, request)
            except (LLMError, TimeoutError) as raw_error:
                error = (
                    raw_error
                    if isinstance(raw_error, LLMError)
                    else ServerError(f"timed out after {self.config.request_timeout_s} s")
                )
                now = self.clock()
                cls = error.error_class
                self.stats.errors[cls.value] += 1
                self._llm_error_s.observe(time.perf_counter() - call_started)
                m.llm_calls.labels(self._provider_name, cls.value).inc()
                env = env.with_event(
                    EventKind.LLM_ERROR,
                    now,
                    {"llm_calls": env.llm_calls + 1, "tries_in_attempt": try_no},
                    error_class=cls,
                    detail=error.detail[:300],
                    latency_ms=(now - started) * 1000,
                )
                action = on_llm_error(
                    env, cls, error.retry_after_s, try_no, self.retry, now, self._rng(env, try_no)
                )
                match action:
                    case RetryNow(delay_s=delay):
                        self.stats.retried_now[cls.value] += 1
                        m.llm_retries.labels(cls.value).inc()
                        log_event(
                            log,
                            "llm_error",
                            env,
                            "%s, retry in %.2f s",
                            cls.value,
                            delay,
                            error_class=cls.value,
                            action="retry",
                        )
                        await asyncio.sleep(delay)
                        continue
                    case Park(due_at=due_at):
                        self.stats.parked[cls.value] += 1
                        m.llm_parked.labels(cls.value).inc()
                        log_event(
                            log,
                            "llm_error",
                            env,
                            "%s",
                            cls.value,
                            error_class=cls.value,
                            action="park",
                        )
                        log_event(
                            log,
                            "parked",
                            env,
                            "until %.3f (%s)",
                            due_at,
                            cls.value,
                            error_class=cls.value,
                            due_at=due_at,
                            state="queued",
                        )
                        parked = env.with_event(
                            EventKind.PARKED,
                            now,
                            {
                                "state": QuestionState.QUEUED,
                                "due_at": due_at,
                                "error_class": cls,
                                "error_detail": error.detail[:300],
                                "tries_in_attempt": 0,
                            },
                            error_class=cls,
                            wait_s=due_at - now,
                        )
                        return [out(self.topics.delayed, parked)]
                    case GiveUp(reason=reason):
                        self.stats.dead_lettered[cls.value] += 1
                        m.llm_gave_up.labels(cls.value).inc()
                        log_event(
                            log,
                            "llm_error",
                            env,
                            "%s",
                            cls.value,
                            error_class=cls.value,
                            action="give_up",
                        )
                        log_event(
                            log,
                            "gave_up",
                            env,
                            "%s",
                            reason,
                            level=logging.WARNING,
                            error_class=cls.value,
                            reason=reason,
                            state="failed",
                        )
                        failed = env.with_event(
                            EventKind.GAVE_UP,
                            now,
                            {
                                "state": QuestionState.FAILED,
                                "error_class": cls,
                                "error_detail": f"{reason}: {error.detail[:200]}",
                                "answer": env.best_answer,
                                "score": env.best_score,
                            },
                            error_class=cls,
                            detail=reason,
                        )
                        return [out(self.topics.dead_letter, failed, **{"qaloop-reason": reason})]
            now = self.clock()
            self.stats.answers += 1
            self._llm_ok.inc()
            self._llm_ok_s.observe(time.perf_counter() - call_started)
            for recovered in errors_since_last_answer(env):
                self.stats.recovered[recovered] += 1
                m.llm_recovered.labels(recovered).inc()
            usage = self._account(generation, request)
            await self._charge_spend(env, usage)
            generated = env.with_event(
                EventKind.GENERATED,
                now,
                {
                    "state": QuestionState.SCORING,
                    "answer": generation.text,
                    "llm_calls": env.llm_calls + 1,
                    "tries_in_attempt": try_no,
                    "error_class": None,
                    "error_detail": None,
                    "due_at": None,
                },
                answer=generation.text,
                latency_ms=generation.latency_ms,
                detail=_usage(generation.input_tokens, generation.output_tokens),
                usage=usage,
            )
            log_event(
                log,
                "generated",
                generated,
                "in %.0f ms",
                generation.latency_ms,
                latency_ms=generation.latency_ms,
                state="scoring",
            )
            return [out(self.topics.generated, generated)]

    # -- spend (docs/spend.md): kept apart from the retry logic above

    def _account(self, generation: Generation, request: GenerationRequest) -> Usage | None:
        """Price the call from its usage metadata (estimated, and marked so, when absent)."""
        if self.meter is None:
            return None
        inner = getattr(self.provider, "inner", self.provider)
        return self.meter.usage(
            generation,
            request.prompt,
            generation.provider or self._provider_name,
            purpose=GENERATE,
            configured_model=generation.requested_model or getattr(inner, "model", None),
        )

    async def _to_batch_lane(self, env: Envelope) -> list[OutMessage] | None:
        """A batch-priority question goes to the batch lane when there is one (None: answer
        it here, e.g. the lane lost its job); at a hard spend limit it is parked instead."""
        if self.batch_lane is None or env.lane != "batch":
            return None
        stop = await self._spend_stop(env)
        if stop is not None:
            return [out(self.topics.delayed, self._park_for_spend(env, stop))]
        return self.batch_lane.take(env)

    async def _call(self, env: Envelope, request: GenerationRequest) -> Generation:
        """The provider call; with priority lanes, interactive questions get slots first."""
        slots = self.priority
        if slots is None:
            return await self.provider.generate(request)
        if not slots.try_acquire(env.lane):  # the common case takes no await
            await slots.acquire(env.lane)
        try:
            return await self.provider.generate(request)
        finally:
            slots.release()

    async def _spend_stop(self, env: Envelope) -> BudgetStop | None:
        """The spend budget reached for this question's caller (or everyone), if any. A ledger
        that can't be read stops too (fails closed): park briefly rather than spend unseen."""
        if self.budget is None:
            return None
        try:
            return await self.budget.check(env.caller)
        except LLMError as exc:
            log_event(log, "budget_unavailable", env, "%s", exc.detail, level=logging.WARNING)
            return BudgetStop("ledger", 0.0, 0.0, self.retry.backoff_cap_s)

    def _park_for_spend(self, env: Envelope, stop: BudgetStop) -> Envelope:
        """Park until the budget's period ends: our own stop, no LLM call was made."""
        now = self.clock()
        cls = ErrorClass.SPEND
        due_at = now + stop.retry_after_s
        self.stats.parked[cls.value] += 1
        self.metrics.llm_parked.labels(cls.value).inc()
        message = stop.message if stop.scope != "ledger" else "budget: spend ledger unavailable"
        log_event(
            log,
            "parked",
            env,
            "until %.3f (%s)",
            due_at,
            message,
            error_class=cls.value,
            due_at=due_at,
            state="queued",
        )
        return env.with_event(
            EventKind.PARKED,
            now,
            {
                "state": QuestionState.QUEUED,
                "due_at": due_at,
                "error_class": cls,
                "error_detail": message,
                "tries_in_attempt": 0,
            },
            error_class=cls,
            wait_s=due_at - now,
            detail=message,
        )

    async def _charge_spend(self, env: Envelope, usage: Usage | None) -> None:
        if self.budget is not None and usage is not None:
            await self.budget.charge(env.caller, usage.cost_usd)


LANGUAGE_NAMES = {
    "en": "English",
    "es": "Spanish",
    "pt": "Portuguese",
    "fr": "French",
    "de": "German",
    "it": "Italian",
    "ru": "Russian",
    "ja": "Japanese",
    "ko": "Korean",
    "zh": "Chinese",
    "ar": "Arabic",
    "el": "Greek",
    "he": "Hebrew",
    "hi": "Hindi",
    "th": "Thai",
}


def attempt_request(
    config: WorkerConfig, env: Envelope, *, deployment: str | None = None, model: str | None = None
) -> GenerationRequest:
    """The request of this attempt, for the interactive lane and the batch lane alike: the
    feedback prompt (in the feedback arm) and the attempt's temperature (the escalation);
    `deployment` (a fallback chain's start) or `model` (a batch job's) from the same step."""
    pc = config.prompt
    feedback = prompt_feedback(env) if pc.feedback else None
    return GenerationRequest(
        question_id=env.question_id,
        question=env.question,
        attempt=env.attempt,
        try_no=env.llm_calls + 1,
        prompt=build_prompt(
            config.prompt_template, env.question, feedback, language=question_language(env)
        ),
        reference_answer=env.reference_answer,
        temperature=pc.step(env.attempt).temperature,
        model=model,
        deployment=deployment,
        feedback=feedback,
    )


# Question id -> the question's language, least recently used first. The id is a hash of the
# normalised question, so it stands for the text; a regeneration comes back after every
# question in flight has been asked once, so the bound is well above a backlog's size (the
# detector's own cache, 4,096 texts shared with the judge, missed them under a backlog).
_LANGUAGES: OrderedDict[str, str] = OrderedDict()
LANGUAGE_CACHE_SIZE = 65_536  # ids of 32 characters: a few MB


def question_language(env: Envelope) -> str:
    """The language of the envelope's question (quality.lang), detected once per question."""
    qid = env.question_id
    lang = _LANGUAGES.get(qid)
    if lang is not None:
        _LANGUAGES.move_to_end(qid)
        return lang
    lang = _LANGUAGES[qid] = detect_language(env.question)
    if len(_LANGUAGES) > LANGUAGE_CACHE_SIZE:
        _LANGUAGES.popitem(last=False)
    return lang


def build_prompt(
    template: str, question: str, feedback: str | None, *, language: str | None = None
) -> str:
    """The template, plus the question's language when detected (`language`, else detected
    here), plus -- for a regeneration in the feedback arm -- what was wrong with the rejected
    attempt (Reason.feedback: the gate's reason in words, never the reference answer)."""
    notes: list[str] = []
    lang = language if language is not None else detect_language(question)
    language = LANGUAGE_NAMES.get(lang)
    if language is not None and lang != "en":  # the template already asks for the same language
        notes.append(f"The question is in {language}: answer in {language}.")
    if feedback is not None:
        try:
            said = Reason(feedback).feedback
        except ValueError:
            said = ""
        notes.append(
            "An earlier answer to this question was rejected. "
            + (said or Reason.LOW_SCORE.feedback)
            + " Write a better answer."
        )
    prompt = render_prompt(template, question)
    if not notes:
        return prompt
    note = "\n".join(notes)
    head, sep, tail = prompt.rpartition("Answer:")
    if sep and not tail.strip():  # keep the template's closing cue last
        return f"{head.rstrip()}\n\n{note}\n\nAnswer:{tail}"
    return f"{prompt}\n\n{note}"


def _usage(input_tokens: int | None, output_tokens: int | None) -> str | None:
    if input_tokens is None and output_tokens is None:
        return None
    return f"tokens in={input_tokens} out={output_tokens}"


def errors_since_last_answer(envelope: Envelope) -> set[str]:
    """Error classes met since the question's last answer (or since it was accepted)."""
    classes: set[str] = set()
    for event in reversed(envelope.history):
        if event.kind is EventKind.GENERATED:
            break
        if event.kind is EventKind.LLM_ERROR and event.error_class is not None:
            classes.add(event.error_class.value)
    return classes
