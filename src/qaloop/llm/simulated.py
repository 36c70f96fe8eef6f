"""A seeded simulated LLM: configurable latency, overload (503) and quota (429) error rates,
and answers of varying quality relative to the reference answer.

Every draw is seeded by (seed, question id, attempt, try), so results don't depend on the order
in which concurrent calls happen: two runs with the same seed make the same answers and errors.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from dataclasses import dataclass

from qaloop.llm.base import (
    Generation,
    GenerationRequest,
    OverloadError,
    PermanentError,
    QuotaMinuteError,
)

_FILLER_TEXT = (
    "generally usually depends several factors important consider example often many people "
    "think might however because approach common case answer simple way different option "
    "basically mostly typically likely source useful idea good help"
)
_FILLER = _FILLER_TEXT.split()


@dataclass(frozen=True, slots=True)
class SimulatedConfig:
    seed: int = 42
    latency_median_ms: float = 0.0  # 0 -> answer at once
    latency_sigma: float = 0.5  # lognormal shape
    overload_rate: float = 0.0  # probability of a 503 on any call
    quota_rate: float = 0.0  # probability of a 429 on any call
    quota_retry_after_s: float = 1.0
    permanent_rate: float = 0.0
    quality_alpha: float = 4.0  # answer quality ~ Beta(alpha, beta): fraction of reference kept
    quality_beta: float = 1.5
    # Share of answers that miss the point (keep ~5 % of the reference): real LLM answers are
    # bimodal like this (docs/quality.md), and these are what the quality gate must catch.
    off_topic_rate: float = 0.2


class SimulatedProvider:
    name = "simulated"

    def __init__(self, config: SimulatedConfig | None = None) -> None:
        self.config = config or SimulatedConfig()
        self.calls = 0

    def _rng(self, request: GenerationRequest) -> random.Random:
        key = f"{self.config.seed}:{request.question_id}:{request.attempt}:{request.try_no}"
        return random.Random(hashlib.blake2b(key.encode(), digest_size=8).digest())

    async def generate(self, request: GenerationRequest) -> Generation:
        self.calls += 1
        cfg = self.config
        rng = self._rng(request)
        latency_s = 0.0
        if cfg.latency_median_ms > 0:
            latency_s = rng.lognormvariate(0.0, cfg.latency_sigma) * cfg.latency_median_ms / 1000
        started = time.perf_counter()
        if latency_s > 0:
            await asyncio.sleep(latency_s)
        roll = rng.random()
        if roll < cfg.overload_rate:
            raise OverloadError("simulated 503: the model is overloaded", status=503)
        roll -= cfg.overload_rate
        if roll < cfg.quota_rate:
            raise QuotaMinuteError(
                "simulated 429: requests per minute exceeded",
                status=429,
                retry_after_s=cfg.quota_retry_after_s,
            )
        roll -= cfg.quota_rate
        if roll < cfg.permanent_rate:
            raise PermanentError("simulated 400: invalid argument", status=400)
        text = self._answer(request, rng)
        return Generation(
            text=text,
            latency_ms=(time.perf_counter() - started) * 1000,
            model="simulated",
            input_tokens=len(request.prompt.split()),
            output_tokens=len(text.split()),
        )

    def _answer(self, request: GenerationRequest, rng: random.Random) -> str:
        reference = request.reference_answer
        if not reference or not reference.split():
            return f"A concise answer to: {request.question.strip()}"
        if rng.random() < self.config.off_topic_rate:
            quality = rng.betavariate(1.0, 19.0)
        else:
            quality = rng.betavariate(self.config.quality_alpha, self.config.quality_beta)
        words = reference.split()[:200]
        out = [w if rng.random() < quality else rng.choice(_FILLER) for w in words]
        return " ".join(out)

    async def aclose(self) -> None:
        return None
