-- qaloop schema v1: the same tables as the SQLite repository (src/qaloop/storage/sqlite.py),
-- with PostgreSQL types. Idempotency keys: questions(question_id), events(question_id, seq),
-- dead_letters(dedup_key). Applied once by PostgresRepository.migrate() and recorded in
-- schema_migrations; never edit an applied file, add 0002_*.sql instead.

CREATE TABLE questions (
    question_id      TEXT PRIMARY KEY,
    question         TEXT NOT NULL,
    reference_answer TEXT,
    state            TEXT NOT NULL,
    attempt          INTEGER NOT NULL,
    -- grows along a question's life (qaloop.core.model.progress_key); an upsert only
    -- overwrites a row with a strictly higher progress, so replays never go backwards
    -- and the first final state (progress 1,000,000) wins
    progress         INTEGER NOT NULL,
    first_seen       DOUBLE PRECISION NOT NULL,
    updated_at       DOUBLE PRECISION NOT NULL,
    finished_at      DOUBLE PRECISION,
    answer           TEXT,
    score            DOUBLE PRECISION,
    llm_calls        INTEGER NOT NULL DEFAULT 0,
    hit_count        BIGINT NOT NULL DEFAULT 0,
    error_class      TEXT,
    error_detail     TEXT,
    trace_id         TEXT NOT NULL DEFAULT '',
    envelope         BYTEA NOT NULL
);

CREATE INDEX questions_state ON questions (state);
-- resume after a restart reads only the unfinished questions
CREATE INDEX questions_unfinished ON questions (first_seen)
    WHERE state NOT IN ('validated', 'failed');

CREATE TABLE events (
    question_id TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    attempt     INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    at          DOUBLE PRECISION NOT NULL,
    answer      TEXT,
    score       DOUBLE PRECISION,
    latency_ms  DOUBLE PRECISION,
    error_class TEXT,
    detail      TEXT,
    decision    TEXT,
    wait_s      DOUBLE PRECISION,
    PRIMARY KEY (question_id, seq)
);

CREATE TABLE dead_letters (
    dedup_key    TEXT PRIMARY KEY,
    reason       TEXT NOT NULL,
    source_topic TEXT NOT NULL,
    at           DOUBLE PRECISION NOT NULL,
    question_id  TEXT,
    raw          BYTEA,
    replayed     BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE INDEX dead_letters_pending ON dead_letters (at) WHERE NOT replayed;
