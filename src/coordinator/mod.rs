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
pub mod dead_task;
pub mod id_reuse;
pub mod input;
mod outbox_messages;
pub mod reconcile;
pub mod relay;
pub mod retention;
mod spans;
pub mod state_cache;
pub mod versions;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::broker::consumer::{DeadLetterRoute, Inbound, Intake, Verdict};
use crate::broker::topology::{self, QueueLimits};
use crate::broker::{self, Names, Publisher};
use crate::config::Settings;
use crate::health::Health;
use crate::hops::Hop;
use crate::runtime::Supervised;
use crate::saga::definition::Catalog;
use crate::saga::state::SagaState;
use crate::store::StoreError;
use batch::Committed;
use input::Input;
use state_cache::StateCache;

/// Why the coordinator lost its footing; the run loop reconnects after any of these.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error(transparent)]
    Broker(#[from] broker::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("consumer ended")]
    ConsumerEnded,
    #[error("the {0} stopped; restarting the coordinator's loops")]
    LoopStopped(&'static str),
}

/// What a coordinator needs; cheap to clone.
#[derive(Clone)]
pub struct Coordinator {
    pub settings: Arc<Settings>,
    pub catalog: Arc<Catalog>,
    pub pool: PgPool,
    pub names: Names,
    /// What this coordinator's probes report.
    pub health: Health,
    /// The states it committed last (shared by its loops; never held across an await).
    cache: Arc<Mutex<StateCache>>,
    /// Where a small batch without a lock is written: sessions that plan the batch
    /// statement once (`store::planned_once`).
    small_batches: PgPool,
}

/// The most inputs a batch may have to be written through `small_batches`. The
/// statement planned once saves about 0.45 ms of planning a batch, and its nested
/// loops cost more than planning as the batch grows: at 256 inputs (a burst) 75 ms
/// instead of 15, at 64 no more than planning (BENCHMARKS.md, "Small batches planned
/// once").
const SMALL_BATCH: usize = 64;

impl Coordinator {
    pub fn new(settings: Settings, catalog: Catalog, pool: PgPool) -> Self {
        let names = Names::new(&settings.namespace);
        let cache = StateCache::new(settings.coordinator.state_cache_sagas);
        let small_batches = crate::store::planned_once(&pool, 2);
        Coordinator {
            small_batches,
            cache: Arc::new(Mutex::new(cache)),
            settings: Arc::new(settings),
            catalog: Arc::new(catalog),
            pool,
            names,
            health: Health::new("coordinator"),
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
    /// The unloaded-version check runs beside it, connected to the broker or not.
    pub async fn run(&self, shutdown: CancellationToken) {
        let stop_check = shutdown.child_token();
        let check = versions::run(
            self.pool.clone(),
            self.catalog.clone(),
            self.health.clone(),
            Duration::from_millis(self.settings.coordinator.reconcile_interval_ms),
            stop_check.clone(),
        );
        let consume = async {
            crate::runtime::reconnect_loop("coordinator", &self.health, shutdown.clone(), || {
                self.run_connected(shutdown.clone())
            })
            .await;
            stop_check.cancel();
        };
        tokio::join!(check, consume);
    }

    /// The broker delay levels the loaded definitions' retry policies use.
    fn delay_levels(&self) -> std::collections::BTreeSet<u64> {
        topology::delay_levels_for(self.catalog.retry_waits())
    }

    /// Declares the topology this coordinator's definitions need.
    pub async fn declare(&self, conn: &broker::Connection) -> broker::Result<()> {
        topology::declare_coordinator(
            conn,
            &self.names,
            self.catalog.names().into_iter().collect(),
            self.catalog.activities().into_iter().collect(),
            &self.delay_levels(),
            self.limits(),
        )
        .await
    }

    async fn run_connected(&self, shutdown: CancellationToken) -> Result<(), CoordinatorError> {
        let name = format!("sagaflow-coordinator@{}", self.settings.namespace);
        // A broker that hangs in the handshake or in a declaration must not hold up SIGTERM.
        let setup = async {
            let conn = broker::connect(&self.settings.amqp.url, &name).await?;
            self.declare(&conn).await?;
            let publishers = [
                Publisher::open(&conn).await?,
                Publisher::open(&conn).await?,
                Publisher::open(&conn).await?,
            ];
            Ok::<_, CoordinatorError>((conn, publishers))
        };
        let (conn, [relay_pub, sweep_pub, dead_pub]) = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            c = setup => c?,
        };
        let (tx, rx) = mpsc::channel::<Vec<crate::store::outbox::OutboxRow>>(64);
        let background = shutdown.child_token();
        let _stop_background = background.clone().drop_guard();
        let c = &self.settings.coordinator;
        let delays = relay::DelayLevels::new(self.names.clone(), self.delay_levels());
        let mut loops = Supervised::new(background.clone());
        loops.spawn(
            "outbox relay",
            relay::relay(
                self.pool.clone(),
                relay_pub,
                delays.clone(),
                rx,
                self.health.clone(),
            ),
        );
        loops.spawn(
            "outbox sweeper",
            relay::sweep(
                self.pool.clone(),
                sweep_pub,
                delays,
                Duration::from_millis(c.sweep_interval_ms),
                self.lease(),
                background.clone(),
            ),
        );
        // Several scanners share due wake-ups through SKIP LOCKED, so a burst of timers
        // falling due together is worked off on every core (Postgres and ours).
        for _ in 0..c.wake_concurrency.max(1) {
            loops.spawn(
                "wake-up scanner",
                self.clone().wake_loop(tx.clone(), background.clone()),
            );
        }
        loops.spawn(
            "stuck-saga reconciler",
            reconcile::run(
                self.pool.clone(),
                Duration::from_millis(c.reconcile_interval_ms),
                Duration::from_millis(c.stuck_after_ms),
                background.clone(),
            ),
        );
        loops.spawn(
            "retention purge",
            retention::run(
                self.pool.clone(),
                self.catalog.clone(),
                self.settings.retention.clone(),
                background.clone(),
            ),
        );
        loops.spawn(
            "cron scheduler",
            self.scheduler().run(tx.clone(), background.clone()),
        );
        let queue = [(self.names.coordinator_queue(), "coordinator".to_string())];
        let open = Intake::open(
            &conn,
            &self.names,
            &queue,
            c.prefetch,
            DeadLetterRoute::Coordinator,
        );
        let mut intake = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            i = open => i?,
        };
        self.health.broker_connected();
        tracing::info!(queue = %self.names.coordinator_queue(), sagas = ?self.catalog.names(), "coordinator consuming");
        let linger = Duration::from_millis(c.batch_linger_ms);
        loop {
            let batch = tokio::select! {
                _ = shutdown.cancelled() => break,
                stopped = loops.stopped() => return Err(CoordinatorError::LoopStopped(stopped)),
                b = intake.next_batch(c.batch_size, linger) => b?,
            };
            let Some(batch) = batch else {
                return Err(CoordinatorError::ConsumerEnded);
            };
            let taken = std::time::Instant::now();
            let Some((rows, verdicts)) = self.handle_batch(&batch, &shutdown).await else {
                break; // shutdown while the database was away: the broker keeps the batch
            };
            self.health.hop(Hop::CoordinatorCommit, taken.elapsed());
            // Rows to the relay first: its publish need not wait for the acks.
            if !rows.is_empty() && tx.send(rows).await.is_err() {
                return Err(CoordinatorError::ConsumerEnded);
            }
            intake
                .settler()
                .settle(&dead_pub, &batch, &verdicts)
                .await?;
        }
        conn.close("shutdown").await;
        Ok(())
    }

    /// Parses and commits one batch; returns the outbox rows to publish and one
    /// verdict per delivery. While the database is unreachable it keeps the batch and
    /// tries again (`None` when `shutdown` fires meanwhile): handing the batch back
    /// would raise every message's delivery count and, over a long outage, push
    /// healthy inputs into the dead-letter queue.
    async fn handle_batch(
        &self,
        batch: &[Inbound],
        shutdown: &CancellationToken,
    ) -> Option<(Vec<crate::store::outbox::OutboxRow>, Vec<Verdict>)> {
        let now = chrono::Utc::now();
        let mut verdicts = vec![Verdict::Ack; batch.len()];
        let mut inputs = Vec::with_capacity(batch.len());
        for (pos, d) in batch.iter().enumerate() {
            match self.parse(d, now) {
                Ok(i) => inputs.push((pos, i)),
                Err(reason) => verdicts[pos] = Verdict::DeadLetter(reason),
            }
        }
        let (mut committed, inputs) = self.commit_cached(inputs).await;
        if !inputs.is_empty() {
            let locked = inputs.len();
            committed.extend(self.commit_until_applied(inputs, shutdown).await?);
            self.health.inputs_applied(false, locked);
        }
        self.remember(std::mem::take(&mut committed.states));
        committed.emit_spans();
        for (pos, reason) in committed.rejected {
            verdicts[pos] = Verdict::DeadLetter(reason);
        }
        let limit = self.settings.queues.delivery_limit;
        for (pos, reason) in committed.unhandled {
            verdicts[pos] = if batch[pos].delivery_count + 1 < limit {
                tracing::warn!(reason = %reason, "handing the input back for another coordinator");
                Verdict::HandBack
            } else {
                Verdict::DeadLetter(format!("{reason} (on every coordinator that received it)"))
            };
        }
        for (id, status) in &committed.finished {
            tracing::debug!(saga_id = %id, status, "saga finished");
        }
        Some((committed.outbox, verdicts))
    }

    /// One delivery as an input: a dead-lettered task is a failed attempt.
    fn parse(&self, d: &Inbound, now: chrono::DateTime<chrono::Utc>) -> Result<Input, String> {
        if d.exchange == self.names.dlx() {
            return dead_task::parse(&d.routing_key, &d.body, d.dead_letter_reason());
        }
        let mut input = input::parse(
            &self.names,
            &d.exchange,
            &d.routing_key,
            &d.body,
            d.message_id.as_deref(),
            now,
            &self.settings.limits,
        )?;
        if let Input::Start { traceparent, .. } = &mut input {
            *traceparent = d.traceparent();
        }
        Ok(input)
    }

    /// Applies what it can of the batch from cached states (see `batch::run_cached`);
    /// returns what that committed and the inputs left to run under lock.
    async fn commit_cached(&self, inputs: Vec<(usize, Input)>) -> (Committed, Vec<(usize, Input)>) {
        if self.settings.coordinator.state_cache_sagas == 0 || inputs.is_empty() {
            return (Committed::default(), inputs);
        }
        let n = inputs.len();
        let pool = if n <= SMALL_BATCH {
            &self.small_batches
        } else {
            &self.pool
        };
        let run = batch::run_cached(
            pool,
            &self.names,
            &self.catalog,
            inputs,
            self.lease(),
            chrono::Utc::now(),
            &self.cache,
        )
        .await;
        match run {
            Ok(run) => {
                self.health.inputs_applied(true, n - run.rest.len());
                (run.committed, run.rest)
            }
            Err((e, rest)) => {
                tracing::debug!(error = %e, "write from cached states failed; the batch runs under lock");
                (Committed::default(), rest)
            }
        }
    }

    /// Keeps committed states for the next batch (only ever after their commit).
    fn remember(&self, states: Vec<(SagaState, crate::store::sagas::Fence)>) {
        if let Ok(mut cache) = self.cache.lock() {
            for (state, version) in states {
                cache.put(state, version);
            }
        }
    }

    /// Commits the batch, waiting out database outages with backoff until it is
    /// applied or `shutdown` fires.
    async fn commit_until_applied(
        &self,
        inputs: Vec<(usize, Input)>,
        shutdown: &CancellationToken,
    ) -> Option<Committed> {
        let outcome = crate::runtime::outlast(
            "coordinator batch",
            &self.health,
            shutdown,
            |_| true,
            || self.commit_isolating(inputs.clone()),
        )
        .await;
        // `commit_isolating` fails only with a transient error, which `outlast` retries.
        outcome.and_then(Result::ok)
    }

    /// Commits the batch; on a permanent failure, retries input by input so one bad
    /// input is dead-lettered with the error instead of blocking the others. Fails only
    /// with a transient error (the database is unreachable or busy).
    async fn commit_isolating(&self, inputs: Vec<(usize, Input)>) -> Result<Committed, StoreError> {
        let e = match self.commit_retrying(inputs.clone()).await {
            Ok(c) => return Ok(c),
            Err(e) if e.is_transient() => return Err(e),
            Err(e) => e,
        };
        if inputs.len() == 1 {
            let pos = inputs[0].0;
            let mut refused = Committed::default();
            refused
                .rejected
                .push((pos, format!("coordinator could not apply it: {e}")));
            return Ok(refused);
        }
        tracing::warn!(error = %e, "batch failed; isolating inputs");
        let mut all = Committed::default();
        for input in inputs {
            all.extend(Box::pin(self.commit_isolating(vec![input])).await?);
        }
        Ok(all)
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
                chrono::Utc::now(),
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
                    chrono::Utc::now(),
                )
                .await
                {
                    Ok((n, mut c)) => {
                        self.health.database_available();
                        self.remember(std::mem::take(&mut c.states));
                        c.emit_spans();
                        if !c.outbox.is_empty() && tx.send(c.outbox).await.is_err() {
                            return;
                        }
                        if n < LIMIT as usize {
                            break;
                        }
                    }
                    Err(e) => {
                        if e.is_outage() {
                            self.health.database_unavailable(&e.to_string());
                        }
                        tracing::warn!(error = %e, "wake-up scan failed");
                        break;
                    }
                }
            }
        }
    }
}
