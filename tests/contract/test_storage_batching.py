"""Repository contract for the cheaper batch writes (docs/storage.md, "What a state change
costs"): each repository sends a question's history events (and usage rows) only from the first
one it has not committed, and may store an envelope's bytes as received. Neither may change
what is stored: a replay, by the same repository or a fresh one, duplicates nothing, and a
batch that fails commits nothing and forgets nothing. Same backends as test_storage.py."""

from __future__ import annotations

from typing import Any

import pytest

from qaloop.core import codec
from qaloop.core.model import Envelope, EventKind, QuestionState, Usage
from qaloop.storage.base import Repository, WrittenHistory
from tests.contract.test_storage import (  # noqa: F401  (fixtures)
    Backend,
    backend,
    generating,
    queued,
    repo,
    retried,
    scored,
    scoring,
)


def _priced(env: Envelope, cost: float) -> Envelope:
    usage = Usage("generate", "openai", "gpt-4o-mini", 100, 10, 0, False, "interactive", cost)
    env = env.evolve(state=QuestionState.SCORING, answer="a", llm_calls=env.llm_calls + 1)
    return env.with_event(EventKind.GENERATED, env.history[-1].at + 1.0, answer="a", usage=usage)


def _life(qid: str) -> list[Envelope]:
    """Every envelope one question sends the store: queued, answered, rejected, queued again,
    answered again, validated (6 events at the end)."""
    q = queued(qid)
    first = _priced(generating(q), 0.001)
    again = retried(scored(first, 0.1, QuestionState.SCORING))
    second = _priced(generating(again), 0.002)
    final = scored(second, 0.9, QuestionState.VALIDATED)
    return [q, first, again, second, final]


def _snapshot(r: Repository) -> tuple[Any, ...]:
    return r.export_questions(), r.export_events(), r.export_usage()


def test_a_life_applied_one_state_per_batch_stores_every_event_once(
    repo: Repository,  # noqa: F811
) -> None:
    life = _life("b1")
    repo.accept(life[0])
    for env in life:
        repo.apply([env])
    assert [e.seq for e in repo.events("b1")] == list(range(len(life[-1].history)))
    assert [e.kind for e in repo.events("b1")] == [e.kind for e in life[-1].history]
    assert [(u["seq"], u["cost_usd"]) for u in repo.export_usage()] == [(1, 0.001), (3, 0.002)]
    record = repo.get("b1")
    assert record is not None and record.state is QuestionState.VALIDATED
    assert record.attempt == 2


def test_a_replay_by_the_same_or_a_fresh_repository_duplicates_nothing(
    backend: Backend,  # noqa: F811
) -> None:
    live = backend.open()
    lives = {qid: _life(qid) for qid in ("r1", "r2", "r3")}
    for step in range(5):  # the three questions move together, a batch per step
        live.apply([life[step] for life in lives.values()])
    before = _snapshot(live)
    everything = [env for life in lives.values() for env in life]
    live.apply(everything)  # redelivered in one batch: the events are known, not re-sent
    for env in reversed(everything):  # and one by one, newest first
        live.apply([env])
    assert _snapshot(live) == before
    fresh = backend.open()  # a restarted store: knows nothing, sends every event again
    fresh.apply(everything)
    for env in everything:
        fresh.apply([env])
    assert _snapshot(fresh) == before


