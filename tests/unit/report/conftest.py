"""A small known dataset: five questions whose every number the report must reproduce.

Q1 validated on attempt 1 (score 0.8), asked 3 more times (hits).
Q2 503 once (backoff 0.5 s), then 0.3 -> regenerated -> 0.6 validated.
Q3 429 once (parked 2 s), then 0.2, 0.1, 0.4 -> gave up after attempt 3.
Q4 permanent 400 -> gave up at once.   Q5 503 once, still in flight.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from qaloop.core.model import Envelope, ErrorClass, EventKind, QuestionState
from qaloop.storage.base import DeadLetter, Repository
from qaloop.storage.factory import open_repository

G, E, S = EventKind.GENERATED, EventKind.LLM_ERROR, EventKind.SCORED


def new(qid: str) -> Envelope:
    return Envelope(
        qid, f"question {qid}?", "reference", f"trace-{qid}", first_seen=100.0
    ).with_event(EventKind.ACCEPTED, 100.0)


def known_envelopes() -> list[Envelope]:
    q1 = new("q1").with_event(G, 101.0, answer="a", latency_ms=1000.0)
    q1 = q1.with_event(S, 101.5, score=0.8, decision="validate").evolve(
        state=QuestionState.VALIDATED, answer="a", score=0.8, llm_calls=1
    )

    q2 = new("q2").with_event(E, 101.0, error_class=ErrorClass.OVERLOAD, latency_ms=500.0)
    q2 = q2.with_event(G, 102.0, answer="b", latency_ms=500.0)
    q2 = q2.with_event(S, 102.2, score=0.3, decision="regenerate").evolve(attempt=2)
    q2 = q2.with_event(G, 103.0, answer="b2", latency_ms=800.0)
    q2 = q2.with_event(S, 103.2, score=0.6, decision="validate").evolve(
        state=QuestionState.VALIDATED, answer="b2", score=0.6, llm_calls=3
    )

    q3 = new("q3").with_event(E, 100.5, error_class=ErrorClass.QUOTA_MINUTE, latency_ms=0.0)
    q3 = q3.with_event(EventKind.PARKED, 100.5, error_class=ErrorClass.QUOTA_MINUTE, wait_s=2.0)
    q3 = q3.with_event(EventKind.RESUMED, 102.5, wait_s=2.0)
    q3 = q3.with_event(G, 103.0, answer="c", latency_ms=500.0)
    q3 = q3.with_event(S, 103.1, score=0.2, decision="regenerate").evolve(attempt=2)
    q3 = q3.with_event(G, 104.0, answer="c2", latency_ms=500.0)
    q3 = q3.with_event(S, 104.1, score=0.1, decision="regenerate").evolve(attempt=3)
    q3 = q3.with_event(G, 105.0, answer="c3", latency_ms=500.0)
    q3 = q3.with_event(S, 105.05, score=0.4, decision="give_up")
    q3 = q3.with_event(EventKind.GAVE_UP, 105.1, detail="score below threshold").evolve(
        state=QuestionState.FAILED, answer="c3", score=0.4, llm_calls=4
    )

    q4 = new("q4").with_event(E, 101.0, error_class=ErrorClass.PERMANENT, latency_ms=10.0)
    q4 = q4.with_event(
        EventKind.GAVE_UP, 101.0, error_class=ErrorClass.PERMANENT, detail="permanent error"
    ).evolve(state=QuestionState.FAILED, llm_calls=1)

    q5 = new("q5").with_event(E, 101.0, error_class=ErrorClass.OVERLOAD, latency_ms=300.0)
    q5 = q5.evolve(state=QuestionState.GENERATING, llm_calls=1)
    return [q1, q2, q3, q4, q5]


def fill(repo: Repository) -> None:
    envelopes = known_envelopes()
    for e in envelopes:
        repo.accept(new(e.question_id))
    repo.apply(envelopes)
    repo.add_hits({"q1": 3})
    repo.record_dead_letters(
        [
            DeadLetter("k3", "gave_up: low score", "qaloop.generated", 105.1, "q3"),
            DeadLetter("k4", "permanent error", "qaloop.questions", 101.0, "q4"),
            DeadLetter(
                "kp", "not JSON: bad", "qaloop.questions", 102.0, None, b"{", replayed=False
            ),
        ]
    )
    repo.mark_replayed(["kp"])


@pytest.fixture
def known_db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'known.db'}"
    repo = open_repository(url)
    try:
        fill(repo)
    finally:
        repo.close()
    return url
