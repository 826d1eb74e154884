-- The database's floor for waking 100,000 sleeping sagas: the rows a wake-up
-- writes (saga row updated, two history rows, one outbox row inserted and
-- deleted), generated inside Postgres so no client, network or state machine cost
-- is counted. Run from the project root:
--   psql -h 127.0.0.1 -U postgres -f scripts/timer-write-floor.sql
-- It creates and drops its own database, sagaflow_write_floor.
\set ON_ERROR_STOP on
DROP DATABASE IF EXISTS sagaflow_write_floor;
CREATE DATABASE sagaflow_write_floor;
\c sagaflow_write_floor
\i migrations/0001_core.sql
-- 100,000 sleeping sagas with a state of the size bench-timers measures (~490 B/row).
INSERT INTO sagas (id, name, version, status, state, wake_at)
SELECT 't-' || i, 'timer_bench', 1, 'running',
       jsonb_build_object('id', 't-' || i, 'saga', 'timer_bench', 'version', 1,
                          'status', 'running', 'input', '{}'::jsonb, 'cursor', 0,
                          'steps', jsonb_build_array(jsonb_build_object(
                              'status', 'sleeping', 'until', now() + interval '1h',
                              'attempt', 0, 'pad', repeat('x', 150)))),
       now() + interval '1h'
FROM generate_series(0, 99999) i;
VACUUM ANALYZE sagas;
CHECKPOINT;
\timing on
BEGIN;
UPDATE sagas SET status = 'completed', state = jsonb_set(state, '{status}', '"completed"'),
       wake_at = NULL, row_version = row_version + 1, updated_at = now();
INSERT INTO saga_history (saga_id, at, event, step)
SELECT 't-' || i, now(), 'sleep_completed', 'nap' FROM generate_series(0, 99999) i;
INSERT INTO saga_history (saga_id, at, event)
SELECT 't-' || i, now(), 'saga_completed' FROM generate_series(0, 99999) i;
INSERT INTO outbox (exchange, routing_key, body, mandatory, claimed_until)
SELECT 'ns.events', 'saga.timer_bench.completed', convert_to(repeat('y', 110), 'UTF8'),
       false, now() + interval '10 s'
FROM generate_series(0, 99999) i;
DELETE FROM outbox;
COMMIT;
\timing off
\c postgres
DROP DATABASE sagaflow_write_floor;
