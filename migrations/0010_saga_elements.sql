-- The finished elements of `for_each` steps, one row each, written once when the
-- element completes and once more when it is undone: the saga's state keeps only
-- counters and the elements in flight, so an answer costs O(1) however long the
-- array is. `generation` is the saga's generation when the step ran (an operator's
-- `resume_at` re-runs it from no rows); `seq` is the element's place in the saga's
-- completion order (compensation undoes the latest-completed first).
CREATE TABLE saga_elements (
    saga_id    text  NOT NULL,
    step       int4  NOT NULL,
    generation int4  NOT NULL,
    idx        int4  NOT NULL,
    status     text  NOT NULL CHECK (status IN ('completed', 'compensated')),
    seq        int4  NOT NULL,
    output     jsonb NOT NULL,
    PRIMARY KEY (saga_id, step, generation, idx)
);

-- Compensation reads the next completed elements, latest first, a few hundred at a
-- time: this index holds only the ones still to undo.
CREATE INDEX saga_elements_undo ON saga_elements (saga_id, step, generation, seq DESC)
    WHERE status = 'completed';
