//! Publishing the outbox: rows handed over right after commit, and a sweeper that
//! republishes rows whose lease ran out (their coordinator crashed or lost the broker).
//! A row is deleted only after the broker confirmed it, so a crash anywhere here
//! leads to a second publish, never to a lost message; consumers drop the duplicate.

use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use crate::broker::publisher::CONFIRM_TIMEOUT;
use crate::broker::{self, topology};
use crate::broker::{Names, Outgoing, Publisher};
use crate::health::Health;
use crate::hops::Hop;
use crate::store::outbox::{self, OutboxRow};

/// The delay levels declared on this connection: those of the loaded retry policies
/// at start (`topology::declare_coordinator`), any other on first use.
#[derive(Clone)]
pub struct DelayLevels {
    names: Names,
    declared: Arc<Mutex<HashSet<u64>>>,
}

impl DelayLevels {
    pub fn new(names: Names, declared: impl IntoIterator<Item = u64>) -> Self {
        DelayLevels {
            names,
            declared: Arc::new(Mutex::new(declared.into_iter().collect())),
        }
    }

    /// Declares the delay levels `rows` go through that this connection has not declared yet.
    async fn ensure(&self, publisher: &Publisher, rows: &[OutboxRow]) -> broker::Result<()> {
        for row in rows {
            let Some(ms) = self.names.delay_level_of(&row.message.exchange) else {
                continue;
            };
            if self
                .declared
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&ms)
            {
                continue;
            }
            topology::declare_delay_level(publisher, &self.names, ms).await?;
            self.declared
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(ms);
        }
        Ok(())
    }
}

/// A publish or declaration that did not finish within [`CONFIRM_TIMEOUT`]: the
/// loop ends, its supervisor rebuilds the connection, the rows stay for the sweeper.
#[derive(Debug)]
pub struct Wedged;

/// What one publish of outbox rows achieved.
#[derive(Debug, Default)]
struct Published {
    /// Rows the broker confirmed: to delete.
    confirmed: Vec<i64>,
    /// Rows it did not: left for the sweeper after their lease.
    failed: usize,
}

/// [`publish_rows`], bounded by [`CONFIRM_TIMEOUT`] (declarations included).
async fn publish_bounded(
    publisher: &Publisher,
    delays: &DelayLevels,
    rows: &[OutboxRow],
) -> Result<Published, Wedged> {
    let bounded = tokio::time::timeout(CONFIRM_TIMEOUT, publish_rows(publisher, delays, rows));
    match bounded.await {
        Ok(published) => Ok(published),
        Err(_) => {
            tracing::warn!(rows = rows.len(), "outbox publish did not finish within {CONFIRM_TIMEOUT:?}; reconnecting (the sweeper publishes the rows after their lease)");
            Err(Wedged)
        }
    }
}

/// Publishes `rows` with confirms.
async fn publish_rows(
    publisher: &Publisher,
    delays: &DelayLevels,
    rows: &[OutboxRow],
) -> Published {
    if rows.is_empty() {
        return Published::default();
    }
    if let Err(e) = delays.ensure(publisher, rows).await {
        tracing::warn!(error = %e, "declaring a delay level failed; the sweeper retries after the lease");
        return Published {
            confirmed: vec![],
            failed: rows.len(),
        };
    }
    let batch: Vec<Outgoing> = rows
        .iter()
        .map(|r| Outgoing {
            exchange: &r.message.exchange,
            routing_key: &r.message.routing_key,
            body: &r.message.body,
            mandatory: r.message.mandatory,
            headers: broker::trace_headers(r.message.traceparent.as_deref()),
        })
        .collect();
    let results = publisher.publish_all(&batch).await;
    let mut published = Published {
        confirmed: Vec::with_capacity(rows.len()),
        failed: 0,
    };
    for (row, res) in rows.iter().zip(results) {
        match res {
            Ok(()) => published.confirmed.push(row.id),
            Err(e) => {
                published.failed += 1;
                tracing::warn!(outbox_id = row.id, exchange = %row.message.exchange, key = %row.message.routing_key, error = %e, "outbox publish failed; the sweeper retries after the lease");
            }
        }
    }
    published
}

/// Deletes confirmed rows. A failure only means they are published again.
async fn delete_confirmed(pool: &PgPool, ids: &[i64]) {
    if let Err(e) = outbox::delete(pool, ids).await {
        tracing::warn!(error = %e, "outbox delete failed; rows will be published again (duplicates are ignored downstream)");
    }
}

/// Publishes what committed batches hand over, in order. The delete of a batch's
/// confirmed rows runs while the next batch is published (at most one delete in
/// flight), so no saga's next message waits for the previous one's bookkeeping.
pub async fn relay(
    pool: PgPool,
    publisher: Publisher,
    delays: DelayLevels,
    mut rx: mpsc::Receiver<Vec<OutboxRow>>,
    health: Health,
) {
    let mut deleting: Option<tokio::task::JoinHandle<()>> = None;
    while let Some(mut rows) = rx.recv().await {
        let since = Instant::now();
        // Coalesce what queued up meanwhile: one confirm round trip for all of it.
        while rows.len() < 4096 {
            match rx.try_recv() {
                Ok(more) => rows.extend(more),
                Err(_) => break,
            }
        }
        let Ok(published) = publish_bounded(&publisher, &delays, &rows).await else {
            break;
        };
        health.hop(Hop::OutboxPublish, since.elapsed());
        if let Some(previous) = deleting.take() {
            let _ = previous.await;
        }
        let pool = pool.clone();
        deleting = Some(tokio::spawn(async move {
            delete_confirmed(&pool, &published.confirmed).await;
        }));
    }
    if let Some(last) = deleting {
        let _ = last.await;
    }
}

/// Every `interval`, republishes rows whose lease expired.
pub async fn sweep(
    pool: PgPool,
    publisher: Publisher,
    delays: DelayLevels,
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
            let Ok(published) = publish_bounded(&publisher, &delays, &rows).await else {
                return;
            };
            delete_confirmed(&pool, &published.confirmed).await;
            if published.failed > 0 || n < 1000 {
                break;
            }
        }
    }
}
