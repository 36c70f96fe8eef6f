"""The LLM judge's I/O half: grades answers through the provider layer (qaloop.llm), with the
prompt and parsing of qaloop.quality.llm_judge.

The provider is built like generation's (qaloop.llm.factory.make_judge_provider): the same
protection (budget, circuit breaker, bounded concurrency, rate limits, timeout), with the
judge's own share of the quota under its own limiter key. On top, like the worker: overload and
server errors are retried in the call's own task with full-jitter backoff (`overload_tries`); a
quota error whose delay fits `max_wait_s` is waited out once. Whatever still fails becomes a
JUDGE_ERROR verdict carrying the error class: the routing dead-letters it with that reason.

Spend, like the worker's (docs/spend.md): with a `Meter`, the call that returns the verdict is
priced from its usage metadata (purpose "judge"; estimated, and marked so, when the provider
reports none) and rides on the SCORED event into storage's llm_usage; with a `Budget` (the
generation's: one ledger), a hard limit stops the call before it is made -- a JUDGE_ERROR
"budget: ..." that never validates -- and each priced call is charged to it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import random
from collections import Counter
from collections.abc import Sequence

from qaloop.core.model import Usage
from qaloop.core.retry import full_jitter_backoff
from qaloop.core.routing import JudgeCost
from qaloop.llm.accounting import JUDGE, Meter
from qaloop.llm.base import (
    Generation,
    GenerationRequest,
    LLMError,
    OverloadError,
    Provider,
    QuotaDayError,
    QuotaMinuteError,
    ServerError,
)
from qaloop.llm.budget import Budget
from qaloop.quality import llm_judge
from qaloop.quality.cascade import Judged, JudgeItem

log = logging.getLogger(__name__)


class LLMJudge:
    name = llm_judge.NAME

    def __init__(
        self,
        provider: Provider,
        *,
        concurrency: int = 16,
        overload_tries: int = 4,
        backoff_base_s: float = 0.25,
        backoff_cap_s: float = 8.0,
        max_wait_s: float = 10.0,
        timeout_s: float = 75.0,
        seed: int = 42,
        meter: Meter | None = None,
        budget: Budget | None = None,
    ) -> None:
        self.provider = provider
        self.meter = meter
        self.budget = budget
        self._slots = asyncio.Semaphore(max(1, concurrency))
        self.overload_tries = max(1, overload_tries)
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.max_wait_s = max_wait_s
        self.timeout_s = timeout_s
        self.seed = seed
        self.stats: Counter[str] = Counter()  # calls, tokens, prechecked, errors by class

    async def judge_many(self, items: Sequence[JudgeItem]) -> list[Judged]:
        return list(await asyncio.gather(*(self._judge_one(it) for it in items)))

    async def _judge_one(self, item: JudgeItem) -> Judged:
        early = llm_judge.precheck(item.input)
        if early is not None:
            self.stats["prechecked"] += 1
            return Judged(early)
        prompt = llm_judge.build_prompt(item.input)
        calls = tokens = 0
        try_no = 0
        async with self._slots:
            while True:
                stop = await self._spend_stop(item)
                if stop is not None:
                    self.stats["budget_stops"] += 1
                    log.warning(
                        "question %s attempt %d: LLM judge not called: %s",
                        item.question_id,
                        item.attempt,
                        stop,
                    )
                    return Judged(llm_judge.judge_error(stop), JudgeCost(calls, tokens))
                try_no += 1
                calls += 1
                request = GenerationRequest(
                    question_id=item.question_id,
                    question=item.input.question,
                    attempt=item.attempt,
                    try_no=item.calls_so_far + try_no,
                    prompt=prompt,
                    reference_answer=item.input.reference,
                    purpose="judge",
                    temperature=0.0,  # grading: as repeatable as the provider allows
                    answer=item.input.answer,
                    feedback=item.feedback,
                )
                self.stats["calls"] += 1
                try:
                    async with asyncio.timeout(self.timeout_s):
                        generation = await self.provider.generate(request)
                except (LLMError, TimeoutError) as raw:
                    error = (
                        raw
                        if isinstance(raw, LLMError)
                        else ServerError(f"timed out after {self.timeout_s} s")
                    )
                    self.stats[f"error_{error.error_class.value}"] += 1
                    delay = self._retry_delay(error, item, try_no)
                    if delay is None:
                        log.warning(
                            "question %s attempt %d: LLM judge failed: %s (%s)",
                            item.question_id,
                            item.attempt,
                            error.error_class.value,
                            error.detail[:200],
                        )
                        verdict = llm_judge.judge_error(
                            f"{error.error_class.value}: {error.detail[:200]}"
                        )
                        return Judged(verdict, JudgeCost(calls, tokens))
                    await asyncio.sleep(delay)
                    continue
                usage = await self._account(generation, prompt, item)
                if usage is not None:
                    used = usage.input_tokens + usage.output_tokens
                else:
                    used = (generation.input_tokens or 0) + (generation.output_tokens or 0)
                if not used:  # a provider that reports no usage: ~4 characters a token
                    used = math.ceil((len(prompt) + len(generation.text)) / 4)
                tokens += used
                self.stats["tokens"] += used
                verdict = llm_judge.parse_verdict(generation.text, item.input)
                self.stats[f"verdict_{verdict.reason.value}"] += 1
                return Judged(verdict, JudgeCost(calls, tokens, usage))

    async def _spend_stop(self, item: JudgeItem) -> str | None:
        """ "budget: ..." when the spend budget (the caller's, or everyone's) is reached. Like
        the worker, a ledger that can't be read stops too (fails closed)."""
        if self.budget is None:
            return None
        try:
            stop = await self.budget.check(item.caller)
        except LLMError as exc:
            return f"budget: spend ledger unavailable ({exc.detail[:120]})"
        return None if stop is None else stop.message

    async def _account(self, generation: Generation, prompt: str, item: JudgeItem) -> Usage | None:
        """Price the call (purpose judge) and charge it to the spend budget."""
        if self.meter is None:
            return None
        inner = getattr(self.provider, "inner", self.provider)
        name = str(getattr(self.provider, "name", None) or getattr(inner, "name", "llm"))
        usage = self.meter.usage(
            generation,
            prompt,
            generation.provider or name,
            purpose=JUDGE,
            configured_model=generation.requested_model or getattr(inner, "model", None),
        )
        if self.budget is not None:
            await self.budget.charge(item.caller, usage.cost_usd)
        return usage

    def _retry_delay(self, error: LLMError, item: JudgeItem, try_no: int) -> float | None:
        """How long to wait before trying again, or None to give the answer up to JUDGE_ERROR."""
        if isinstance(error, OverloadError | ServerError):
            if try_no >= self.overload_tries:
                return None
            key = f"judge:{self.seed}:{item.question_id}:{item.attempt}:{try_no}"
            rng = random.Random(hashlib.blake2b(key.encode(), digest_size=8).digest())
            return full_jitter_backoff(try_no, self.backoff_base_s, self.backoff_cap_s, rng)
        if isinstance(error, QuotaMinuteError) and not isinstance(error, QuotaDayError):
            wait = error.retry_after_s
            if try_no == 1 and wait is not None and wait <= self.max_wait_s:
                return wait
        return None

    async def aclose(self) -> None:
        await self.provider.aclose()
        if self.budget is not None:  # shared with the worker in one process: closing is idempotent
            await self.budget.aclose()
