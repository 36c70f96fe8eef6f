"""A seeded simulated LLM: configurable latency, overload (503) and quota (429) error rates,
answers of known kinds, and a simulated LLM judge.

Errors are drawn per call, seeded by (seed, question id, attempt, try). The answer is drawn per
attempt, seeded by (seed, question id, attempt) and by whether the prompt carried feedback, so
results don't depend on the order concurrent calls happen in, and a retried call of the same
attempt gives the same answer. Each draw is a pure function of those parts: one 64-bit hash of
them (`_unit`: a uniform in [0, 1) with no generator at all) or, for the answer's text, one
`Random` seeded with that integer (seeding from bytes, four times per call, was a tenth of a
worker's CPU per call).

Answer kinds (weights `kinds`, renormalised):

    good        the reference's sentences, each after the first kept with a Beta(alpha, beta)
                chance; without a reference, a sentence about the question's terms
    off_topic   filler with nothing of the question or reference
    echo        the question repeated
    non_answer  a stock non-answer ("It depends on many factors.", a refusal, ...)
    wrong       the reference with its numbers changed and a claim negated

A share `hard_rate` of questions (seeded by the question id) is hard: their bad kinds weigh
`hard_factor` times more, so failures repeat on regeneration, as in the recorded data. When the
prompt carries feedback, the bad kinds weigh `(1 - feedback_effect)` times as much.
**That effect is an input of the simulation, not a finding**: a report of the simulated loop
shows the gain it was configured with, plus sampling noise (docs/quality.md).

The simulated judge (a request with purpose "judge") knows what it generated: for an answer it
can regenerate from (question id, attempt, feedback) it grades by the kind, wrong with
probability `judge_error_rate`; any other answer is graded by token overlap with the reference
(pass >= 0.5) or, without a reference, failed. It replies with the JSON the real judge's prompt
asks for (qaloop.quality.llm_judge).
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import itertools
import json
import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

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
_NON_ANSWERS = (
    "It depends on many factors.",
    "I don't know, sorry.",
    "There are many different opinions about this.",
    "I'm sorry, I can't help with that.",
    "You should ask someone who knows more about it.",
)
KINDS = ("good", "off_topic", "echo", "non_answer", "wrong")
BAD_KINDS = KINDS[1:]
_JUDGE_REASON = {
    "good": "ok",
    "off_topic": "off_topic",
    "echo": "echo",
    "non_answer": "non_answer",
    "wrong": "contradiction",
}
_NUMBER = re.compile(r"\b\d+\b")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_COPULA = re.compile(r"\b(is|are|was|were|can|will|does|do)\b", re.IGNORECASE)
_WORD = re.compile(r"\w+")


def _default_kinds() -> dict[str, float]:
    return {"good": 0.62, "off_topic": 0.12, "echo": 0.08, "non_answer": 0.08, "wrong": 0.10}


@dataclass(frozen=True, slots=True)
class SimulatedConfig:
    seed: int = 42
    latency_median_ms: float = 0.0  # 0 -> answer at once
    latency_sigma: float = 0.5  # lognormal shape
    overload_rate: float = 0.0  # probability of a 503 on any call
    quota_rate: float = 0.0  # probability of a 429 on any call
    quota_retry_after_s: float = 1.0
    permanent_rate: float = 0.0
    quality_alpha: float = 4.0  # a good answer keeps a Beta(alpha, beta) share of the reference
    quality_beta: float = 1.5
    kinds: Mapping[str, float] = field(default_factory=_default_kinds)
    hard_rate: float = 0.3  # share of questions whose bad kinds weigh hard_factor times more
    hard_factor: float = 3.0
    feedback_effect: float = 0.5  # an input: bad kinds weigh (1 - effect) with feedback
    judge_error_rate: float = 0.0  # the simulated judge grades wrongly this often

    def __post_init__(self) -> None:
        unknown = set(self.kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown answer kinds {sorted(unknown)}; known: {', '.join(KINDS)}")
        if any(w < 0 for w in self.kinds.values()) or sum(self.kinds.values()) <= 0:
            raise ValueError("answer kind weights must be >= 0 and not all 0")
        for name in ("hard_rate", "feedback_effect", "judge_error_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")


def _seed(*parts: object) -> int:
    """A stable 64-bit integer of `parts` (not Python's salted hash: runs must repeat)."""
    key = ":".join(map(str, parts)).encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")


def _unit(*parts: object) -> float:
    """A uniform draw in [0, 1) that is a pure function of `parts` (53 bits, like random())."""
    return (_seed(*parts) >> 11) * _TWO_POW_M53


def _rng(*parts: object) -> random.Random:
    """A generator for draws that need several numbers (an answer's text, a latency)."""
    return random.Random(_seed(*parts))


_TWO_POW_M53 = 2.0**-53


def _terms(question: str) -> list[str]:
    """The question's longer words (what an answer without a reference talks about)."""
    return [w for w in _WORD.findall(question) if len(w) > 3][:8] or question.split()[:5]


class SimulatedProvider:
    name = "simulated"

    def __init__(self, config: SimulatedConfig | None = None) -> None:
        self.config = config or SimulatedConfig()
        self.calls = 0
        self.judge_calls = 0
        self._weights: dict[tuple[bool, bool], list[float]] = {}

    async def generate(self, request: GenerationRequest) -> Generation:
        self.calls += 1
        cfg = self.config
        parts = (cfg.seed, request.question_id, request.attempt, request.try_no)
        latency_s = 0.0
        if cfg.latency_median_ms > 0:
            rng = _rng(*parts, "latency")
            latency_s = rng.lognormvariate(0.0, cfg.latency_sigma) * cfg.latency_median_ms / 1000
        started = time.perf_counter()
        if latency_s > 0:
            await asyncio.sleep(latency_s)
        # The roll is a hash of its own parts, not a generator's next number: skipping it when
        # no error can be drawn (a roll in [0, 1) is never below 0) changes no other draw.
        if cfg.overload_rate or cfg.quota_rate or cfg.permanent_rate:
            roll = _unit(*parts, "error")
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
        if request.purpose == "judge":
            self.judge_calls += 1
            text = self._verdict(request)
        else:
            text = self.answer(
                request.question_id,
                request.question,
                request.reference_answer,
                request.attempt,
                request.feedback,
            )[1]
        return Generation(
            text=text,
            latency_ms=(time.perf_counter() - started) * 1000,
            model=request.model or "simulated",
            input_tokens=len(request.prompt.split()),
            output_tokens=len(text.split()),
        )

    # ------------------------------------------------------------------ answers

    def kind(self, question_id: str, attempt: int, feedback: str | None) -> str:
        cfg = self.config
        hard = _unit(cfg.seed, "hard", question_id) < cfg.hard_rate
        cumulative = self._cumulative_weights(hard, bool(feedback))
        draw = _unit(cfg.seed, "kind", question_id, attempt, bool(feedback)) * cumulative[-1]
        # random.choices' rule, with the one uniform drawn from the hash
        return KINDS[bisect.bisect(cumulative, draw, 0, len(KINDS) - 1)]

    def _cumulative_weights(self, hard: bool, feedback: bool) -> list[float]:
        """The kinds' cumulative weights for one of the four (hard, feedback) cases."""
        key = (hard, feedback)
        cached = self._weights.get(key)
        if cached is not None:
            return cached
        cfg = self.config
        weights = []
        for k in KINDS:
            w = float(cfg.kinds.get(k, 0.0))
            if k != "good":
                if hard:
                    w *= cfg.hard_factor
                if feedback:
                    w *= 1.0 - cfg.feedback_effect
            weights.append(w)
        cumulative = self._weights[key] = list(itertools.accumulate(weights))
        return cumulative

    def answer(
        self,
        question_id: str,
        question: str,
        reference: str | None,
        attempt: int,
        feedback: str | None,
    ) -> tuple[str, str]:
        """(kind, text) of the attempt's answer: a pure function of its arguments and seed."""
        kind = self.kind(question_id, attempt, feedback)
        seed = (self.config.seed, "text", question_id, attempt, bool(feedback))
        words = (reference or "").split()[:200]
        # the generator and the question's terms only where a kind uses them (echo and wrong
        # draw nothing)
        match kind:
            case "good" if words:
                rng = _rng(*seed)
                # A restatement: whole sentences of the reference, each kept with a Beta(alpha,
                # beta) chance (the first always), so what it says stays true -- a good answer
                # does not garble the reference's numbers, names or negations.
                quality = rng.betavariate(self.config.quality_alpha, self.config.quality_beta)
                sentences = _SENTENCE.split(" ".join(words))
                kept = [sentences[0]] + [x for x in sentences[1:] if rng.random() < quality]
                text = " ".join(kept)
            case "good":
                rng, terms = _rng(*seed), _terms(question)
                text = (
                    f"{' '.join(terms)}: the short answer is that it comes down to "
                    f"{rng.choice(terms)}, for example {rng.choice(terms)} in practice."
                )
            case "off_topic":
                choice = _rng(*seed).choice
                text = " ".join([choice(_FILLER) for _ in range(max(12, min(len(words), 40)))])
            case "echo":
                text = f"{question.strip()} {question.strip().lower()}"
            case "non_answer":
                text = _rng(*seed).choice(_NON_ANSWERS)
            case _:  # wrong
                base = (
                    " ".join(words)
                    if words
                    else " ".join(_terms(question)) + " is the usual answer."
                )
                text = _NUMBER.sub(lambda m: str(int(m.group()) + 7), base)
                text = _COPULA.sub(lambda m: f"{m.group()} not", text, count=1)
                if text == base:  # nothing to change: negate the first claim anyway
                    head, _, rest = text.partition(" ")
                    second, _, tail = rest.partition(" ")
                    text = f"{head} {second} never {tail}" if tail else f"Not {text}"
        text = text.strip() or "?"
        if text[-1].isalnum():  # a finished sentence: a gate may fail answers cut mid-sentence
            text += "."
        return kind, text

    # ------------------------------------------------------------------ the judge

    def _verdict(self, request: GenerationRequest) -> str:
        cfg = self.config
        answer = request.answer or ""
        reference = request.reference_answer
        kind, expected = self.answer(
            request.question_id, request.question, reference, request.attempt, request.feedback
        )
        if answer.strip() == expected.strip():
            good = kind == "good"
            if _unit(cfg.seed, "judge", request.question_id, request.attempt) < (
                cfg.judge_error_rate
            ):
                good = not good
            reason = "ok" if good else _JUDGE_REASON[kind]
            if not good and reason == "ok":
                reason = "other"
        else:  # not an answer of ours: a plain overlap grade
            ref = {w.lower() for w in _WORD.findall(reference or "")}
            got = {w.lower() for w in _WORD.findall(answer)}
            good = bool(ref) and len(ref & got) / len(ref) >= 0.5
            reason = "ok" if good else ("off_topic" if ref else "other")
        score = 8 if good else 2
        return json.dumps(
            {
                "score": score,
                "verdict": "pass" if good else "fail",
                "reason": reason,
                "explanation": "simulated grade",
            }
        )

    async def aclose(self) -> None:
        return None
