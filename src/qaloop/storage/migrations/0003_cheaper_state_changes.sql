-- qaloop schema v3: cheaper question-row writes (docs/storage.md, "What a state change costs").
-- A question's row is updated at every state change (~3 times per question after its accept).
-- An update that changes no indexed column, and finds room on its page, is HOT: no index
-- entries, less WAL. Before this migration none was, since the state is indexed (twice).

-- questions_state was written at every state change and read by no query: state_counts()
-- scans the whole table either way (GROUP BY over every row).
DROP INDEX IF EXISTS questions_state;

-- llm_usage_at, likewise: written for every priced call, read by no query (the totals group
-- the whole table, the export goes by (question_id, seq); budgets keep their own table).
DROP INDEX IF EXISTS llm_usage_at;

-- The unfinished questions, keyed on finished_at instead of the state: it is NULL exactly when
-- the state is not final (storage.sqlite.question_row sets both), and it changes once, at
-- the final state, so the updates in between can be HOT. unfinished() and stale() say both
-- conditions (their results are the same), so the planner uses this index.
DROP INDEX IF EXISTS questions_unfinished;
CREATE INDEX questions_unfinished ON questions (first_seen) WHERE finished_at IS NULL;

-- Room on each page for the next versions of its rows (a HOT update stays on its page);
-- applies to pages written from now on.
ALTER TABLE questions SET (fillfactor = 60);

-- A final row's envelope (~2 KB of JSON) takes the row past the TOAST threshold, so every such
-- update compresses it; lz4 costs a fraction of the default pglz's CPU. Only where the server
-- has lz4 (PostgreSQL >= 14 built --with-lz4); elsewhere the column keeps the default.
DO $$
BEGIN
    EXECUTE 'ALTER TABLE questions ALTER COLUMN envelope SET COMPRESSION lz4';
EXCEPTION WHEN feature_not_supported OR syntax_error THEN
    RAISE NOTICE 'lz4 not available here: questions.envelope keeps the default compression';
END
$$;
