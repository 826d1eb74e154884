//! The transactional outbox: messages committed with the state change that caused them.

use std::time::Duration;

use sqlx::PgPool;

use super::Tx;

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

/// Inserts messages claimed by the writer for `lease`; returns the rows in input order.
pub async fn insert(
    tx: &mut Tx,
    messages: Vec<OutboxMessage>,
    lease: Duration,
) -> Result<Vec<OutboxRow>, StoreError> {
    if messages.is_empty() {
        return Ok(vec![]);
    }
    let exchanges: Vec<&str> = messages.iter().map(|m| m.exchange.as_str()).collect();
    let keys: Vec<&str> = messages.iter().map(|m| m.routing_key.as_str()).collect();
    let bodies: Vec<&[u8]> = messages.iter().map(|m| m.body.as_slice()).collect();
    let mandatory: Vec<bool> = messages.iter().map(|m| m.mandatory).collect();
    let traces: Vec<Option<&str>> = messages.iter().map(|m| m.traceparent.as_deref()).collect();
    let mut ids = sqlx::query_scalar!(
        "INSERT INTO outbox (exchange, routing_key, body, mandatory, traceparent, claimed_until)
         SELECT e, k, b, m, t, now() + make_interval(secs => $5::float8 / 1000.0)
         FROM UNNEST($1::text[], $2::text[], $3::bytea[], $4::bool[], $6::text[]) WITH ORDINALITY AS u(e, k, b, m, t, n)
         ORDER BY n
         RETURNING id",
        &exchanges as &[&str],
        &keys as &[&str],
        &bodies as &[&[u8]],
        &mandatory,
        millis(lease),
        &traces as &[Option<&str>]
    )
    .fetch_all(tx.conn())
    .await
    .map_err(ctx("insert outbox"))?;
    // bigserial ids are assigned in insertion order, which follows ORDER BY n.
    ids.sort_unstable();
    Ok(ids
        .into_iter()
        .zip(messages)
        .map(|(id, message)| OutboxRow { id, message })
        .collect())
}

/// Removes published rows.
pub async fn delete(pool: &PgPool, ids: &[i64]) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    // Relaxed: a lost delete only means the sweeper publishes the row again.
    let mut tx = super::begin_relaxed(pool).await?;
    sqlx::query!("DELETE FROM outbox WHERE id = ANY($1)", ids)
        .execute(tx.conn())
        .await
        .map_err(ctx("delete outbox"))?;
    tx.commit().await
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
