"""Repository contract for spend: every priced LLM call is stored once (a replayed envelope
never counts it twice), totals group it for the summary, export returns it row by row.
Same backends as tests/contract/test_storage.py (SQLite always, PostgreSQL with QALOOP_PG_DSN)."""

from __future__ import annotations

import pytest

from qaloop.core.model import Envelope, EventKind, QuestionState, Usage
from qaloop.llm.accounting import summarise
from qaloop.storage.base import Repository
from tests.contract.test_storage import (  # noqa: F401  (fixtures)
    backend,
    generating,
    queued,
    repo,
    retried,
    scored,
)


def _answered(env: Envelope, cost: float, *, estimated: bool = False) -> Envelope:
    at = env.history[-1].at + 1.0
    usage = Usage("generate", "openai", "gpt-4o-mini", 100, 10, 4, estimated, "interactive", cost)
    env = env.evolve(state=QuestionState.SCORING, answer="a", llm_calls=env.llm_calls + 1)
    return env.with_event(EventKind.GENERATED, at, answer="a", usage=usage)


def _judged(env: Envelope, cost: float) -> Envelope:
    usage = Usage("judge", "openai", "gpt-4o-mini", 50, 1, 0, False, "interactive", cost)
    return env.with_event(EventKind.SCORED, env.history[-1].at + 1.0, score=0.9, usage=usage)


def test_usage_is_stored_once_and_summed(repo: Repository) -> None:  # noqa: F811
    env = _answered(generating(queued("u1")), 0.001)
    repo.accept(queued("u1"))
    repo.apply([env])
    env = retried(scored(env, 0.1, QuestionState.SCORING))
    env = _answered(generating(env), 0.003, estimated=True)
    env = _judged(env, 0.0005).evolve(state=QuestionState.VALIDATED, score=0.9)
    repo.apply([env, env])  # a replay in the same batch
    repo.apply([env])  # and a later one
    rows = repo.export_usage()
    assert [(r["question_id"], r["attempt"], r["purpose"]) for r in rows] == [
        ("u1", 1, "generate"),
        ("u1", 2, "generate"),
        ("u1", 2, "judge"),
    ]
    assert rows[1]["estimated"] is True and rows[0]["estimated"] is False
    assert rows[0]["cached_tokens"] == 4 and rows[0]["model"] == "gpt-4o-mini"
    totals = repo.usage_totals()
    assert totals["questions"] == 1
    s = summarise(totals["groups"], questions=totals["questions"], validated=1)
    assert s["calls"] == 3 and s["estimated_calls"] == 1
    assert s["cost_usd"] == pytest.approx(0.0045)
    assert s["per_validated_answer_usd"] == pytest.approx(0.0045)
    assert s["regeneration_share"] == pytest.approx(0.003 / 0.0045, abs=1e-4)
    assert s["judge_share"] == pytest.approx(0.0005 / 0.0045, abs=1e-4)


def test_no_usage_yet(repo: Repository) -> None:  # noqa: F811
    repo.accept(queued("u2"))
    assert repo.export_usage() == []
    assert repo.usage_totals() == {"groups": [], "questions": 0}
