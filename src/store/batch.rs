//! Everything one coordinator batch writes, in one statement: the sagas it creates,
//! the sagas it changed (each fenced by its row: `row_version` and `created_at`),
//! their history, the metric counter increments and the outbox messages. One
//! statement of data-modifying CTEs instead of five is four round trips fewer per
//! batch, and it is what lets a batch without a lock (`coordinator::batch::cached`)
//! be a single statement that is its own transaction. Measured, the statement's
//! cost is mostly the server's (planning and execution, BENCHMARKS.md, "Where a
//! saga's time goes"), not the round trips it saved.
//!
//! A new saga whose id another coordinator took after this batch locked (the insert
//! finds it there) gets nothing else written: its history, counters and outbox rows
//! are filtered on the ids the insert returned, inside the same statement. The
//! caller tells a repeated start from a conflicting one ([`Written::inserted`]).

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use super::counters::Delta;
use super::outbox::{OutboxMessage, OutboxRow};
use super::sagas::{columns, SagaWrite};
use super::{ctx, StoreError, Tx};
use crate::saga::machine::HistoryEntry;

/// What a batch writes; each row names the saga it belongs to.
#[derive(Debug, Default)]
pub struct BatchWrite<'a> {
    /// Sagas to create (`fence` is ignored): an id that exists is left alone.
    pub new: Vec<SagaWrite<'a>>,
    /// Sagas to update, each fenced by its `fence`: one whose row is not that one
    /// fails the whole write with [`StoreError::Conflict`] ([`write`]), or is left out
    /// ([`write_alone`]).
    pub changed: Vec<SagaWrite<'a>>,
    pub history: Vec<(&'a str, &'a HistoryEntry)>,
    pub counters: Vec<(&'a str, Delta)>,
    pub outbox: Vec<(&'a str, OutboxMessage)>,
    /// How long the outbox rows stay claimed by the writer (it publishes them now).
    pub lease: Duration,
}

/// What the write did.
#[derive(Debug, Default)]
pub struct Written {
    /// The new sagas actually created.
    pub inserted: Vec<String>,
    /// The `created_at` of each of `inserted`, in the same order.
    pub created_at: Vec<DateTime<Utc>>,
    /// The changed sagas actually updated (their row was the one fenced).
    pub changed: Vec<String>,
    /// The outbox rows written, in the order given (those of sagas left out are not).
    pub outbox: Vec<OutboxRow>,
}

impl Written {
    /// The sagas the write created or updated (whose rows it wrote).
    pub fn kept(&self) -> HashSet<&str> {
        self.inserted
            .iter()
            .chain(&self.changed)
            .map(String::as_str)
            .collect()
    }
}

impl BatchWrite<'_> {
    fn is_empty(&self) -> bool {
        self.new.is_empty()
            && self.changed.is_empty()
            && self.history.is_empty()
            && self.counters.is_empty()
            && self.outbox.is_empty()
    }
}

/// Writes `w` in one statement. Rows of a new saga that was not created, and rows of
/// sagas the batch neither creates nor changes, are left out.
pub async fn write(tx: &mut Tx, w: BatchWrite<'_>) -> Result<Written, StoreError> {
    let fenced: Vec<String> = w.changed.iter().map(|c| c.state.id.clone()).collect();
    let written = execute(tx.conn(), w).await?;
    let updated: HashSet<&str> = written.changed.iter().map(String::as_str).collect();
    let stale: Vec<&str> = fenced
        .iter()
        .map(String::as_str)
        .filter(|id| !updated.contains(id))
        .collect();
    if !stale.is_empty() {
        return Err(StoreError::Conflict(stale.join(",")));
    }
    Ok(written)
}

/// Writes `w` as one statement outside any transaction, so the statement is its own
/// (one round trip in all, its commit included). A changed saga whose row is no
/// longer the one its `fence` names is not an error here: that saga gets nothing
/// written and is missing from [`Written::changed`], and the rest commit.
pub async fn write_alone(pool: &PgPool, w: BatchWrite<'_>) -> Result<Written, StoreError> {
    let mut conn = pool.acquire().await.map_err(ctx("acquire"))?;
    execute(&mut conn, w).await
}

