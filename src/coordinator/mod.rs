//! The coordinator: consumes starts, results and signals in batches; each batch is
//! one Postgres transaction (state + history + outbox), acked after commit, and its
//! outbox is published with confirms right after. Also runs the outbox sweeper, the
//! wake-up scan (delayed starts, sleeps, wait timeouts, parked retries) and the cron
//! scheduler (`crate::scheduler`).
//!
//! Crash safety, step by step: killed before commit -> nothing written, inputs
//! redelivered; after commit before ack -> inputs redelivered, the machine sees them
//! as duplicates; after ack before publish -> outbox rows stay, the sweeper publishes
//! them after the lease; after publish before delete -> published twice, the worker
//! ledger and the machine drop the duplicate.

pub mod batch;
pub mod counters;
pub mod input;
pub mod relay;

use std::sync::Arc;
use std::time::Duration;

use lapin::message::Delivery;
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::broker::publisher::dead_letter_headers;
use crate::broker::topology::{self, QueueLimits};
use crate::broker::{consumer, Names, Outgoing, PublishError, Publisher};
use crate::config::Settings;
use crate::saga::definition::Catalog;
use crate::store::StoreError;
use batch::Committed;
use input::Input;

/// Why the coordinator lost its footing; the run loop reconnects after any of these.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error("amqp: {0}")]
    Amqp(#[from] lapin::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("publish: {0}")]
    Publish(#[from] PublishError),
    #[error("consumer ended")]
    ConsumerEnded,
}

/// What a coordinator needs; cheap to clone.
#[derive(Clone)]
pub struct Coordinator {
    pub settings: Arc<Settings>,
    pub catalog: Arc<Catalog>,
    pub pool: PgPool,
    pub names: Names,
}

impl Coordinator {
    pub fn new(settings: Settings, catalog: Catalog, pool: PgPool) -> Self {
        let names = Names::new(&settings.namespace);
        Coordinator {
            settings: Arc::new(settings),
            catalog: Arc::new(catalog),
            pool,
            names,
        }
    }

    fn limits(&self) -> QueueLimits {
        QueueLimits {
            delivery_limit: self.settings.queues.delivery_limit,
            dlq_max_length: self.settings.queues.dlq_max_length,
        }
    }

    /// The cron scheduler: it shares this coordinator's pool, catalog and relay.
    fn scheduler(&self) -> crate::scheduler::Scheduler {
        crate::scheduler::Scheduler {
            pool: self.pool.clone(),
            names: self.names.clone(),
            catalog: self.catalog.clone(),
            lease: self.lease(),
            poll: Duration::from_millis(self.settings.coordinator.timer_poll_ms),
        }
    }

    fn lease(&self) -> Duration {
        Duration::from_millis(self.settings.coordinator.outbox_lease_ms)
    }

    /// Runs until `shutdown`, reconnecting with backoff after broker or database failures.
    pub async fn run(&self, shutdown: CancellationToken) {
        crate::runtime::reconnect_loop("coordinator", shutdown.clone(), || {
            self.run_connected(shutdown.clone())
        })
        .await
    }

    /// Declares the topology this coordinator's definitions need.
    pub async fn declare(&self, conn: &lapin::Connection) -> Result<(), CoordinatorError> {
        let ch = conn.create_channel().await?;
        topology::declare_exchanges(&ch, &self.names).await?;
        for activity in self.catalog.activities() {
            topology::declare_activity(&ch, &self.names, &activity, self.limits()).await?;
        }
        topology::declare_coordinator(&ch, &self.names, self.catalog.names(), self.limits())
            .await?;
        let _ = ch.close(200, "declared".into()).await;
        Ok(())
    }

    async fn run_connected(&self, shutdown: CancellationToken) -> Result<(), CoordinatorError> {
        let conn = crate::broker::connect(
            &self.settings.amqp.url,
            &format!("sagaflow-coordinator@{}", self.settings.namespace),
        )
        .await?;
        self.declare(&conn).await?;
        let relay_pub = Publisher::open(&conn).await?;
        let sweep_pub = Publisher::open(&conn).await?;
        let dead_pub = Publisher::open(&conn).await?;
        let (tx, rx) = mpsc::channel::<Vec<crate::store::outbox::OutboxRow>>(64);
        let background = shutdown.child_token();
        let _stop_background = background.clone().drop_guard();
        let c = &self.settings.coordinator;
        let delays = relay::DelayLevels::new(self.names.clone());
        tokio::spawn(relay::relay(
            self.pool.clone(),
            relay_pub,
            delays.clone(),
            rx,
        ));
        tokio::spawn(relay::sweep(
            self.pool.clone(),
            sweep_pub,
            delays,
            Duration::from_millis(c.sweep_interval_ms),
            self.lease(),
            background.clone(),
        ));
        // Several scanners share due wake-ups through SKIP LOCKED, so a burst of timers
        // falling due together is worked off on every core (Postgres and ours).
        for _ in 0..c.wake_concurrency.max(1) {
            tokio::spawn(self.clone().wake_loop(tx.clone(), background.clone()));
        }
        tokio::spawn(self.scheduler().run(tx.clone(), background.clone()));
        let (ch, mut consumer) = consumer::consume(
            &conn,
            &self.names.coordinator_queue(),
            "coordinator",
            c.prefetch,
        )
        .await?;
        tracing::info!(queue = %self.names.coordinator_queue(), sagas = ?self.catalog.names(), "coordinator consuming");
        let linger = Duration::from_millis(c.batch_linger_ms);
        loop {
            let batch = tokio::select! {
                _ = shutdown.cancelled() => break,
                b = consumer::next_batch(&mut consumer, c.batch_size, linger) => b?,
            };
            let Some(batch) = batch else {
                return Err(CoordinatorError::ConsumerEnded);
            };
            let (rows, hand_back) = self.handle_batch(&dead_pub, &batch).await?;
            for tag in hand_back {
                consumer::requeue(&ch, tag).await?;
            }
            let last = batch.last().map(|d| d.delivery_tag).unwrap_or(0);
            consumer::ack_through(&ch, last).await?;
            if !rows.is_empty() && tx.send(rows).await.is_err() {
                return Err(CoordinatorError::ConsumerEnded);
            }
        }
        let _ = conn.close(200, "shutdown".into()).await;
        Ok(())
    }

    /// Parses, commits and dead-letters one batch; returns outbox rows to publish and
    /// the delivery tags to hand back to the queue for another coordinator.
    async fn handle_batch(
        &self,
        dead_pub: &Publisher,
        batch: &[Delivery],
    ) -> Result<(Vec<crate::store::outbox::OutboxRow>, Vec<u64>), CoordinatorError> {
        let now = chrono::Utc::now();
        let mut inputs = Vec::with_capacity(batch.len());
        let mut poison = Vec::new();
        for (pos, d) in batch.iter().enumerate() {
            let message_id = d.properties.message_id().as_ref().map(|s| s.as_str());
            match input::parse(
                &self.names,
                d.exchange.as_str(),
                d.routing_key.as_str(),
                &d.data,
                message_id,
                now,
                &self.settings.limits,
            ) {
                Ok(i) => inputs.push((pos, i)),
                Err(reason) => poison.push((pos, reason)),
            }
        }
        let committed = self.commit_isolating(inputs).await?;
        poison.extend(committed.rejected.iter().cloned());
        let mut hand_back = Vec::new();
        let limit = self.settings.queues.delivery_limit;
        for (pos, reason) in &committed.unhandled {
            let d = &batch[*pos];
            if consumer::delivery_count(d) + 1 < limit {
                tracing::warn!(reason = %reason, "handing the input back for another coordinator");
                hand_back.push(d.delivery_tag);
            } else {
                poison.push((
                    *pos,
                    format!("{reason} (on every coordinator that received it)"),
                ));
            }
        }
        self.dead_letter(dead_pub, batch, &poison).await?;
        for (id, status) in &committed.finished {
            tracing::debug!(saga_id = %id, status, "saga finished");
        }
        Ok((committed.outbox, hand_back))
    }

    /// Commits the batch; on a non-transient failure, retries input by input so one
    /// bad input is dead-lettered with the error instead of blocking the others.
    async fn commit_isolating(
        &self,
        inputs: Vec<(usize, Input)>,
    ) -> Result<Committed, CoordinatorError> {
        match self.commit_retrying(inputs.clone()).await {
            Ok(c) => Ok(c),
            Err(e) if e.is_transient() || inputs.len() == 1 => Err(e.into()),
            Err(e) => {
                tracing::warn!(error = %e, "batch failed; isolating inputs");
                let mut all = Committed::default();
                for (pos, input) in inputs {
                    match self.commit_retrying(vec![(pos, input)]).await {
                        Ok(c) => {
                            all.outbox.extend(c.outbox);
                            all.rejected.extend(c.rejected);
                            all.unhandled.extend(c.unhandled);
                            all.finished.extend(c.finished);
                        }
                        Err(e) if e.is_transient() => return Err(e.into()),
                        Err(e) => all
                            .rejected
                            .push((pos, format!("coordinator could not apply it: {e}"))),
                    }
                }
                Ok(all)
            }
        }
    }

    async fn commit_retrying(&self, inputs: Vec<(usize, Input)>) -> Result<Committed, StoreError> {
        let mut tries = 0;
        loop {
            match batch::run_inputs(
                &self.pool,
                &self.names,
                &self.catalog,
                inputs.clone(),
                self.lease(),
            )
            .await
            {
                Err(e) if e.is_transient() && tries < 5 => {
                    tries += 1;
                    tracing::debug!(error = %e, tries, "transient database error; retrying batch");
                    tokio::time::sleep(Duration::from_millis(20 * tries)).await;
                }
                other => return other,
            }
        }
    }

    /// Publishes refused inputs to `<ns>.dlq.coordinator` with the reason, confirmed.
    async fn dead_letter(
        &self,
        publisher: &Publisher,
        batch: &[Delivery],
        poison: &[(usize, String)],
    ) -> Result<(), CoordinatorError> {
        if poison.is_empty() {
            return Ok(());
        }
        let dlx = self.names.dlx();
        let queue = self.names.coordinator_queue();
        let msgs: Vec<Outgoing> = poison
            .iter()
            .map(|(pos, reason)| {
                let d = &batch[*pos];
                tracing::warn!(reason = %reason, exchange = %d.exchange, routing_key = %d.routing_key, "dead-lettering coordinator input");
                Outgoing {
                    exchange: &dlx,
                    routing_key: Names::DLX_KEY_COORDINATOR,
                    body: &d.data,
                    mandatory: true,
                    headers: Some(dead_letter_headers(reason, d.exchange.as_str(), d.routing_key.as_str(), &queue)),
                }
            })
            .collect();
        publisher.publish_all_or_fail(&msgs).await?;
        Ok(())
    }

    /// Wakes due sagas every `timer_poll_ms` until `stop`.
    async fn wake_loop(
        self,
        tx: mpsc::Sender<Vec<crate::store::outbox::OutboxRow>>,
        stop: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(Duration::from_millis(
            self.settings.coordinator.timer_poll_ms,
        ));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        const LIMIT: i64 = 500;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            loop {
                match batch::run_wakeups(
                    &self.pool,
                    &self.names,
                    &self.catalog,
                    LIMIT,
                    self.lease(),
                )
                .await
                {
                    Ok((n, c)) => {
                        if !c.outbox.is_empty() && tx.send(c.outbox).await.is_err() {
                            return;
                        }
                        if n < LIMIT as usize {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "wake-up scan failed");
                        break;
                    }
                }
            }
        }
    }
}
