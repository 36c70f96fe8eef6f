-- qaloop schema v3: cheaper question-row writes (docs/storage.md, "What a state change costs").
-- A question's row is updated at every state change (~4 per question), and no update can be
-- HOT (the state is indexed), so each one writes every index of the table again.

-- questions_state was written at every state change and read by no query: state_counts()
-- scans the whole table either way (GROUP BY over every row), and stale() uses
-- questions_unfinished (state = 'queued' implies its predicate).
DROP INDEX IF EXISTS questions_state;

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
