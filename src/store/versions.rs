//! What still holds each definition version, for the version drain
//! ([`crate::versions`]): stored sagas per (name, version) by status, and schedules
//! per saga. Two read-only aggregates; nothing is locked.

use sqlx::PgPool;

use super::{ctx, StoreError};
use crate::versions::{Stored, StoredVersion};

/// Sagas that hold a version (scheduled, running, compensating, failed) per (name,
/// version), and schedules per saga name.
///
/// The saga query filters on `status` only, so Postgres reads just those rows
/// through `sagas_status_updated (status, updated_at)` (`EXPLAIN` over 200,000 ended
/// and 300 open sagas: an index scan on `status = ANY(…)`); ended sagas, the bulk of
/// the table until retention removes them, are not visited. Open and failed sagas
/// are few, so grouping them in memory is cheap and no index of its own is needed.
/// The schedules table has one row per schedule (dozens): a scan of it is the plan.
pub async fn stored(pool: &PgPool) -> Result<Stored, StoreError> {
    let rows = sqlx::query!(
        r#"SELECT name, version::int8 AS "version!",
                  count(*) FILTER (WHERE status = 'scheduled') AS "scheduled!",
                  count(*) FILTER (WHERE status = 'running') AS "running!",
                  count(*) FILTER (WHERE status = 'compensating') AS "compensating!",
                  count(*) FILTER (WHERE status = 'failed') AS "failed!"
           FROM sagas
           WHERE status IN ('scheduled', 'running', 'compensating', 'failed')
           GROUP BY name, version
           ORDER BY name, version"#
    )
    .fetch_all(pool)
    .await
    .map_err(ctx("count sagas per definition version"))?;
    let versions = rows
        .into_iter()
        .map(|r| StoredVersion {
            saga: r.name,
            version: r.version,
            scheduled: r.scheduled,
            running: r.running,
            compensating: r.compensating,
            failed: r.failed,
        })
        .collect();
    let schedules =
        sqlx::query!(r#"SELECT saga, count(*) AS "n!" FROM schedules GROUP BY saga ORDER BY saga"#)
            .fetch_all(pool)
            .await
            .map_err(ctx("count schedules per saga"))?
            .into_iter()
            .map(|r| (r.saga, r.n))
            .collect();
    Ok(Stored {
        versions,
        schedules,
    })
}
