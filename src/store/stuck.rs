//! Finding sagas nothing will move: non-terminal, no timer (`wake_at`), not waiting
//! for a signal or a child saga, untouched for a grace period. Every dispatched attempt carries a
//! deadline and every sleep or timed wait a timer, so such a saga means a bug, a row
//! written by hand or by an older version: it is flagged (`stuck_since`, a history
//! line) and woken once, so the machine can re-arm what it is waiting on.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::{ctx, StoreError};
use crate::saga::history::HistoryEvent;

/// Flags up to `limit` stuck sagas last written before `now - grace`: sets
/// `stuck_since`, appends a `stuck_detected` history line and sets `wake_at = now`
/// (one repair attempt through the wake-up scan). Returns their ids. Rows another
/// coordinator holds are skipped; a malformed state is not an error here.
pub async fn flag(
    pool: &PgPool,
    now: DateTime<Utc>,
    grace: chrono::Duration,
    limit: i64,
) -> Result<Vec<String>, StoreError> {
    sqlx::query_scalar!(
        r#"WITH stuck AS (
             SELECT id FROM sagas
             WHERE wake_at IS NULL
               AND status IN ('scheduled', 'running', 'compensating')
               AND stuck_since IS NULL
               AND updated_at < $2
               AND NOT COALESCE(CASE WHEN state->>'cursor' ~ '^[0-9]{1,9}$'
                   THEN state->'steps'->((state->>'cursor')::int) END, '{}')
                   @> ANY (ARRAY['{"status": "waiting"}'::jsonb,
                                 '{"branches": [{"status": "waiting"}]}'::jsonb])
               AND NOT jsonb_path_exists(state, '$.tasks[*].child')
             ORDER BY updated_at
             LIMIT $3
             FOR UPDATE SKIP LOCKED
         ), flagged AS (
             UPDATE sagas s SET stuck_since = $1, wake_at = $1, row_version = s.row_version + 1
             FROM stuck WHERE s.id = stuck.id
             RETURNING s.id, s.status
         ), logged AS (
             INSERT INTO saga_history (saga_id, at, event, detail)
             SELECT id, $1, $4, jsonb_build_object(
                 'reason', 'no timer, nothing in flight and not waiting for a signal',
                 'status', status, 'repair', 'woken once to re-arm its deadlines')
             FROM flagged
         )
         SELECT id AS "id!" FROM flagged"#,
        now,
        now - grace,
        limit,
        HistoryEvent::StuckDetected.as_str()
    )
    .fetch_all(pool)
    .await
    .map_err(ctx("flag stuck sagas"))
}

/// Non-terminal sagas flagged stuck and not repaired since (the `sagaflow_stuck_sagas` gauge).
pub async fn count(pool: &PgPool) -> Result<i64, StoreError> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM sagas WHERE stuck_since IS NOT NULL
           AND status IN ('scheduled', 'running', 'compensating')"#
    )
    .fetch_one(pool)
    .await
    .map_err(ctx("count stuck sagas"))
}