def test_a_failed_batch_commits_nothing_and_forgets_nothing(
    backend: Backend,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    r = backend.open()
    life = _life("f1")
    r.apply([life[1]])  # events 0-1 committed
    _fail_the_next_commit(r, monkeypatch)
    with pytest.raises(RuntimeError, match="injected"):
        r.apply([life[3]])  # events 2-3 rolled back: they must be sent again
    assert [e.seq for e in r.events("f1")] == [0, 1]
    monkeypatch.undo()
    r.apply([life[4]])
    assert [e.seq for e in r.events("f1")] == [0, 1, 2, 3, 4]
    assert [u["seq"] for u in r.export_usage()] == [1, 3]
    record = r.get("f1")
    assert record is not None and record.state is QuestionState.VALIDATED


def _fail_the_next_commit(r: Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `apply` fail after writing all its rows, inside its transaction."""
    if backend_is_sqlite(r):
        real = r._conn  # type: ignore[attr-defined]

        class FailingCommit:
            def __getattr__(self, name: str) -> Any:
                return getattr(real, name)

            def execute(self, statement: str, *args: Any) -> Any:
                if statement == "COMMIT":
                    raise RuntimeError("injected failure before COMMIT")
                return real.execute(statement, *args)

        monkeypatch.setattr(r, "_conn", FailingCommit())
        return
    from qaloop.storage import postgres

    for name in ("_apply_unnest", "_apply_executemany"):
        written = getattr(postgres.PostgresRepository, name)

        def failing(conn: Any, *rows: Any, _written: Any = written) -> None:
            _written(conn, *rows)
            raise RuntimeError("injected failure before COMMIT")

        monkeypatch.setattr(postgres.PostgresRepository, name, staticmethod(failing))


def backend_is_sqlite(r: Repository) -> bool:
    from qaloop.storage.sqlite import SQLiteRepository

    return isinstance(r, SQLiteRepository)


def test_the_envelope_is_stored_as_received(repo: Repository) -> None:  # noqa: F811
    env = scoring(generating(queued("e1")))
    received = codec.encode(env).replace(b'"state":', b'"state" :', 1)  # not what encode writes
    assert codec.decode(received) == env
    repo.apply([env, queued("e2")], [received, None])
    assert _stored_envelope(repo, "e1") == received
    assert _stored_envelope(repo, "e2") == codec.encode(queued("e2"))  # None: encoded here
    resumed = {e.question_id: e for e in repo.unfinished()}
    assert resumed["e1"] == env and resumed["e2"] == queued("e2")
    with pytest.raises(ValueError, match="1 encoded envelopes for 2"):
        repo.apply([env, env], [received])


def test_received_bytes_with_nul_characters_do_not_break_a_batch(
    repo: Repository,  # noqa: F811
) -> None:
    env = scoring(generating(queued("n1", "nul \x00 inside")), answer="answer \x00 too")
    repo.apply([env], [codec.encode(env)])
    record = repo.get("n1")
    assert record is not None and record.answer is not None
    assert record.answer.replace("\ufffd", "\x00") == "answer \x00 too"
    assert repo.unfinished()[0].question == "nul \x00 inside"  # the envelope is exact


def _stored_envelope(r: Repository, qid: str) -> bytes:
    query = "SELECT envelope FROM questions WHERE question_id = "
    if backend_is_sqlite(r):
        return bytes(r._conn.execute(query + "?", (qid,)).fetchone()[0])  # type: ignore[attr-defined]
    with r._tx() as conn:  # type: ignore[attr-defined]
        return bytes(conn.execute(query + "%s", (qid,)).fetchone()[0])


def test_written_history_only_rises_and_is_bounded() -> None:
    marks = WrittenHistory(capacity=2)
    a, b, c = queued("a"), scoring(generating(queued("b"))), queued("c")
    marks.committed([a, b])
    assert (marks.mark("a"), marks.mark("b")) == (1, 2)
    marks.committed([queued("b")])  # an older envelope never lowers a mark
    assert marks.mark("b") == 2
    marks.committed([c])  # over capacity: the least recently raised ("a") goes
    assert (marks.mark("a"), marks.mark("b"), marks.mark("c")) == (0, 2, 1)


async def test_the_store_stores_a_batch_around_a_poison_message_once(
    repo: Repository,  # noqa: F811
) -> None:
    from qaloop.bus.base import Message, Topics
    from qaloop.services.store import Store

    topics = Topics()
    store = Store(repo, topics)
    life = _life("s1")
    topic_of = [topics.questions, topics.generated, topics.questions, topics.generated]
    batch = [
        Message(topic, 0, i, "s1", codec.encode(env), {})
        for i, (topic, env) in enumerate(zip(topic_of, life, strict=False))
    ]
    batch.insert(2, Message(topics.validated, 0, 9, "bad", b'{"not": "an envelope"}', {}))
    batch.append(Message(topics.validated, 0, 10, "s1", codec.encode(life[-1]), {}))
    outputs = await store.handle_batch(batch)
    assert [(o.topic, o.headers["qaloop-source-offset"]) for o in outputs] == [
        (topics.dead_letter, "9")
    ]
    before = _snapshot(repo)
    assert [e["seq"] for e in before[1]] == [0, 1, 2, 3, 4]
    assert [q["state"] for q in before[0]] == ["validated"]
    assert _stored_envelope(repo, "s1") == batch[-1].value  # the bytes received
    await store.handle_batch(batch)  # redelivered after a crash before the commit
    assert _snapshot(repo) == before
