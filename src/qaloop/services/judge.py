"""The plain-Python quality judge: judges generated answers in batches through the gate stage
(qaloop.services.gating: the cheap gate, then the LLM judge for UNSURE verdicts and questions
without a reference) and routes each one with qaloop.core.routing.judge (the same function the
Flink job calls)."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence

from qaloop.bus.base import Message, OutMessage, Topics
from qaloop.core.model import Envelope
from qaloop.core.routing import DECISION_VALUE, Decision, GateConfig, judge
from qaloop.core.wire import out
from qaloop.observability.logs import log_event
from qaloop.observability.metrics import LabelCache, Metrics
from qaloop.quality.base import Scorer, score_details
from qaloop.quality.cascade import Cascade, Judged, ScorerGate
from qaloop.services.gating import judge_item
from qaloop.services.runner import decode_batch

log = logging.getLogger(__name__)


# The state change a decision makes, as the log line names it.
_EVENT = {
    Decision.VALIDATE: "validated",
    Decision.REGENERATE: "regenerated",
    Decision.GIVE_UP: "gave_up",
    Decision.JUDGE_ERROR: "gave_up",
}


def route(decision: Decision, envelope: Envelope, topics: Topics) -> OutMessage:
    match decision:
        case Decision.VALIDATE:
            return out(topics.validated, envelope)
        case Decision.REGENERATE:
            return out(topics.questions, envelope)
        case Decision.GIVE_UP:
            return out(topics.dead_letter, envelope, **{"qaloop-reason": "gave_up: low score"})
        case Decision.JUDGE_ERROR:
            why = (envelope.error_detail or "judge_error")[:200]
            return out(topics.dead_letter, envelope, **{"qaloop-reason": why})


def as_stage(gate: Cascade | Scorer, config: GateConfig) -> Cascade:
    """A bare scorer (tests, benchmarks) as a cascade without a second opinion."""
    if isinstance(gate, Cascade):
        return gate
    return Cascade(ScorerGate(gate, config.threshold), None)


def log_judged(envelope: Envelope, judged: Judged, decision: Decision, routed: Envelope) -> None:
    v = judged.verdict
    log_event(
        log,
        _EVENT[decision],
        envelope,
        "(score %s, %s by %s)",
        "n/a" if v.score is None else f"{v.score:.3f}",
        v.reason.value,
        v.judged_by,
        score=v.score,
        decision=decision.value,
        reason=v.reason.value,
        judged_by=v.judged_by,
        state=routed.state.value,
    )
    if judged.cross_language:
        log_event(log, "cross_language", envelope, "answer and reference languages differ")


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
        gate: Cascade | Scorer,
        config: GateConfig,
        topics: Topics,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
    ) -> None:
        self.stage = as_stage(gate, config)
        self.gate = config
        self.topics = topics
        self.clock = clock
        self.decisions: Counter[str] = Counter()
        self.unscored = 0  # verdicts without a score (judge errors)
        self.judged_by: Counter[str] = Counter()
        self.quality: Counter[str] = Counter()  # e.g. "cross_language"
        self.metrics = metrics if metrics is not None else Metrics()
        self._decided = LabelCache(self.metrics.decisions)

    async def handle_batch(self, messages: Sequence[Message]) -> list[OutMessage]:
        good, outputs = decode_batch(messages, self.topics.dead_letter)
        if outputs:
            self.metrics.poison.labels("judge").inc(len(outputs))
        envelopes = [e for e, _ in good]
        started = time.perf_counter()
        judged = await self.stage.judge_many([judge_item(e) for e in envelopes])
        if envelopes:
            self.metrics.scoring_seconds.observe(time.perf_counter() - started)
        now = self.clock()
        m = self.metrics
        # The per-answer INFO line (qaloop.observability.logs: below INFO it is DEBUG, also
        # off): its arguments cost ~5 µs an answer, for nothing at WARNING (the services'
        # level in the throughput benchmark).
        logged = log.isEnabledFor(logging.INFO)
        for envelope, j in zip(envelopes, judged, strict=True):
            score = j.verdict.score
            if score is None:
                self.unscored += 1
            if j.cross_language:
                self.quality["cross_language"] += 1
            self.judged_by[j.verdict.judged_by or "gate"] += 1
            decision, routed = judge(envelope, j.verdict, self.gate, now, j.cost)
            value = DECISION_VALUE[decision]
            self.decisions[value] += 1
            attempt = str(envelope.attempt)
            self._decided(value, attempt).inc()
            if score is not None:
                m.scores.labels(attempt).observe(score)
            if logged:
                log_judged(envelope, j, decision, routed)
            outputs.append(route(decision, routed, self.topics))
        return outputs

    def stats(self) -> dict[str, object]:
        return {
            "decisions": dict(self.decisions),
            "unscored": self.unscored,
            "judged_by": dict(self.judged_by),
            "cascade": dict(self.stage.stats),
        }

    async def aclose(self) -> None:
        await self.stage.aclose()
