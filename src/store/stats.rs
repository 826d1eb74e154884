//! Read-only aggregates for `/metrics` and the scaling signal. Each is one query
//! over indexed columns or the JSONB state of open sagas only.

use sqlx::PgPool;

use super::{ctx, StoreError};

/// Sagas per (definition name, status).
pub async fn sagas_by_name_status(pool: &PgPool) -> Result<Vec<(String, String, i64)>, StoreError> {
    let rows = sqlx::query!(
        r#"SELECT name, status, count(*) AS "n!" FROM sagas GROUP BY 1, 2 ORDER BY 1, 2"#
    )
    .fetch_all(pool)
    .await
    .map_err(ctx("count sagas by status"))?;
    Ok(rows.into_iter().map(|r| (r.name, r.status, r.n)).collect())
}

/// Wake-ups that are due now, and how late the oldest of them is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Wakeups {
    pub due: i64,
    /// Seconds since the oldest due `wake_at`; 0 when nothing is due.
    pub lag_seconds: f64,
}

pub async fn wakeups(pool: &PgPool) -> Result<Wakeups, StoreError> {
    let row = sqlx::query!(
        r#"SELECT count(*) AS "n!",
                  COALESCE(EXTRACT(EPOCH FROM now() - min(wake_at))::float8, 0) AS "lag!"
           FROM sagas WHERE wake_at <= now()"#
    )
    .fetch_one(pool)
    .await
    .map_err(ctx("count due wake-ups"))?;
    Ok(Wakeups {
        due: row.n,
        lag_seconds: row.lag.max(0.0),
    })
}

/// Real work per activity, counted from saga state rather than queue depth.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ActivityLoad {
    pub activity: String,
    /// Tasks dispatched and not answered yet: ready, unacked or in a delay queue.
    pub outstanding: i64,
    /// Tasks parked in Postgres (long retry waits) that dispatch within the window.
    pub due_soon: i64,
    /// Age of the oldest outstanding task since it was scheduled; 0 when none.
    pub oldest_age_seconds: f64,
}

/// Outstanding and soon-due tasks per activity over open sagas. `window_secs` is how
/// far ahead a parked task counts as due soon.
pub async fn activity_load(
    pool: &PgPool,
    window_secs: f64,
) -> Result<Vec<ActivityLoad>, StoreError> {
    let rows = sqlx::query!(
        r#"WITH t AS (
            SELECT task->>'activity' AS activity,
                   (task->>'dispatch_at')::timestamptz AS dispatch_at,
                   COALESCE((task->>'scheduled_at')::timestamptz,
                            (task->>'first_scheduled_at')::timestamptz) AS scheduled_at
            FROM sagas
            CROSS JOIN LATERAL jsonb_array_elements(CASE
                WHEN jsonb_typeof(state->'tasks') = 'array' THEN state->'tasks'
                WHEN jsonb_typeof(state->'active') = 'object' THEN jsonb_build_array(state->'active')
                ELSE '[]'::jsonb END) AS task
            WHERE status IN ('running', 'compensating')
              AND task->>'activity' IS NOT NULL)
         SELECT activity AS "activity!",
                count(*) FILTER (WHERE dispatch_at IS NULL) AS "outstanding!",
                count(*) FILTER (WHERE dispatch_at <= now() + make_interval(secs => $1)) AS "due_soon!",
                COALESCE(EXTRACT(EPOCH FROM now() - min(scheduled_at) FILTER (WHERE dispatch_at IS NULL))::float8, 0) AS "oldest!"
         FROM t GROUP BY activity ORDER BY activity"#,
        window_secs
    )
    .fetch_all(pool)
    .await
    .map_err(ctx("activity load"))?;
    Ok(rows
        .into_iter()
        .map(|r| ActivityLoad {
            activity: r.activity,
            outstanding: r.outstanding,
            due_soon: r.due_soon,
            oldest_age_seconds: r.oldest.max(0.0),
        })
        .collect())
}

/// How many of the sagas `ids` are in each status (ids not stored yet are not
/// counted), by status name.
pub async fn statuses_of(pool: &PgPool, ids: &[String]) -> Result<Vec<(String, i64)>, StoreError> {
    let rows = sqlx::query!(
        r#"SELECT status, count(*) AS "n!" FROM sagas WHERE id = ANY($1)
           GROUP BY status ORDER BY status"#,
        ids
    )
    .fetch_all(pool)
    .await
    .map_err(ctx("count sagas by status"))?;
    Ok(rows.into_iter().map(|r| (r.status, r.n)).collect())
}
