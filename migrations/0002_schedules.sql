-- Cron schedules. A row comes from a definition file (`source = 'file'`, named
-- `<saga>.<schedule>`, written by every coordinator at start) or from an operator
-- (`source = 'api'`, `sagaflow schedule add`).
--
-- The row is the unit of serialisation of its ticks: a scheduler pass locks due rows
-- (FOR UPDATE SKIP LOCKED), creates their sagas and advances next_fire_at in ONE
-- transaction, so each tick is handled once however many coordinators poll. The
-- saga id `<name>@<tick>` is deterministic as a second guard: its insert is
-- ON CONFLICT DO NOTHING.
CREATE TABLE schedules (
    -- Primary key and first half of every saga id it starts.
    name                 text PRIMARY KEY,
    -- The saga each tick starts (the newest loaded version of it).
    saga                 text NOT NULL,
    -- Normalised 6/7-field cron expression (seconds first, optional year), so every
    -- reader parses it the same way.
    cron                 text NOT NULL,
    -- IANA zone in which the expression's wall-clock times are read.
    timezone             text NOT NULL,
    -- Input of every run; an object also gets `scheduled_at` (the tick).
    input                jsonb NOT NULL DEFAULT '{}',
    -- What a tick does while the previous run is still open.
    overlap              text NOT NULL CHECK (overlap IN ('skip', 'buffer_one', 'allow_all')),
    -- After downtime, due ticks older than this are not started, only counted.
    catch_up_window_ms   bigint NOT NULL CHECK (catch_up_window_ms >= 0),
    -- A paused schedule starts nothing; resuming recomputes next_fire_at from then.
    paused               boolean NOT NULL DEFAULT false,
    -- Who owns the row: the file sync rewrites and deletes only 'file' rows.
    source               text NOT NULL CHECK (source IN ('file', 'api')),
    -- The first tick not handled yet (NULL: the expression never fires again). Kept
    -- across restarts, so ticks that fell due during downtime are caught up.
    next_fire_at         timestamptz,
    -- Tick (or manual trigger time) and saga of the last run started: the overlap
    -- policy asks whether that saga is still open; operators see it in `list`.
    last_fire_at         timestamptz,
    last_saga_id         text,
    -- Due ticks older than the catch-up window, not started (a downtime gauge).
    missed_ticks         bigint NOT NULL DEFAULT 0,
    -- Ticks dropped by the overlap policy (`skip`, or a full `buffer_one`).
    skipped_ticks        bigint NOT NULL DEFAULT 0,
    -- buffer_one: the one tick waiting for the open run to end.
    buffered_tick        timestamptz,
    -- `sagaflow schedule trigger`: a run the next pass starts, id `<name>@manual-<this>`.
    -- Stored rather than published so that only the pass starts schedule runs and the
    -- run becomes last_saga_id like any other.
    trigger_requested_at timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);
-- The scheduler pass: due, active rows in tick order.
CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE NOT paused;
-- ... and the few rows waiting for something other than their next tick.
CREATE INDEX schedules_pending ON schedules (name)
    WHERE buffered_tick IS NOT NULL OR trigger_requested_at IS NOT NULL;
