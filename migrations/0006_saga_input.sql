-- The saga input in a column of its own, written once when the saga is created.
-- Every later write of the row (one per step, per batch) rewrites only `state`,
-- which no longer holds the input: a saga started with a large input (a
-- newsletter's 10,000 recipients) no longer rewrites it on every step, and
-- Postgres keeps the unchanged, TOASTed input column as it is.
--
-- Rows written before this migration keep the input inside `state` and have
-- `input` NULL; readers fall back to `state->'input'`, and the first update of
-- such a row moves the input into the column.
ALTER TABLE sagas ADD COLUMN input jsonb;
