//! Publishing the outbox: rows handed over right after commit, and a sweeper that
//! republishes rows whose lease ran out (their coordinator crashed or lost the broker).
//! A row is deleted only after the broker confirmed it, so a crash anywhere here
//! leads to a second publish, never to a lost message; consumers drop the duplicate.

use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::broker::{Outgoing, Publisher};
use crate::store::outbox::{self, OutboxRow};

/// Publishes `rows`; deletes those confirmed. Returns how many failed.
pub async fn publish_rows(pool: &PgPool, publisher: &Publisher, rows: &[OutboxRow]) -> usize {
    if rows.is_empty() {
        return 0;
    }
    let batch: Vec<Outgoing> = rows
        .iter()
        .map(|r| Outgoing {
            exchange: &r.message.exchange,
            routing_key: &r.message.routing_key,
            body: &r.message.body,
            mandatory: r.message.mandatory,
            headers: None,
        })
        .collect();
    let results = publisher.publish_all(&batch).await;
    let mut done = Vec::with_capacity(rows.len());
    let mut failed = 0;
    for (row, res) in rows.iter().zip(results) {
        match res {
            Ok(()) => done.push(row.id),
            Err(e) => {
                failed += 1;
                tracing::warn!(outbox_id = row.id, exchange = %row.message.exchange, key = %row.message.routing_key, error = %e, "outbox publish failed; the sweeper retries after the lease");
            }
        }
    }
    if let Err(e) = outbox::delete(pool, &done).await {
        tracing::warn!(error = %e, "outbox delete failed; rows will be published again (duplicates are ignored downstream)");
    }
    failed
}

/// Publishes what committed batches hand over, in order.
pub async fn relay(pool: PgPool, publisher: Publisher, mut rx: mpsc::Receiver<Vec<OutboxRow>>) {
    while let Some(mut rows) = rx.recv().await {
        // Coalesce what queued up meanwhile: one confirm round trip for all of it.
        while rows.len() < 4096 {
            match rx.try_recv() {
                Ok(more) => rows.extend(more),
                Err(_) => break,
            }
        }
        publish_rows(&pool, &publisher, &rows).await;
    }
}

/// Every `interval`, republishes rows whose lease expired.
pub async fn sweep(
    pool: PgPool,
    publisher: Publisher,
    interval: Duration,
    lease: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        loop {
            let rows = match outbox::claim_expired(&pool, lease, 1000).await {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::warn!(error = %e, "outbox sweep failed");
                    break;
                }
            };
            if rows.is_empty() {
                break;
            }
            tracing::info!(rows = rows.len(), "republishing outbox rows left behind");
            let n = rows.len();
            if publish_rows(&pool, &publisher, &rows).await > 0 || n < 1000 {
                break;
            }
        }
    }
}
