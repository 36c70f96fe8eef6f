"""Where a new question's durable copy lives (Settings.accept_durability, docs/distributed.md).

With `wait_for_disk=False` the accept's commit may return before its WAL is on disk: the
replicated publish is the durable copy. That is sound only if (a) the accept behaves the same
otherwise, (b) storage rebuilds a row the accept lost from the pipeline's later messages, and
(c) only the accept's own transaction skips the wait, never the store's writes after it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from qaloop.core.model import QuestionState
from qaloop.storage.base import Repository
from tests.contract.test_storage import (  # noqa: F401  (fixtures)
    PG_DSN,
    PG_SKIP,
    backend,
    generating,
    queued,
    repo,
    scoring,
    validated,
)


def test_accept_without_waiting_for_disk_inserts_like_accept(repo: Repository) -> None:  # noqa: F811
    repo.accept(queued("old", "stored before"))
    results = repo.accept_many(
        [queued("a"), queued("old", "new text"), queued("a", "again")], wait_for_disk=False
    )
    assert [inserted for inserted, _ in results] == [True, False, False]
    assert results[1][1].question == "stored before"
    assert repo.state_counts() == {"queued": 2}


def test_a_lost_accept_row_is_rebuilt_by_the_pipelines_next_write(repo: Repository) -> None:  # noqa: F811
    # The accept's commit was lost in an OS crash; its message was not (replicated Kafka).
    repo.apply([scoring(generating(queued("lost")))])
    assert repo.get("lost") is not None
    repo.apply([validated("lost2")])
    record = repo.get("lost2")
    assert record is not None and record.state is QuestionState.VALIDATED
    assert record.question.startswith("What is lost2?")


@pytest.fixture
def pg_probe() -> Iterator[tuple[Repository, str]]:
    """A PostgreSQL repository whose questions table records, for every row inserted, the
    synchronous_commit of the transaction that inserted it (a trigger: what the server did,
    not what the code says it asked for)."""
    if not PG_DSN:
        pytest.skip(PG_SKIP)
    import psycopg

    from qaloop.storage.postgres import PostgresRepository

    schema = f"qaloop_test_{uuid.uuid4().hex[:16]}"
    repository = PostgresRepository(PG_DSN, schema=schema, write_mode="executemany")
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"SET search_path = {schema}")
        conn.execute("CREATE TABLE commit_probe (question_id TEXT, synchronous_commit TEXT)")
        conn.execute(
            "CREATE FUNCTION probe() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "INSERT INTO commit_probe VALUES (NEW.question_id, "
            "current_setting('synchronous_commit')); RETURN NEW; END $$"
        )
        conn.execute(
            "CREATE TRIGGER probe BEFORE INSERT ON questions FOR EACH ROW EXECUTE FUNCTION probe()"
        )
    try:
        yield repository, schema
    finally:
        repository.close()
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.mark.integration
def test_only_the_accepts_transaction_skips_the_wait_for_disk(
    pg_probe: tuple[Repository, str],
) -> None:
    import psycopg

    repository, schema = pg_probe
    repository.accept_many([queued("durable")])
    repository.accept_many([queued("fast-1"), queued("fast-2")], wait_for_disk=False)
    # the same pooled connections again, for writes that must wait
    repository.accept_many([queued("durable-after")])
    repository.apply([validated("stored-after")])
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"SET search_path = {schema}")
        rows: dict[str, str] = dict(
            conn.execute("SELECT question_id, synchronous_commit FROM commit_probe")
        )
    assert rows == {
        "durable": "on",
        "fast-1": "off",
        "fast-2": "off",
        "durable-after": "on",
        "stored-after": "on",
    }
