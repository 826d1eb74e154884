//! The workers' idempotency ledger: one row per completed activity, keyed by
//! idempotency key, so a redelivered or re-sent task gets the recorded result.

use std::collections::HashMap;

use serde_json::Value;
use sqlx::PgPool;

use super::{ctx, StoreError};

/// A ledger row as (key, output). `output` is selected as text and parsed here, so an
/// output serde_json cannot read is an error naming its key, not a driver error.
fn entry(key: String, output: String) -> Result<(String, Value), StoreError> {
    match serde_json::from_str(&output) {
        Ok(output) => Ok((key, output)),
        Err(e) => Err(StoreError::Unreadable {
            what: format!("idempotency ledger entry `{key}`"),
            reason: format!("column `output`: {e}"),
        }),
    }
}

/// Recorded outputs for those of `keys` that completed before.
pub async fn lookup(pool: &PgPool, keys: &[String]) -> Result<HashMap<String, Value>, StoreError> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = sqlx::query!(
        r#"SELECT key, output::text AS "output!" FROM idempotency_ledger WHERE key = ANY($1)"#,
        keys
    )
    .fetch_all(pool)
    .await
    .map_err(ctx("ledger lookup"))?;
    rows.into_iter().map(|r| entry(r.key, r.output)).collect()
}

/// One completed activity to record.
#[derive(Debug, Clone)]
pub struct Completion {
    /// The saga the task belongs to (its ledger rows are purged with it).
    pub saga_id: String,
    pub key: String,
    pub task_id: String,
    pub output: Value,
}

/// Records completions; returns, per key, the output that is now on record — the
/// existing one when another worker recorded the same key first, so every answer for
/// one key carries the same output.
pub async fn record(
    pool: &PgPool,
    completions: &[Completion],
) -> Result<HashMap<String, Value>, StoreError> {
    if completions.is_empty() {
        return Ok(HashMap::new());
    }
    let mut sorted: Vec<&Completion> = completions.iter().collect();
    // Same key twice in one statement would fail ON CONFLICT; sorting avoids deadlocks.
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    sorted.dedup_by(|a, b| a.key == b.key);
    let keys: Vec<&str> = sorted.iter().map(|c| c.key.as_str()).collect();
    let tasks: Vec<&str> = sorted.iter().map(|c| c.task_id.as_str()).collect();
    let sagas: Vec<&str> = sorted.iter().map(|c| c.saga_id.as_str()).collect();
    let outputs: Vec<&Value> = sorted.iter().map(|c| &c.output).collect();
    // Relaxed (the store's module doc, "Relaxed commits"): a row lost in a Postgres
    // crash only means that a redelivered task runs its handler again
    // (at-least-once); a result already published stays the answer the coordinator
    // acted on, and it ignores a second one.
    let rows = sqlx::query!(
        r#"WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true))
           INSERT INTO idempotency_ledger (key, task_id, output, saga_id)
           SELECT u.* FROM UNNEST($1::text[], $2::text[], $3::jsonb[], $4::text[]) AS u, relaxed
           ON CONFLICT (key) DO UPDATE SET key = EXCLUDED.key
           RETURNING key, output::text AS "output!""#,
        &keys as &[&str],
        &tasks as &[&str],
        &outputs as &[&Value],
        &sagas as &[&str]
    )
    .fetch_all(pool)
    .await
    .map_err(ctx("ledger record"))?;
    rows.into_iter().map(|r| entry(r.key, r.output)).collect()
}
