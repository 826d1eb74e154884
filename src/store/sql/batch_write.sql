-- One coordinator batch's writes (src/store/batch.rs). Every sub-statement sees the
-- same snapshot; they talk through RETURNING only: `kept` is the sagas this batch
-- created or changed, and only their history, counters and outbox rows are written.
WITH created AS (
    INSERT INTO sagas (id, name, version, status, state, wake_at, input)
    SELECT n.id, n.name, n.version, n.status, n.state::jsonb, n.wake_at, n.input::jsonb
    FROM UNNEST($1::text[], $2::text[], $3::int4[], $4::text[], $5::text[], $6::timestamptz[], $7::text[])
         AS n(id, name, version, status, state, wake_at, input)
    ORDER BY 1
    ON CONFLICT (id) DO NOTHING
    RETURNING id, created_at
), changed AS (
    UPDATE sagas s SET status = u.status, state = u.state::jsonb, wake_at = u.wake_at,
           row_version = s.row_version + 1, updated_at = now(),
           -- The input is written once, at insert; a row from before the input
           -- column moves it there now (u.state no longer holds it).
           input = COALESCE(s.input, s.state->'input'),
           -- A saga flagged stuck is repaired once it has a timer or has ended.
           stuck_since = CASE WHEN u.wake_at IS NOT NULL
               OR u.status NOT IN ('scheduled', 'running', 'compensating')
               THEN NULL ELSE s.stuck_since END
    FROM UNNEST($8::text[], $9::text[], $10::text[], $11::timestamptz[], $12::int8[], $31::timestamptz[])
         AS u(id, status, state, wake_at, expected, created)
    WHERE s.id = u.id AND s.row_version = u.expected AND s.created_at = u.created
    RETURNING s.id
), kept AS (
    SELECT id FROM created UNION ALL SELECT id FROM changed
), history AS (
    INSERT INTO saga_history (saga_id, at, event, step, attempt, detail)
    SELECT h.* FROM UNNEST($13::text[], $14::timestamptz[], $15::text[], $16::text[], $17::int4[], $18::jsonb[])
         AS h(saga_id, at, event, step, attempt, detail)
    WHERE h.saga_id IN (SELECT id FROM kept)
), counters AS (
    INSERT INTO metric_counters (name, labels, shard, value)
    SELECT k.name, k.labels, $23::int2, sum(k.value)
    FROM UNNEST($19::text[], $20::text[], $21::text[], $22::float8[]) AS k(saga_id, name, labels, value)
    WHERE k.saga_id IN (SELECT id FROM kept)
    GROUP BY 1, 2
    ORDER BY 1, 2
    ON CONFLICT (name, labels, shard) DO UPDATE SET value = metric_counters.value + EXCLUDED.value
), outbox AS (
    INSERT INTO outbox (exchange, routing_key, body, mandatory, traceparent, claimed_until)
    SELECT o.e, o.k, o.b, o.m, o.t, now() + make_interval(secs => $30::float8 / 1000.0)
    FROM UNNEST($24::text[], $25::text[], $26::text[], $27::bytea[], $28::bool[], $29::text[])
         WITH ORDINALITY AS o(saga_id, e, k, b, m, t, n)
    WHERE o.saga_id IN (SELECT id FROM kept)
    ORDER BY o.n
    RETURNING id
)
SELECT ARRAY(SELECT id FROM created ORDER BY id) AS "inserted!",
       ARRAY(SELECT created_at FROM created ORDER BY id) AS "created_at!",
       ARRAY(SELECT id FROM changed) AS "changed!",
       ARRAY(SELECT id FROM outbox) AS "outbox!"
