-- Stuck-saga detection (coordinator::reconcile): a non-terminal saga with no timer
-- (wake_at) that is not waiting for a signal has nothing that will move it. The
-- reconciler flags it once (stuck_since, a `stuck_detected` history line) and asks
-- the machine to look at it again by setting wake_at; the next write that gives the
-- saga a timer or a terminal status clears the flag.
ALTER TABLE sagas ADD COLUMN stuck_since timestamptz;

CREATE INDEX sagas_without_timer ON sagas (updated_at)
    WHERE wake_at IS NULL AND status IN ('scheduled', 'running', 'compensating');
CREATE INDEX sagas_stuck ON sagas (stuck_since) WHERE stuck_since IS NOT NULL;
