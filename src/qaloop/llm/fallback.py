"""A fallback chain: an ordered list of deployments (provider/model), each behind its own
protection (limits, breaker: qaloop.llm.protection). A call goes to the first deployment and
moves to the next one when the first can't serve it for a while:

    QuotaDayError       the day's quota is gone -> that deployment rests until the reset
    CircuitOpenError    our breaker for it is open (it kept failing) -> nothing was sent
    PermanentError with an HTTP status (400, 401, 403, 404, 422 ...): the server refused the
                        request for this model (unknown model, bad key, model gone)

Anything else goes back to the worker as is: a 503 or a per-minute 429 is the worker's to
retry or park (the deployment will serve again in seconds), and a content-level permanent
error (a safety block, an empty answer: no status) is about the prompt, not the model.
When every deployment fell through, the error raised is the retryable one that clears
soonest, so a question is parked rather than dead-lettered while some deployment is only
resting. The answer records who answered (`Generation.provider`, `.model`).

Escalation by attempt (qaloop.llm.escalation decides it): a request naming a `deployment`
starts there and falls back along the chain from there. An escalation-only deployment (another
model of the primary's provider, named only by the escalation) is called only by the attempts
that start at it, never as a fallback of the others.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from qaloop.llm.base import (
    CircuitOpenError,
    Generation,
    GenerationRequest,
    LLMError,
    PermanentError,
    Provider,
    QuotaDayError,
)
from qaloop.llm.deployments import Deployment, DeploymentError

log = logging.getLogger(__name__)


def moves_on(error: LLMError) -> str | None:
    """Why this error sends the call to the next deployment (None: it doesn't)."""
    if isinstance(error, QuotaDayError):
        return "quota_day"
    if isinstance(error, CircuitOpenError):
        return "circuit_open"
    if isinstance(error, PermanentError) and error.status is not None and 400 <= error.status < 500:
        return "model_error"
    return None


def pick_error(errors: Sequence[LLMError]) -> LLMError:
    """What the worker sees when every deployment fell through: the retryable error that
    clears soonest, else the first permanent one."""
    retryable = [e for e in errors if not isinstance(e, PermanentError)]
    if not retryable:
        return errors[0]
    timed = [e for e in retryable if e.retry_after_s is not None]
    if timed:
        return min(timed, key=lambda e: e.retry_after_s or 0.0)
    return retryable[0]


class FallbackProvider:
    def __init__(
        self,
        chain: Sequence[tuple[Deployment, Provider]],
        *,
        escalation: Sequence[str] = (),
        escalation_only: Sequence[str] = (),
        quota_day_rest_s: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not chain:
            raise DeploymentError("a fallback chain needs at least one deployment")
        self.chain = list(chain)
        keys = [d.key for d, _ in self.chain]
        unknown = [k for k in escalation if k not in keys]
        if unknown:
            raise DeploymentError(
                f"escalation names {', '.join(unknown)}, which is neither the primary model nor "
                f"a fallback ({', '.join(keys)})"
            )
        self.escalation = list(escalation)  # the deployments attempts may start at
        self.escalation_only = frozenset(escalation_only)
        self.name = self.chain[0][0].provider
        self.model = self.chain[0][0].model
        self.quota_day_rest_s = quota_day_rest_s
        self.clock = clock
        self._resting: dict[str, float] = {}  # deployment key -> monotonic time it may serve
        self.moves: Counter[tuple[str, str]] = Counter()  # (from key, reason)
        self.answered_by: Counter[str] = Counter()
        self.metrics: Any | None = None  # qaloop.observability.metrics.Metrics, if attached

    def __repr__(self) -> str:
        return f"FallbackProvider({[d.key for d, _ in self.chain]}, escalation={self.escalation})"

    def order_for(self, start: str | None) -> list[tuple[Deployment, Provider]]:
        """The deployments a call starting at `start` tries, in order (None: the primary)."""
        first = next((i for i, (d, _) in enumerate(self.chain) if d.key == start), 0)
        ordered = self.chain[first:] + self.chain[:first]
        return [c for i, c in enumerate(ordered) if i == 0 or c[0].key not in self.escalation_only]

    async def generate(self, request: GenerationRequest) -> Generation:
        errors: list[LLMError] = []
        for deployment, provider in self.order_for(request.deployment):
            key = deployment.key
            rest_until = self._resting.get(key, 0.0)
            now = self.clock()
            if rest_until > now:
                errors.append(
                    QuotaDayError(f"{key}: daily quota spent", retry_after_s=rest_until - now)
                )
                continue
            try:
                generation = await provider.generate(request)
            except LLMError as exc:
                reason = moves_on(exc)
                if reason is None:
                    raise
                if reason == "quota_day":
                    rest = exc.retry_after_s or self.quota_day_rest_s
                    self._resting[key] = self.clock() + rest
                self._moved(request, key, reason, exc)
                errors.append(exc)
                continue
            self.answered_by[key] += 1
            return dataclasses.replace(
                generation,
                provider=deployment.provider,
                model=generation.model or deployment.model,
                requested_model=deployment.model,
            )
        raise pick_error(errors)

    def _moved(self, request: GenerationRequest, key: str, reason: str, exc: LLMError) -> None:
        self.moves[(key, reason)] += 1
        if self.metrics is not None:
            self.metrics.llm_fallbacks.labels(key, reason).inc()
        log.info(
            "question %s: %s can't serve (%s: %s); trying the next deployment",
            request.question_id,
            key,
            reason,
            exc.detail[:120],
        )

    def stats(self) -> dict[str, Any]:
        return {
            "answered_by": dict(self.answered_by),
            "moved_on": {f"{k} {r}": n for (k, r), n in self.moves.items()},
            "resting": sorted(k for k, t in self._resting.items() if t > self.clock()),
        }

    async def aclose(self) -> None:
        for _, provider in self.chain:
            try:
                await provider.aclose()
            except Exception as exc:  # close the others anyway
                log.warning("closing %r failed: %s", provider, exc)


def attach_metrics(provider: Provider, metrics: Any) -> None:
    """Let a fallback chain count its moves in the process's metrics."""
    if isinstance(provider, FallbackProvider):
        provider.metrics = metrics


def fallback_stats(provider: Provider) -> dict[str, Any]:
    """Who answered and why calls moved on ({} without a chain), for /v1/stats."""
    return provider.stats() if isinstance(provider, FallbackProvider) else {}
