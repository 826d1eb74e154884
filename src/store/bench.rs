//! The benchmarks' own queries: spreading the wake-up times of preloaded sagas over a
//! window and measuring what the engine did (`sagaflow bench-timers`); preloading
//! finished sagas and finding the server's processes (`sagaflow bench --preload`).
//! Never called by the engine; compiled with the `tools` feature only.

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

/// How many stored sagas have an id starting with `prefix` (`sagaflow bench --purge`
/// counts what the coordinator's retention purge has left of its preload).
pub async fn count_with_prefix(pool: &PgPool, prefix: &str) -> Result<i64, StoreError> {
    let pattern = format!("{prefix}%");
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM sagas WHERE id LIKE $1"#,
        pattern
    )
    .fetch_one(pool)
    .await
    .map_err(ctx("count preloaded sagas"))
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

/// Stands for the saga id in a [`FinishedTemplate`]'s texts; replaced by each copy's.
pub const ID_PLACEHOLDER: &str = "@@saga_id@@";

/// One finished saga to copy (`sagaflow bench --preload`): its row, history and
/// ledger rows as the engine wrote them, with [`ID_PLACEHOLDER`] for the id and
/// times as offsets from its start.
#[derive(Debug, Clone)]
pub struct FinishedTemplate {
    pub saga: String,
    pub version: i32,
    pub status: String,
    /// The state's JSON text.
    pub state: String,
    /// From the start to the terminal write (`updated_at`), µs.
    pub duration_us: i64,
    pub history: Vec<TemplateHistory>,
    pub ledger: Vec<TemplateLedger>,
}

/// A history row of a [`FinishedTemplate`].
#[derive(Debug, Clone)]
pub struct TemplateHistory {
    pub offset_us: i64,
    pub event: String,
    pub step: Option<String>,
    pub attempt: Option<i32>,
    /// JSON text.
    pub detail: String,
}

/// A ledger row (a completed task) of a [`FinishedTemplate`].
#[derive(Debug, Clone)]
pub struct TemplateLedger {
    pub offset_us: i64,
    pub key: String,
    pub task_id: String,
    /// JSON text.
    pub output: String,
}

/// Where the copies go: ids `<prefix><i>` for `i` in `from..=to`, copy `i` started at
/// `base + i * spacing_us`.
#[derive(Debug, Clone, Copy)]
pub struct Copies<'a> {
    pub prefix: &'a str,
    pub from: i64,
    pub to: i64,
    pub base: DateTime<Utc>,
    pub spacing_us: i64,
}

/// Writes the copies of `t` in one transaction, each set of rows with one
/// `INSERT … SELECT` over `generate_series` (no row crosses the wire), so a million
/// finished sagas load in minutes.
pub async fn preload_finished(
    pool: &PgPool,
    t: &FinishedTemplate,
    c: Copies<'_>,
) -> Result<(), StoreError> {
    let mut tx = super::begin(pool).await?;
    sqlx::query!(
        "INSERT INTO sagas (id, name, version, status, state, created_at, updated_at)
         SELECT $1 || i, $2, $3, $4, replace($5, $6, $1 || i)::jsonb,
                $7::timestamptz + (i * $8) * interval '1 microsecond',
                $7::timestamptz + (i * $8 + $9) * interval '1 microsecond'
         FROM generate_series($10::bigint, $11::bigint) AS i",
        c.prefix,
        t.saga,
        t.version,
        t.status,
        t.state,
        ID_PLACEHOLDER,
        c.base,
        c.spacing_us,
        t.duration_us,
        c.from,
        c.to
    )
    .execute(tx.conn())
    .await
    .map_err(ctx("preload sagas"))?;
    preload_history(&mut tx, t, c).await?;
    preload_ledger(&mut tx, t, c).await?;
    tx.commit().await?;
    Ok(())
}

