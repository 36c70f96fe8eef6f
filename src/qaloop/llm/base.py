"""The provider interface and its error tree.

    LLMError                      every provider failure, classified (error_class)
    ├── OverloadError             503 UNAVAILABLE / "model overloaded"        -> backoff retry
    │   └── CircuitOpenError      our breaker is open: failed fast, nothing sent
    ├── ServerError               500, 504, timeouts, connection errors      -> backoff retry
    ├── QuotaMinuteError          429 per-minute (retry_after_s if known)    -> park until due
    ├── QuotaDayError             429 per-day or zero quota                  -> park until reset
    ├── PermanentError            400-class, safety block, empty/malformed, unknown question
    └── BudgetError               the question's LLM-call budget is spent      -> dead letter

Providers translate their library's errors at the boundary (`raise QuotaMinuteError(...) from
exc`); nothing above this module sees an HTTP status or an SDK exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol

from qaloop.core.model import ErrorClass


class LLMError(Exception):
    error_class: ClassVar[ErrorClass] = ErrorClass.PERMANENT

    def __init__(
        self, detail: str, *, retry_after_s: float | None = None, status: int | None = None
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after_s = retry_after_s
        self.status = status


class OverloadError(LLMError):
    error_class = ErrorClass.OVERLOAD


class ServerError(LLMError):
    error_class = ErrorClass.SERVER


class CircuitOpenError(OverloadError):
    """Our own breaker refused the call before it left (the provider was failing): an
    overload to the worker, and a reason for a fallback chain to try the next deployment."""


class QuotaMinuteError(LLMError):
    error_class = ErrorClass.QUOTA_MINUTE


class QuotaDayError(LLMError):
    error_class = ErrorClass.QUOTA_DAY


class PermanentError(LLMError):
    error_class = ErrorClass.PERMANENT


class BudgetError(LLMError):
    """Raised before a call when the question already spent its LLM-call budget."""

    error_class = ErrorClass.BUDGET


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    question_id: str
    question: str
    attempt: int
    try_no: int  # 1-based number of this LLM call for the question (retries, parks included)
    prompt: str
    # Only simulated providers may read the reference (to make answers of known quality).
    reference_answer: str | None = None
    purpose: str = "answer"  # "answer" (generation) or "judge" (qaloop.llm.judge)
    # Per-attempt escalation (qaloop.llm.escalation); None: the provider's own default.
    temperature: float | None = None
    model: str | None = None  # a model of this provider (the batch lane's jobs)
    deployment: str | None = None  # "provider/model" a fallback chain starts at
    # Simulated providers only: the rejected attempt's reason the prompt carries (to apply
    # the configured effect of feedback), and the answer a judge request grades.
    feedback: str | None = None
    answer: str | None = None


@dataclass(frozen=True, slots=True)
class Generation:
    text: str
    latency_ms: float
    model: str = ""
    input_tokens: int | None = None  # None: the provider reported no usage (cost estimated)
    output_tokens: int | None = None
    cached_tokens: int | None = None  # part of input_tokens served from the provider's cache
    provider: str = ""  # who answered, when a fallback chain may have moved the call
    requested_model: str = ""  # the model the call asked for (prices an unlisted reply model)


class Provider(Protocol):
    name: str

    async def generate(self, request: GenerationRequest) -> Generation: ...

    async def aclose(self) -> None: ...


DEFAULT_PROMPT_TEMPLATE = (
    "Answer the following question concisely, in the same language as the question.\n\n"
    "Question: {question}\n\nAnswer:"
)


def render_prompt(template: str, question: str) -> str:
    return template.replace("{question}", question)