async fn execute(conn: &mut PgConnection, w: BatchWrite<'_>) -> Result<Written, StoreError> {
    if w.is_empty() {
        return Ok(Written::default());
    }
    let n = columns(w.new.iter(), true);
    let c = columns(w.changed.iter(), false);
    let h_ids: Vec<&str> = w.history.iter().map(|(id, _)| *id).collect();
    let h_ats: Vec<DateTime<Utc>> = w.history.iter().map(|(_, h)| h.at).collect();
    let h_events: Vec<&str> = w.history.iter().map(|(_, h)| h.event.as_str()).collect();
    let h_steps: Vec<Option<&str>> = w.history.iter().map(|(_, h)| h.step.as_deref()).collect();
    let h_attempts: Vec<Option<i32>> = w
        .history
        .iter()
        .map(|(_, h)| h.attempt.map(|a| a as i32))
        .collect();
    let h_details: Vec<&serde_json::Value> = w.history.iter().map(|(_, h)| &h.detail).collect();
    let k_ids: Vec<&str> = w.counters.iter().map(|(id, _)| *id).collect();
    let k_names: Vec<&str> = w.counters.iter().map(|(_, d)| d.name).collect();
    let k_labels: Vec<&str> = w.counters.iter().map(|(_, d)| d.labels.as_str()).collect();
    let k_values: Vec<f64> = w.counters.iter().map(|(_, d)| d.value).collect();
    let o_ids: Vec<&str> = w.outbox.iter().map(|(id, _)| *id).collect();
    let o_exchanges: Vec<&str> = w.outbox.iter().map(|(_, m)| m.exchange.as_str()).collect();
    let o_keys: Vec<&str> = w
        .outbox
        .iter()
        .map(|(_, m)| m.routing_key.as_str())
        .collect();
    let o_bodies: Vec<&[u8]> = w.outbox.iter().map(|(_, m)| m.body.as_slice()).collect();
    let o_mandatory: Vec<bool> = w.outbox.iter().map(|(_, m)| m.mandatory).collect();
    let o_traces: Vec<Option<&str>> = w
        .outbox
        .iter()
        .map(|(_, m)| m.traceparent.as_deref())
        .collect();
    let row = sqlx::query_file!(
        "src/store/sql/batch_write.sql",
        &n.ids,
        &n.names,
        &n.versions,
        &n.statuses,
        &n.states,
        &n.wakes as &[Option<DateTime<Utc>>],
        &n.inputs,
        &c.ids,
        &c.statuses,
        &c.states,
        &c.wakes as &[Option<DateTime<Utc>>],
        &c.expected,
        &h_ids as &[&str],
        &h_ats,
        &h_events as &[&str],
        &h_steps as &[Option<&str>],
        &h_attempts as &[Option<i32>],
        &h_details as &[&serde_json::Value],
        &k_ids as &[&str],
        &k_names as &[&str],
        &k_labels as &[&str],
        &k_values,
        super::counters::shard(),
        &o_ids as &[&str],
        &o_exchanges as &[&str],
        &o_keys as &[&str],
        &o_bodies as &[&[u8]],
        &o_mandatory,
        &o_traces as &[Option<&str>],
        w.lease.as_secs_f64() * 1000.0,
        &c.created,
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(ctx("write batch"))?;
    let kept: HashSet<&str> = row
        .inserted
        .iter()
        .chain(&row.changed)
        .map(String::as_str)
        .collect();
    let messages: Vec<OutboxMessage> = w
        .outbox
        .into_iter()
        .filter(|(id, _)| kept.contains(id))
        .map(|(_, m)| m)
        .collect();
    let mut ids = row.outbox;
    if ids.len() != messages.len() {
        return Err(StoreError::Unreadable {
            what: "the batch's outbox rows".into(),
            reason: format!("{} written for {} messages", ids.len(), messages.len()),
        });
    }
    // bigserial ids are assigned in insertion order, which follows the given order.
    ids.sort_unstable();
    let outbox = ids
        .into_iter()
        .zip(messages)
        .map(|(id, message)| OutboxRow { id, message })
        .collect();
    Ok(Written {
        inserted: row.inserted,
        created_at: row.created_at,
        changed: row.changed,
        outbox,
    })
}
