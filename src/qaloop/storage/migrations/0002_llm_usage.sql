-- qaloop schema v2: spend accounting (docs/spend.md). One row per priced LLM call, keyed like
-- events by (question_id, seq), so a replayed envelope never counts a call twice. The same
-- table as qaloop.storage.usage.SQLITE_DDL.

CREATE TABLE llm_usage (
    question_id   TEXT NOT NULL,
    seq           INTEGER NOT NULL,
    attempt       INTEGER NOT NULL,
    at            DOUBLE PRECISION NOT NULL,
    purpose       TEXT NOT NULL,          -- generate | judge
    provider      TEXT NOT NULL,
    model         TEXT NOT NULL,          -- the model that answered
    lane          TEXT NOT NULL,          -- interactive | batch
    input_tokens  INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cached_tokens INTEGER NOT NULL,
    estimated     BOOLEAN NOT NULL,       -- the provider reported no usage: tokens estimated
    cost_usd      DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (question_id, seq)
);

-- budgets and the report read spend by time
CREATE INDEX llm_usage_at ON llm_usage (at);
