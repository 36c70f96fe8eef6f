"""Repository contract: the same tests against every implementation (storage.base).

SQLite runs always; PostgreSQL runs when QALOOP_PG_DSN is set (CI sets it; locally
`eval "$(scripts/infra env)"`), once per write path (COPY and executemany). Every PostgreSQL test
gets its own freshly created schema, dropped afterwards.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from qaloop.core.model import (
    Envelope,
    ErrorClass,
    EventKind,
    QuestionState,
    progress_key,
)
from qaloop.storage.base import DeadLetter, Repository, Resettable
from qaloop.storage.sqlite import SQLiteRepository

PG_DSN = os.environ.get("QALOOP_PG_DSN", "")
PG_SKIP = (
    "QALOOP_PG_DSN is not set: PostgreSQL contract tests need a server "
    '(run `scripts/infra up` and `eval "$(scripts/infra env)"`)'
)
T0 = 1_700_000_000.0


@dataclass
class Backend:
    """Opens repositories on one fresh store (several may be open at once)."""

    name: str
    opener: Callable[[], Repository]
    opened: list[Repository] = field(default_factory=list)

    def open(self) -> Repository:
        repo = self.opener()
        self.opened.append(repo)
        return repo


def _pg_backend(write_mode: str) -> Iterator[Backend]:
    if not PG_DSN:
        pytest.skip(PG_SKIP)
    import psycopg

    from qaloop.storage.postgres import PostgresRepository

    schema = f"qaloop_test_{uuid.uuid4().hex[:16]}"
    backend = Backend(
        f"postgres-{write_mode}",
        lambda: PostgresRepository(PG_DSN, schema=schema, write_mode=write_mode),  # type: ignore[arg-type]
    )
    try:
        yield backend
    finally:
        for repo in backend.opened:
            repo.close()
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres-unnest", marks=pytest.mark.integration),
        pytest.param("postgres-executemany", marks=pytest.mark.integration),
    ]
)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        sqlite = Backend("sqlite", lambda: SQLiteRepository(str(tmp_path / "qaloop.db")))
        yield sqlite
        for repo in sqlite.opened:
            repo.close()
    else:
        yield from _pg_backend(request.param.removeprefix("postgres-"))


@pytest.fixture
def repo(backend: Backend) -> Repository:
    return backend.open()


# -- envelopes along a question's life ---------------------------------------------------------


def queued(qid: str, question: str | None = None, at: float = T0) -> Envelope:
    env = Envelope(
        question_id=qid,
        question=question if question is not None else f"What is {qid}? " + "x" * 200,
        reference_answer=f"The reference answer for {qid}.",
        trace_id=f"trace-{qid}",
        first_seen=at,
    )
    return env.with_event(EventKind.ACCEPTED, at)


def generating(env: Envelope) -> Envelope:
    return env.evolve(state=QuestionState.GENERATING, tries_in_attempt=1)


def scoring(env: Envelope, answer: str = "an answer") -> Envelope:
    at = env.history[-1].at + 1.0
    env = env.evolve(state=QuestionState.SCORING, answer=answer, llm_calls=env.llm_calls + 1)
    return env.with_event(EventKind.GENERATED, at, answer=answer, latency_ms=12.5)


def scored(env: Envelope, score: float, state: QuestionState) -> Envelope:
    at = env.history[-1].at + 1.0
    decision = {QuestionState.VALIDATED: "validated", QuestionState.FAILED: "gave_up"}.get(
        state, "retry"
    )
    env = env.evolve(state=state, score=score)
    return env.with_event(EventKind.SCORED, at, score=score, decision=decision)


def retried(env: Envelope) -> Envelope:
    """Back to the questions topic for another attempt (low score)."""
    return env.evolve(state=QuestionState.QUEUED, attempt=env.attempt + 1, answer=None, score=None)


def validated(qid: str, score: float = 0.9) -> Envelope:
    return scored(scoring(generating(queued(qid))), score, QuestionState.VALIDATED)


def failed(qid: str) -> Envelope:
    env = scored(scoring(generating(queued(qid))), 0.1, QuestionState.SCORING)
    env = env.evolve(
        state=QuestionState.FAILED, error_class=ErrorClass.BUDGET, error_detail="no attempts left"
    )
    return env.with_event(EventKind.GAVE_UP, env.history[-1].at + 1.0)


# -- accept ------------------------------------------------------------------------------------


def test_accept_inserts_once_and_returns_the_existing_row(repo: Repository) -> None:
    first = queued("q1", "Why is the sky blue?")
    inserted, record = repo.accept(first)
    assert inserted is True
    assert record.question_id == "q1"
    assert record.question == "Why is the sky blue?"
    assert record.state is QuestionState.QUEUED
    assert record.attempt == 1
    assert record.first_seen == T0
    assert record.hit_count == 0
    assert record.trace_id == "trace-q1"
    assert record.reference_answer == "The reference answer for q1."
    assert record.answer is None and record.score is None and record.finished_at is None

    again, existing = repo.accept(queued("q1", "a different text", at=T0 + 5))
    assert again is False
    assert existing.question == "Why is the sky blue?"
    assert existing.first_seen == T0
    assert [e.kind for e in repo.events("q1")] == [EventKind.ACCEPTED]
    assert repo.state_counts() == {"queued": 1}


def test_accept_many_is_accept_for_each_in_order(repo: Repository) -> None:
    repo.accept(queued("old", "stored before"))
    a, b = queued("a", "first a"), queued("b")
    a_again = queued("a", "second a")
    results = repo.accept_many([a, b, a_again, queued("old", "new text"), a])
    assert [inserted for inserted, _ in results] == [True, True, False, False, False]
    assert [record.question_id for _, record in results] == ["a", "b", "a", "old", "a"]
    assert results[2][1].question == "first a"
    assert results[3][1].question == "stored before"
    assert [e.seq for e in repo.events("a")] == [0]
    assert repo.accept_many([]) == []
    assert repo.state_counts() == {"queued": 3}


def test_stale_finds_accepted_questions_that_never_moved(repo: Repository) -> None:
    q1, q2 = queued("q1"), queued("q2")
    repo.accept_many([q1, q2, queued("q3"), queued("q4")])
    repo.apply([scoring(generating(queued("q3")))])  # moved on
    repo.apply([retried(scored(scoring(generating(queued("q4"))), 0.1, QuestionState.SCORING))])
    assert repo.stale(3600) == []  # nothing is an hour old
    stale = repo.stale(-60)  # everything updated before a minute from now
    assert {e.question_id for e in stale} == {"q1", "q2"}  # q4 is queued, but has a history
    assert stale[0] in (q1, q2)
    assert len(repo.stale(-60, limit=1)) == 1


def test_get_unknown_question_is_none(repo: Repository) -> None:
    assert repo.get("nope") is None
    assert repo.events("nope") == []


def test_accept_does_not_overwrite_a_question_that_moved_on(repo: Repository) -> None:
    repo.apply([validated("q1")])
    inserted, record = repo.accept(queued("q1"))
    assert inserted is False
    assert record.state is QuestionState.VALIDATED


# -- apply ---------------------------------------------------------------------------------------


def test_apply_keeps_the_highest_progress(repo: Repository) -> None:
    q = queued("q1")
    repo.accept(q)
    repo.apply([scoring(generating(q))])
    repo.apply([q])  # an older state replayed
    repo.apply([generating(q)])
    record = repo.get("q1")
    assert record is not None
    assert record.state is QuestionState.SCORING
    assert record.answer == "an answer"
    assert record.llm_calls == 1

    second = retried(scored(scoring(generating(q)), 0.2, QuestionState.SCORING))
    repo.apply([second])  # attempt 2 queued outranks attempt 1 scoring
    record = repo.get("q1")
    assert record is not None
    assert (record.state, record.attempt) == (QuestionState.QUEUED, 2)
    assert record.answer is None


def test_first_final_state_wins(repo: Repository) -> None:
    good = validated("q1", 0.8)
    repo.apply([good])
    repo.apply([failed("q1")])  # a later final state doesn't overwrite
    repo.apply([scoring(generating(queued("q1")))])  # nor does an older one
    record = repo.get("q1")
    assert record is not None
    assert record.state is QuestionState.VALIDATED
    assert record.score == 0.8
    assert record.finished_at == good.history[-1].at
    assert record.finished_at is not None and record.finished_at - record.first_seen == 2.0
    assert record.error_class is None


def test_reset_failed_starts_a_new_run_that_old_messages_cannot_overwrite(
    repo: Repository,
) -> None:
    assert isinstance(repo, Resettable)
    old = failed("q1")
    repo.apply([old])
    assert repo.reset_failed("q2", at=T0, trace_id="t", reference_answer=None, by="x") is None
    new = repo.reset_failed(
        "q1", at=T0 + 100, trace_id="trace-new", reference_answer="new ref", by="admin"
    )
    assert new is not None and new.attempt == 1 and new.history[-1].kind is EventKind.RESET
    record = repo.get("q1")
    assert record is not None and record.state is QuestionState.QUEUED
    assert (record.trace_id, record.reference_answer, record.answer) == (
        "trace-new",
        "new ref",
        None,
    )
    assert record.first_seen == T0 + 100
    repo.apply([old])  # a late copy of the old run's final: higher progress, old trace id
    assert repo.get("q1").state is QuestionState.QUEUED  # type: ignore[union-attr]
    assert repo.reset_failed("q1", at=T0, trace_id="t", reference_answer=None, by="x") is None
    done = scored(scoring(generating(new)), 0.9, QuestionState.VALIDATED)
    repo.apply([done])  # the new run goes forward as usual
    record = repo.get("q1")
    assert record is not None and record.state is QuestionState.VALIDATED
    kinds = [e.kind for e in repo.events("q1")]
    assert kinds.count(EventKind.RESET) == 1 and kinds.count(EventKind.GENERATED) == 2
    assert [e.seq for e in repo.events("q1")] == list(range(len(kinds)))


def test_one_batch_with_the_same_question_several_times(repo: Repository) -> None:
    q = queued("q1")
    s = scoring(generating(q))
    v = scored(s, 0.7, QuestionState.VALIDATED)
    f = failed("q1")
    # the same question several times in one batch, in every order: highest progress wins,
    # the first of two final states wins (as if the batch were applied row by row)
    repo.apply([q, v, s, generating(q), f, q])
    repo.apply([queued("q2"), failed("q2"), validated("q2")])
    repo.apply([generating(queued("q3")), queued("q3")])
    r1, r2, r3 = repo.get("q1"), repo.get("q2"), repo.get("q3")
    assert r1 is not None and r2 is not None and r3 is not None
    assert (r1.state, r1.score) == (QuestionState.VALIDATED, 0.7)
    assert (r2.state, r2.error_class) == (QuestionState.FAILED, ErrorClass.BUDGET)
    assert r3.state is QuestionState.GENERATING
    assert [e.seq for e in repo.events("q1")] == [0, 1, 2, 3]  # (question, seq) keys


def test_apply_an_empty_batch_is_a_no_op(repo: Repository) -> None:
    repo.apply([])
    assert repo.state_counts() == {}


def test_apply_without_accept_inserts_the_row(repo: Repository) -> None:
    repo.apply([validated("q9")])
    record = repo.get("q9")
    assert record is not None and record.state is QuestionState.VALIDATED


def test_events_are_not_duplicated_on_replay(repo: Repository) -> None:
    v = validated("q1")
    repo.accept(queued("q1"))
    for _ in range(3):
        repo.apply([v, v])
    repo.apply([scoring(generating(queued("q1")))])
    events = repo.events("q1")
    assert [e.seq for e in events] == [0, 1, 2]
    assert [e.kind for e in events] == [EventKind.ACCEPTED, EventKind.GENERATED, EventKind.SCORED]
    assert events == list(v.history)
    assert len(repo.export_events()) == 3


def test_hits_are_additive(repo: Repository) -> None:
    repo.accept(queued("a"))
    repo.accept(queued("b"))
    repo.add_hits({"a": 2})
    repo.add_hits({"a": 3, "b": 1, "unknown": 7})
    repo.add_hits({})
    repo.apply([validated("a")])  # a projection doesn't reset the count
    repo.accept(queued("a"))
    a, b = repo.get("a"), repo.get("b")
    assert a is not None and b is not None
    assert (a.hit_count, b.hit_count) == (5, 1)
    assert repo.get("unknown") is None


def test_unfinished_returns_exactly_the_non_final_questions(repo: Repository) -> None:
    q1 = queued("q1")
    q2 = scoring(generating(queued("q2")))
    q3 = retried(scored(scoring(generating(queued("q3"))), 0.1, QuestionState.SCORING))
    repo.accept(q1)
    repo.apply([q2, q3, validated("v1"), failed("f1")])
    repo.accept(queued("v1"))
    unfinished = {e.question_id: e for e in repo.unfinished()}
    assert set(unfinished) == {"q1", "q2", "q3"}
    # the last envelope comes back whole, so a restart resumes where it was
    assert unfinished["q1"] == q1
    assert unfinished["q2"] == q2
    assert unfinished["q3"] == q3
    repo.apply([validated("q1"), failed("q2"), validated("q3")])
    assert repo.unfinished() == []


def test_state_counts(repo: Repository) -> None:
    assert repo.state_counts() == {}
    repo.accept(queued("q1"))
    repo.apply([generating(queued("g1")), validated("v1"), validated("v2"), failed("f1")])
    assert repo.state_counts() == {"queued": 1, "generating": 1, "validated": 2, "failed": 1}


def test_export_questions_and_events(repo: Repository) -> None:
    v = validated("v1", 0.75)
    repo.accept(queued("q1"))
    repo.apply([v, failed("f1")])
    repo.add_hits({"v1": 4})
    rows = {row["question_id"]: row for row in repo.export_questions()}
    assert set(rows) == {"q1", "v1", "f1"}
    row = rows["v1"]
    assert set(row) == {
        "question_id", "question", "reference_answer", "state", "attempt", "first_seen",
        "updated_at", "answer", "score", "llm_calls", "hit_count", "finished_at",
        "error_class", "error_detail", "trace_id",
    }  # fmt: skip
    assert row["state"] == "validated"
    assert row["score"] == 0.75
    assert row["answer"] == "an answer"
    assert row["hit_count"] == 4
    assert row["llm_calls"] == 1
    assert row["finished_at"] == v.history[-1].at
    assert rows["f1"]["error_class"] == "budget"
    assert rows["f1"]["error_detail"] == "no attempts left"
    assert rows["q1"]["state"] == "queued"

    events = repo.export_events()
    keys = [(e["question_id"], e["seq"]) for e in events]
    assert keys == sorted(keys)
    assert len(events) == 1 + 3 + 4
    scored_v1 = next(e for e in events if e["question_id"] == "v1" and e["kind"] == "scored")
    assert scored_v1 == {
        "question_id": "v1", "seq": 2, "kind": "scored", "attempt": 1,
        "at": T0 + 2.0, "score": 0.75, "decision": "validated",
    }  # fmt: skip


def test_text_round_trips_including_unicode(repo: Repository) -> None:
    text = "¿Por qué el cielo es azul? 空はなぜ青い 🌤 — \"quotes\" 'and' \\ backslash\ttab\nline"
    repo.accept(queued("u1", text))
    record = repo.get("u1")
    assert record is not None and record.question == text
    assert repo.unfinished()[0].question == text


def test_nul_characters_do_not_break_a_batch(repo: Repository) -> None:
    # PostgreSQL TEXT can't hold NUL: it may store U+FFFD instead, but the batch goes through
    weird = queued("n1", "nul \x00 inside")
    repo.accept(weird)
    answered = scoring(generating(weird), answer="answer \x00 too")
    answered = answered.with_event(
        EventKind.LLM_ERROR, T0 + 5, detail="detail \x00", decision="decision \x00"
    )
    repo.apply([answered, validated("ok")])
    repo.accept_many([queued("n2", "\x00"), queued("n3")])
    assert {e.kind for e in repo.events("n1")} >= {EventKind.LLM_ERROR}
    record = repo.get("n1")
    assert record is not None and record.answer is not None
    assert record.question.replace("\ufffd", "\x00") == "nul \x00 inside"
    assert record.answer.replace("\ufffd", "\x00") == "answer \x00 too"
    assert repo.unfinished()[0].question == "nul \x00 inside"  # the envelope is exact
    assert repo.get("ok") is not None


# -- dead letters ----------------------------------------------------------------------------


def test_dead_letters_dedup_and_mark_replayed(repo: Repository) -> None:
    raw = b'{"not": "an envelope"}\x00\xff'
    repo.record_dead_letters(
        [
            DeadLetter("k1", "not JSON", "questions", T0 + 1, None, raw),
            DeadLetter("k2", "permanent", "generated", T0 + 2, "q2", b"{}"),
            DeadLetter("k1", "a second copy", "questions", T0 + 3, None, b"other"),
        ]
    )
    repo.record_dead_letters([DeadLetter("k2", "replayed copy", "generated", T0 + 4, "q2")])
    repo.record_dead_letters([DeadLetter("k3", "budget", "validated", T0 + 0.5, "q3", None)])
    repo.record_dead_letters([])
    letters = repo.dead_letters()
    assert [d.dedup_key for d in letters] == ["k3", "k1", "k2"]  # oldest first
    k3, k1, k2 = letters
    assert k1 == DeadLetter("k1", "not JSON", "questions", T0 + 1, None, raw, False)
    assert k2.reason == "permanent" and k2.question_id == "q2" and k2.raw == b"{}"
    assert k3.raw is None
    assert [d.dedup_key for d in repo.dead_letters(limit=2)] == ["k3", "k1"]

    repo.mark_replayed(["k1", "k3", "unknown"])
    repo.mark_replayed([])
    assert [d.dedup_key for d in repo.dead_letters()] == ["k2"]
    everything = repo.dead_letters(include_replayed=True)
    assert [(d.dedup_key, d.replayed) for d in everything] == [
        ("k3", True),
        ("k1", True),
        ("k2", False),
    ]
    # a replayed letter recorded again stays one row, still replayed
    repo.record_dead_letters([DeadLetter("k1", "again", "questions", T0 + 9)])
    assert len(repo.dead_letters(include_replayed=True)) == 3
    assert [d.dedup_key for d in repo.dead_letters()] == ["k2"]


def test_dead_letters_by_key(repo: Repository) -> None:
    repo.record_dead_letters(
        [
            DeadLetter("b", "permanent", "generated", T0 + 2, "q2", b"{}"),
            DeadLetter("a", "not JSON", "questions", T0 + 1, None, b"\xff"),
            DeadLetter("c", "budget", "validated", T0 + 3, "q3", None),
        ]
    )
    repo.mark_replayed(["a"])
    found = repo.dead_letters_by_key(["c", "a", "nope", "a"])
    assert [(d.dedup_key, d.replayed) for d in found] == [("a", True), ("c", False)]  # oldest first
    assert found[0] == DeadLetter("a", "not JSON", "questions", T0 + 1, None, b"\xff", True)
    assert repo.dead_letters_by_key([]) == [] and repo.dead_letters_by_key(["nope"]) == []
    many = [DeadLetter(f"m{i}", "r", "questions", T0 + 10 + i) for i in range(1200)]
    repo.record_dead_letters(many)
    assert len(repo.dead_letters_by_key([d.dedup_key for d in many])) == 1200


# -- lifecycle and concurrency -------------------------------------------------------------


def test_migrate_is_idempotent_and_data_survives_reopen(backend: Backend) -> None:
    repo = backend.open()
    repo.apply([validated("v1")])
    repo.migrate()
    repo.migrate()
    other = backend.open()
    record = other.get("v1")
    assert record is not None and record.state is QuestionState.VALIDATED


def test_concurrent_starts_migrate_once(backend: Backend) -> None:
    errors: list[BaseException] = []
    repos: list[Repository] = []
    lock = threading.Lock()
    barrier = threading.Barrier(4)

    def start() -> None:
        try:
            barrier.wait()
            opened = backend.open()
            with lock:
                repos.append(opened)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(repos) == 4
    repos[0].apply([validated("v1")])
    assert all(r.state_counts() == {"validated": 1} for r in repos)
    applied = getattr(repos[0], "applied_migrations", None)
    if applied is not None:  # PostgreSQL records its migrations
        assert applied() == sorted(set(applied()))


def _lifecycle(qid: str) -> list[Envelope]:
    q = queued(qid)
    g = generating(q)
    s = scoring(g)
    low = scored(s, 0.2, QuestionState.SCORING)
    q2 = retried(low)
    s2 = scoring(generating(q2), answer="a better answer")
    return [q, g, s, low, q2, s2, scored(s2, 0.9, QuestionState.VALIDATED)]


def test_concurrent_overlapping_batches_leave_no_duplicates(backend: Backend) -> None:
    ids = [f"q{i:03d}" for i in range(120)]
    lives = {qid: _lifecycle(qid) for qid in ids}
    writers = [backend.open(), backend.open()]
    errors: list[BaseException] = []
    accepted: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(2)

    def writer(repo: Repository, forward: bool) -> None:
        try:
            barrier.wait()
            order = ids if forward else ids[::-1]
            for step in range(7):
                stage = step if forward else 6 - step
                # overlapping batches of 40, every question in both threads
                for start in range(0, len(order), 40):
                    chunk = order[start : start + 40]
                    results = repo.accept_many([lives[qid][0] for qid in chunk])
                    with lock:
                        accepted.extend(r.question_id for new, r in results if new)
                    repo.apply([lives[qid][stage] for qid in chunk])
                    repo.add_hits({qid: 1 for qid in chunk})
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=writer, args=(writers[0], True)),
        threading.Thread(target=writer, args=(writers[1], False)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert sorted(accepted) == ids  # each question inserted by exactly one accept
    reader = writers[0]
    questions = reader.export_questions()
    assert len(questions) == len(ids)
    assert {q["question_id"] for q in questions} == set(ids)
    final = lives[ids[0]][-1]
    for row in questions:
        assert row["state"] == "validated"
        assert row["attempt"] == 2
        assert row["answer"] == "a better answer"
        assert row["hit_count"] == 2 * 7
    events = reader.export_events()
    keys = [(e["question_id"], e["seq"]) for e in events]
    assert len(keys) == len(set(keys)) == len(ids) * len(final.history)
    assert reader.state_counts() == {"validated": len(ids)}
    assert reader.unfinished() == []


def test_hit_counts_and_batch_upserts_of_the_same_rows_do_not_deadlock(backend: Backend) -> None:
    """Hit-count flushes (gateway) and batch upserts (store) touch the same rows at once; both
    must lock them in one order. Updated rows move in the heap, so a statement that locks in
    heap order soon disagrees with one that locks in id order."""
    ids = [f"h{i:03d}" for i in range(150)]
    lives = {qid: _lifecycle(qid) for qid in ids}
    setup = backend.open()
    setup.accept_many([lives[qid][0] for qid in ids])
    repos = [backend.open(), backend.open()]
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)
    rounds = 30

    def hits(repo: Repository) -> None:
        try:
            barrier.wait()
            for _ in range(rounds):
                repo.add_hits({qid: 1 for qid in ids})
        except BaseException as exc:
            errors.append(exc)

    def upserts(repo: Repository) -> None:
        try:
            barrier.wait()
            for r in range(rounds):
                # the same envelopes again and again: each upsert is a no-op update target
                repo.apply([lives[qid][1 + r % 5] for qid in ids])
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=hits, args=(repos[0],)),
        threading.Thread(target=upserts, args=(repos[1],)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert {q["hit_count"] for q in setup.export_questions()} == {rounds}


def test_progress_key_orders_a_life() -> None:
    """The envelopes the tests use really move forward (guards the fixtures above)."""
    keys = [progress_key(e.state, e.attempt) for e in _lifecycle("x")]
    assert keys == sorted(keys)
    assert keys[-1] > keys[-2]


def test_an_unreachable_postgres_fails_fast_without_showing_the_password() -> None:
    pytest.importorskip("psycopg_pool")
    from qaloop.storage.postgres import PostgresRepository

    with pytest.raises(ConnectionError) as info:
        PostgresRepository("postgresql://qaloop:s3cret@127.0.0.1:1/qaloop", connect_timeout=0.5)
    assert "127.0.0.1:1/qaloop" in str(info.value)
    assert "s3cret" not in str(info.value)


def test_postgres_writes_are_retried_after_a_deadlock_abort_but_not_forever() -> None:
    pytest.importorskip("psycopg_pool")
    import psycopg

    from qaloop.storage.postgres import _retry_transient

    calls: list[int] = []

    @_retry_transient
    def flaky(fail_times: int) -> str:
        calls.append(1)
        if len(calls) <= fail_times:
            raise psycopg.errors.DeadlockDetected("deadlock detected")
        return "written"

    assert flaky(2) == "written" and len(calls) == 3
    calls.clear()
    with pytest.raises(psycopg.errors.DeadlockDetected):
        flaky(3)
    assert len(calls) == 3
    calls.clear()

    @_retry_transient
    def broken() -> None:  # anything else is not retried: it may have been committed
        calls.append(1)
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    with pytest.raises(psycopg.OperationalError):
        broken()
    assert len(calls) == 1
