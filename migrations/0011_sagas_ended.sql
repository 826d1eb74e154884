-- The retention purge takes the oldest ended sagas first (`ORDER BY updated_at
-- LIMIT n`). The (status, updated_at) index cannot give that order across the four
-- terminal statuses, so each batch read and sorted every ended saga: 108 ms per
-- batch at 105,000 of them, growing with the table. This index gives the order
-- directly (0.4 ms). The status list must stay the literal one in
-- src/store/purge.rs (the planner matches the two; a unit test checks it).
--
-- Not CONCURRENTLY: migrations run while replicas wait on the schema lock, and a
-- concurrent build waits for their transactions (a deadlock). Building it blocks
-- writes to `sagas` for as long as it takes; on a large table, create it by hand
-- first with the same statement and CONCURRENTLY (docs/operations.md, "Upgrading sagaflow itself"),
-- and this migration then finds it.
CREATE INDEX IF NOT EXISTS sagas_ended ON sagas (updated_at)
    WHERE status IN ('completed', 'compensated', 'failed', 'cancelled');
