//! The transactional outbox: messages committed with the state change that caused them.

use std::time::Duration;

use sqlx::{PgPool, Row};

use super::Tx;

use super::{column, ctx, StoreError};

/// A message waiting to be published.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxMessage {
    pub exchange: String,
    pub routing_key: String,
    pub body: Vec<u8>,
    /// Unroutable means failure (tasks, results); events may go unheard.
    pub mandatory: bool,
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
    let rows = sqlx::query(
        "INSERT INTO outbox (exchange, routing_key, body, mandatory, claimed_until)
         SELECT e, k, b, m, now() + make_interval(secs => $5 / 1000.0)
         FROM UNNEST($1::text[], $2::text[], $3::bytea[], $4::bool[]) WITH ORDINALITY AS u(e, k, b, m, n)
         ORDER BY n
         RETURNING id",
    )
    .bind(&exchanges).bind(&keys).bind(&bodies).bind(&mandatory).bind(millis(lease))
    .fetch_all(tx.conn())
    .await
    .map_err(ctx("insert outbox"))?;
    let mut ids: Vec<i64> = rows
        .iter()
        .map(|r| column(r, "id", || "new outbox row".into()))
        .collect::<Result<_, _>>()?;
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
    sqlx::query("DELETE FROM outbox WHERE id = ANY($1)")
        .bind(ids)
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
    let rows = sqlx::query(
        "UPDATE outbox SET claimed_until = now() + make_interval(secs => $1 / 1000.0), attempts = attempts + 1
         WHERE id IN (SELECT id FROM outbox WHERE claimed_until < now() ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED)
         RETURNING id, exchange, routing_key, body, mandatory",
    )
    .bind(millis(lease)).bind(limit)
    .fetch_all(pool)
    .await
    .map_err(ctx("claim outbox"))?;
    let mut out: Vec<OutboxRow> = rows
        .iter()
        .map(|r| {
            let what = || {
                let id = r
                    .try_get::<i64, _>("id")
                    .map_or("?".into(), |n| n.to_string());
                format!("outbox row {id}")
            };
            Ok(OutboxRow {
                id: column(r, "id", what)?,
                message: OutboxMessage {
                    exchange: column(r, "exchange", what)?,
                    routing_key: column(r, "routing_key", what)?,
                    body: column(r, "body", what)?,
                    mandatory: column(r, "mandatory", what)?,
                },
            })
        })
        .collect::<Result<_, StoreError>>()?;
    out.sort_by_key(|r| r.id);
    Ok(out)
}

/// Rows not yet published.
pub async fn backlog(pool: &PgPool) -> Result<i64, StoreError> {
    let row = sqlx::query("SELECT count(*) AS n FROM outbox")
        .fetch_one(pool)
        .await
        .map_err(ctx("count outbox"))?;
    column(&row, "n", || "outbox count".into())
}
