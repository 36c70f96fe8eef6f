"""The plain-Python quality judge: scores generated answers in batches and routes each one with
qaloop.core.routing.judge (the same function the Flink job calls)."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence

from qaloop.bus.base import Message, OutMessage, Topics
from qaloop.core.model import Envelope
from qaloop.core.routing import Decision, GateConfig, judge
from qaloop.core.wire import out
from qaloop.observability.logs import log_event
from qaloop.observability.metrics import LabelCache, Metrics
from qaloop.quality.base import Scorer, score_details
from qaloop.services.runner import decode_batch

log = logging.getLogger(__name__)


# The state change a decision makes, as the log line names it.
_EVENT = {
    Decision.VALIDATE: "validated",
    Decision.REGENERATE: "regenerated",
    Decision.GIVE_UP: "gave_up",
}


def route(decision: Decision, envelope: Envelope, topics: Topics) -> OutMessage:
    match decision:
        case Decision.VALIDATE:
            return out(topics.validated, envelope)
        case Decision.REGENERATE:
            return out(topics.questions, envelope)
        case Decision.GIVE_UP:
            return out(topics.dead_letter, envelope, **{"qaloop-reason": "gave_up: low score"})


def score_envelopes(
    scorer: Scorer, envelopes: Sequence[Envelope], stats: Counter[str] | None = None
) -> list[float | None]:
    """Scores for the envelopes that have a reference (None where there is none to compare).
    `stats` counts `cross_language` pairs when the scorer reports details (docs/quality.md)."""
    indexed = [
        (i, e.answer or "", e.reference_answer)
        for i, e in enumerate(envelopes)
        if e.reference_answer is not None and e.reference_answer.strip()
    ]
    scores: list[float | None] = [None] * len(envelopes)
    details = score_details(scorer, [(a, r) for _, a, r in indexed]) if indexed else []
    for (i, _, _), detail in zip(indexed, details, strict=True):
        scores[i] = detail.score
        if stats is not None and detail.cross_language:
            stats["cross_language"] += 1
            log_event(
                log,
                "cross_language",
                envelopes[i],
                "answer language %s, reference %s",
                detail.answer_lang,
                detail.reference_lang,
            )
    return scores


class Judge:
    def __init__(
        self,
        scorer: Scorer,
        gate: GateConfig,
        topics: Topics,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
    ) -> None:
        self.scorer = scorer
        self.gate = gate
        self.topics = topics
        self.clock = clock
        self.decisions: Counter[str] = Counter()
        self.unscored = 0
        self.quality: Counter[str] = Counter()  # e.g. "cross_language"
        self.metrics = metrics if metrics is not None else Metrics()
        self._decided = LabelCache(self.metrics.decisions)

    async def handle_batch(self, messages: Sequence[Message]) -> list[OutMessage]:
        good, outputs = decode_batch(messages, self.topics.dead_letter)
        if outputs:
            self.metrics.poison.labels("judge").inc(len(outputs))
        envelopes = [e for e, _ in good]
        started = time.perf_counter()
        scores = score_envelopes(self.scorer, envelopes, self.quality)
        if envelopes:
            self.metrics.scoring_seconds.observe(time.perf_counter() - started)
        now = self.clock()
        m = self.metrics
        for envelope, score in zip(envelopes, scores, strict=True):
            if score is None:
                self.unscored += 1
            decision, routed = judge(envelope, score, self.gate, now)
            self.decisions[decision.value] += 1
            attempt = str(envelope.attempt)
            self._decided(decision.value, attempt).inc()
            if score is not None:
                m.scores.labels(attempt).observe(score)
            log_event(
                log,
                _EVENT[decision],
                envelope,
                "(score %s)",
                "n/a" if score is None else f"{score:.3f}",
                score=score,
                decision=decision.value,
                state=routed.state.value,
            )
            outputs.append(route(decision, routed, self.topics))
        return outputs