async fn preload_history(
    tx: &mut super::Tx,
    t: &FinishedTemplate,
    c: Copies<'_>,
) -> Result<(), StoreError> {
    let h = &t.history;
    let offsets: Vec<i64> = h.iter().map(|e| e.offset_us).collect();
    let events: Vec<&str> = h.iter().map(|e| e.event.as_str()).collect();
    let steps: Vec<Option<&str>> = h.iter().map(|e| e.step.as_deref()).collect();
    let attempts: Vec<Option<i32>> = h.iter().map(|e| e.attempt).collect();
    let details: Vec<&str> = h.iter().map(|e| e.detail.as_str()).collect();
    // Ordered by saga, then entry: `id` orders one saga's history, as when written.
    sqlx::query!(
        "INSERT INTO saga_history (saga_id, at, event, step, attempt, detail)
         SELECT $1 || i, $3::timestamptz + (i * $4 + h.offset_us) * interval '1 microsecond',
                h.event, h.step, h.attempt, replace(h.detail, $2, $1 || i)::jsonb
         FROM generate_series($5::bigint, $6::bigint) AS i
         CROSS JOIN UNNEST($7::int8[], $8::text[], $9::text[], $10::int4[], $11::text[])
              WITH ORDINALITY AS h(offset_us, event, step, attempt, detail, n)
         ORDER BY i, h.n",
        c.prefix,
        ID_PLACEHOLDER,
        c.base,
        c.spacing_us,
        c.from,
        c.to,
        &offsets,
        &events as &[&str],
        &steps as &[Option<&str>],
        &attempts as &[Option<i32>],
        &details as &[&str]
    )
    .execute(tx.conn())
    .await
    .map_err(ctx("preload history"))?;
    Ok(())
}

async fn preload_ledger(
    tx: &mut super::Tx,
    t: &FinishedTemplate,
    c: Copies<'_>,
) -> Result<(), StoreError> {
    let l = &t.ledger;
    let offsets: Vec<i64> = l.iter().map(|e| e.offset_us).collect();
    let keys: Vec<&str> = l.iter().map(|e| e.key.as_str()).collect();
    let tasks: Vec<&str> = l.iter().map(|e| e.task_id.as_str()).collect();
    let outputs: Vec<&str> = l.iter().map(|e| e.output.as_str()).collect();
    sqlx::query!(
        "INSERT INTO idempotency_ledger (key, task_id, output, completed_at, saga_id)
         SELECT replace(l.key, $2, $1 || i), replace(l.task_id, $2, $1 || i), l.output::jsonb,
                $3::timestamptz + (i * $4 + l.offset_us) * interval '1 microsecond', $1 || i
         FROM generate_series($5::bigint, $6::bigint) AS i
         CROSS JOIN UNNEST($7::int8[], $8::text[], $9::text[], $10::text[])
              AS l(offset_us, key, task_id, output)",
        c.prefix,
        ID_PLACEHOLDER,
        c.base,
        c.spacing_us,
        c.from,
        c.to,
        &offsets,
        &keys as &[&str],
        &tasks as &[&str],
        &outputs as &[&str]
    )
    .execute(tx.conn())
    .await
    .map_err(ctx("preload ledger"))?;
    Ok(())
}

/// After a preload: statistics and the visibility map as autovacuum would leave
/// them, and a checkpoint, so the timed run neither plans on an empty table nor
/// pays for writing out the preload's pages. The checkpoint needs a privileged role;
/// without one it is skipped (the run is still valid, only noisier).
pub async fn settle(pool: &PgPool) -> Result<(), StoreError> {
    for table in ["sagas", "saga_history", "idempotency_ledger"] {
        sqlx::query(&format!("VACUUM ANALYZE {table}"))
            .execute(pool)
            .await
            .map_err(ctx("vacuum"))?;
    }
    if let Err(e) = sqlx::query("CHECKPOINT").execute(pool).await {
        tracing::warn!(error = %e, "no checkpoint after the preload");
    }
    Ok(())
}

/// The process id of the server process serving one of `pool`'s connections.
pub async fn backend_pid(pool: &PgPool) -> Result<i32, StoreError> {
    sqlx::query_scalar!(r#"SELECT pg_backend_pid() AS "pid!""#)
        .fetch_one(pool)
        .await
        .map_err(ctx("read the backend pid"))
}
