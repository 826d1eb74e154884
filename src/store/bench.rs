//! The benchmarks' own queries (`sagaflow bench-timers`): spreading the wake-up times
//! of preloaded sagas over a window, and measuring what the engine did. Never called
//! by the engine; compiled with the `tools` feature only.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::{ctx, StoreError};

/// Bytes of `sagas` and `saga_history` (table, indexes, TOAST) and the number of
/// history rows, after a `VACUUM ANALYZE` so dead rows do not count.
pub async fn storage(pool: &PgPool) -> Result<(i64, i64, i64), StoreError> {
    for table in ["sagas", "saga_history"] {
        sqlx::query(&format!("VACUUM ANALYZE {table}"))
            .execute(pool)
            .await
            .map_err(ctx("vacuum"))?;
    }
    let r = sqlx::query!(
        r#"SELECT pg_total_relation_size('sagas') AS "sagas!",
                  pg_total_relation_size('saga_history') AS "history!",
                  (SELECT count(*) FROM saga_history) AS "history_rows!""#
    )
    .fetch_one(pool)
    .await
    .map_err(ctx("measure storage"))?;
    Ok((r.sagas, r.history, r.history_rows))
}

/// Makes every sleeping saga `t-<i>` fall due at `due + i * spread_us` µs (its
/// `wake_at` and the sleep's `until` in its state).
pub async fn spread_wakeups(
    pool: &PgPool,
    due: DateTime<Utc>,
    spread_us: i64,
) -> Result<(), StoreError> {
    sqlx::query!(
        "UPDATE sagas SET wake_at = $1::timestamptz + make_interval(secs => (substr(id, 3)::bigint * $2) / 1e6),
                state = jsonb_set(state, '{steps,0,until}', to_jsonb($1::timestamptz + make_interval(secs => (substr(id, 3)::bigint * $2) / 1e6)))",
        due,
        spread_us
    )
    .execute(pool)
    .await
    .map_err(ctx("spread wake-ups"))?;
    Ok(())
}

/// p50 and p99 in ms of the lag from each saga's due instant (as
/// [`spread_wakeups`] set it) to the `sleep_completed` history row of its wake-up
/// transaction.
pub async fn wakeup_lags(
    pool: &PgPool,
    due: DateTime<Utc>,
    spread_us: i64,
) -> Result<(Option<f64>, Option<f64>), StoreError> {
    let r = sqlx::query!(
        r#"SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY lag) AS "p50?",
                  percentile_cont(0.99) WITHIN GROUP (ORDER BY lag) AS "p99?"
           FROM (SELECT extract(epoch FROM h.at - ($1::timestamptz + make_interval(secs => (substr(h.saga_id, 3)::bigint * $2) / 1e6))) * 1000 AS lag
                 FROM saga_history h WHERE h.event = 'sleep_completed') l"#,
        due,
        spread_us
    )
    .fetch_one(pool)
    .await
    .map_err(ctx("measure wake-up lags"))?;
    Ok((r.p50, r.p99))
}
