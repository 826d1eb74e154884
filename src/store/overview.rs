//! The dashboard's overview (`GET /api/overview`): sagas started and ended per minute
//! over the last hour, and the oldest open sagas. Each query reads an index range
//! (migrations/0007_overview.sql says which); the counts per definition and status
//! are [`super::stats::sagas_by_name_status`].

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::sagas::SagaSummary;
use super::{ctx, StoreError};

/// How many minutes [`throughput`] covers, the current one included.
pub const MINUTES: i64 = 60;

/// Sagas started and ended in one minute. "Started" is a row created in it (a
/// delayed start counts when it was accepted); "ended" is a row in an ended status
/// whose last write (`updated_at`, the end for an ended saga) falls in it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Minute {
    /// The minute's start.
    pub minute: DateTime<Utc>,
    pub started: i64,
    pub completed: i64,
    pub compensated: i64,
    pub failed: i64,
    pub cancelled: i64,
}

/// One [`Minute`] per minute of the [`MINUTES`] minutes up to `now`, oldest first,
/// zeros included.
pub async fn throughput(pool: &PgPool, now: DateTime<Utc>) -> Result<Vec<Minute>, StoreError> {
    let rows = sqlx::query!(
        r#"WITH span AS (
             SELECT date_trunc('minute', $1::timestamptz) - make_interval(mins => $2::int - 1) AS since),
           started AS (
             SELECT date_trunc('minute', created_at) AS minute, count(*) AS n
             FROM sagas, span WHERE created_at >= span.since GROUP BY 1),
           ended AS (
             SELECT date_trunc('minute', updated_at) AS minute,
                    count(*) FILTER (WHERE status = 'completed') AS completed,
                    count(*) FILTER (WHERE status = 'compensated') AS compensated,
                    count(*) FILTER (WHERE status = 'failed') AS failed,
                    count(*) FILTER (WHERE status = 'cancelled') AS cancelled
             FROM sagas, span
             WHERE status IN ('completed', 'compensated', 'failed', 'cancelled')
               AND updated_at >= span.since
             GROUP BY 1)
         SELECT m.minute AS "minute!",
                COALESCE(s.n, 0) AS "started!",
                COALESCE(e.completed, 0) AS "completed!",
                COALESCE(e.compensated, 0) AS "compensated!",
                COALESCE(e.failed, 0) AS "failed!",
                COALESCE(e.cancelled, 0) AS "cancelled!"
         FROM span,
              generate_series(span.since, date_trunc('minute', $1::timestamptz), interval '1 minute') AS m(minute)
         LEFT JOIN started s ON s.minute = m.minute
         LEFT JOIN ended e ON e.minute = m.minute
         ORDER BY m.minute"#,
        now,
        MINUTES as i32
    )
    .fetch_all(pool)
    .await
    .map_err(ctx("count sagas per minute"))?;
    Ok(rows
        .into_iter()
        .map(|r| Minute {
            minute: r.minute,
            started: r.started,
            completed: r.completed,
            compensated: r.compensated,
            failed: r.failed,
            cancelled: r.cancelled,
        })
        .collect())
}

/// Up to `limit` running or compensating sagas, oldest (`created_at`) first.
pub async fn oldest_open(pool: &PgPool, limit: i64) -> Result<Vec<SagaSummary>, StoreError> {
    let rows = sqlx::query!(
        r#"SELECT id, name, version, status, created_at, updated_at,
                COALESCE(state @> jsonb_build_object('id', id, 'saga', name, 'version', version,
                                                     'status', status), false) AS "consistent!"
         FROM sagas WHERE status IN ('running', 'compensating')
         ORDER BY created_at, id LIMIT $1"#,
        limit
    )
    .fetch_all(pool)
    .await
    .map_err(ctx("list the oldest open sagas"))?;
    Ok(rows
        .into_iter()
        .map(|r| SagaSummary {
            id: r.id,
            saga: r.name,
            version: r.version,
            status: r.status,
            created_at: r.created_at,
            updated_at: r.updated_at,
            unreadable: (!r.consistent).then(|| {
                "the stored state does not match its row (id, saga, version, status)".into()
            }),
        })
        .collect())
}
