//! The transactional outbox: messages committed with the state change that caused them.

use std::time::Duration;

use sqlx::PgPool;

use super::{ctx, StoreError};

/// A message waiting to be published.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxMessage {
    pub exchange: String,
    pub routing_key: String,
    pub body: Vec<u8>,
    /// Unroutable means failure (tasks, results); events may go unheard.
    pub mandatory: bool,
    /// Published as the `traceparent` header: the trace of the saga that wrote it.
    pub traceparent: Option<String>,
}

/// An outbox row: its id and its message.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub id: i64,
    pub message: OutboxMessage,
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Removes published rows.
pub async fn delete(pool: &PgPool, ids: &[i64]) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    // Relaxed (the store's module doc, "Relaxed commits"): a lost delete only means
    // the sweeper publishes the row again.
    sqlx::query!(
        "WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true))
         DELETE FROM outbox WHERE id = ANY($1) AND EXISTS (SELECT FROM relaxed)",
        ids
    )
    .execute(pool)
    .await
    .map_err(ctx("delete outbox"))?;
    Ok(())
}

/// Claims up to `limit` rows whose lease ran out (their publisher died or failed),
/// extending the lease so only this sweeper publishes them now.
pub async fn claim_expired(
    pool: &PgPool,
    lease: Duration,
    limit: i64,
) -> Result<Vec<OutboxRow>, StoreError> {
    let rows = sqlx::query!(
        "UPDATE outbox SET claimed_until = now() + make_interval(secs => $1::float8 / 1000.0), attempts = attempts + 1
         WHERE id IN (SELECT id FROM outbox WHERE claimed_until < now() ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED)
         RETURNING id, exchange, routing_key, body, mandatory, traceparent",
        millis(lease),
        limit
    )
    .fetch_all(pool)
    .await
    .map_err(ctx("claim outbox"))?;
    let mut out: Vec<OutboxRow> = rows
        .into_iter()
        .map(|r| OutboxRow {
            id: r.id,
            message: OutboxMessage {
                exchange: r.exchange,
                routing_key: r.routing_key,
                body: r.body,
                mandatory: r.mandatory,
                traceparent: r.traceparent,
            },
        })
        .collect();
    out.sort_by_key(|r| r.id);
    Ok(out)
}

/// Rows not yet published.
pub async fn backlog(pool: &PgPool) -> Result<i64, StoreError> {
    sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM outbox"#)
        .fetch_one(pool)
        .await
        .map_err(ctx("count outbox"))
}
