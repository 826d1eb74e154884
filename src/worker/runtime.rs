//! The worker pipeline: intake (batched ledger lookup) -> handlers (concurrent, each
//! bounded by start-to-close) -> completion (batched ledger write, pipelined result
//! publish with confirms, then ack). A task is acked only after its result is
//! confirmed by the broker; a completed task is never handed to its handler again.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::completion::{complete_loop, result_body, Completion};
use super::{ActivityContext, ActivityError, Worker};
use crate::broker::consumer::{DeadLetterRoute, Inbound, Intake, Settler, Verdict};
use crate::broker::topology::{self, QueueLimits};
use crate::broker::{self, Names, Outgoing, Publisher};
use crate::config::Settings;
use crate::hops::Hop;
use crate::messages::{ErrorInfo, Outcome, ResultMessage, TaskMessage};
use crate::store::ledger;
use crate::store::StoreError;

/// Why a worker connection ended; the run loop reconnects.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Broker(#[from] broker::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no handler registered for any of the configured activities")]
    NothingToDo,
    #[error("consumer ended")]
    ConsumerEnded,
}

/// A finished task waiting for its result to be recorded, published and acked.
pub(super) struct Done {
    /// The delivery (its body already parsed into `task`).
    pub msg: Inbound,
    pub task: TaskMessage,
    pub outcome: Result<Value, ErrorInfo>,
    /// The output came from the ledger: nothing to record.
    pub recorded: bool,
    /// The result's `traceparent` header: the handler run's span while spans are
    /// exported, else the task's own.
    pub traceparent: Option<String>,
}

/// How long the completion stage may take, after the handlers are done, to record,
/// publish and ack their results before the connection closes anyway.
const COMPLETION_GRACE: Duration = Duration::from_secs(10);

impl Worker {
    /// Consumes the task queues of the registered activities (or of
    /// `worker.activities` when set) until `shutdown`, reconnecting after failures.
    ///
    /// When `shutdown` fires (SIGTERM in the binary) the worker drains: it cancels
    /// its consumers so no new task starts, lets the handlers already running finish
    /// for up to `worker.drain_grace_ms`, records, publishes (with confirms) and acks
    /// their results, and only then closes the connection. Tasks that were prefetched
    /// but not started are never acked, so the broker returns them to the queue for
    /// another replica. A handler still running when the grace period ends is
    /// abandoned (stopped at its next await point): its task is not acked, the broker
    /// redelivers it, and it runs again elsewhere — which is why handlers must be
    /// idempotent (see `ActivityContext::idempotency_key`).
    ///
    /// The ledger is read and written through a small pool of its own to where `pool`
    /// connects, whose sessions plan its statements once (`store::planned_once`):
    /// every ledger plan is a lookup by key, and planning them at each execution was
    /// a sixth of the lookup and write hops at 16 sagas in flight (BENCHMARKS.md).
    pub async fn run(self, settings: Settings, pool: PgPool, shutdown: CancellationToken) {
        let pool = crate::store::planned_once(&pool, 3);
        let worker = Arc::new(self);
        let settings = Arc::new(settings);
        let health = worker.health.clone();
        crate::runtime::reconnect_loop("worker", &health, shutdown.clone(), || {
            run_connected(
                worker.clone(),
                settings.clone(),
                pool.clone(),
                shutdown.clone(),
            )
        })
        .await
    }
}

fn consumed_activities(worker: &Worker, settings: &Settings) -> Vec<String> {
    let wanted = &settings.worker.activities;
    worker
        .activities()
        .into_iter()
        .filter(|a| wanted.is_empty() || wanted.contains(a))
        .collect()
}

async fn run_connected(
    worker: Arc<Worker>,
    settings: Arc<Settings>,
    pool: PgPool,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    let activities = consumed_activities(&worker, &settings);
    if activities.is_empty() {
        return Err(WorkerError::NothingToDo);
    }
    let names = Names::new(&settings.namespace);
    let queues: Vec<(String, String)> = activities
        .iter()
        .map(|a| (names.task_queue(a), format!("worker.{a}")))
        .collect();
    let name = format!("sagaflow-worker@{}", settings.namespace);
    // A broker that hangs in the handshake or in a declaration must not hold up SIGTERM.
    let setup = async {
        let conn = broker::connect(&settings.amqp.url, &name).await?;
        declare(&conn, &names, &activities, &settings).await?;
        let publisher = Publisher::open(&conn).await?;
        let intake = Intake::open(
            &conn,
            &names,
            &queues,
            settings.worker.prefetch,
            DeadLetterRoute::Task,
        )
        .await?;
        Ok::<_, WorkerError>((conn, publisher, intake))
    };
    let (conn, publisher, mut intake) = tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        c = setup => c?,
    };
    worker.health.broker_connected();
    tracing::info!(?activities, "worker consuming");
    let (done_tx, done_rx) = mpsc::channel::<Done>(4096);
    let completer = tokio::spawn(complete_loop(
        Completion {
            health: worker.health.clone(),
            limits: settings.limits.clone(),
            pool: pool.clone(),
            publisher: publisher.clone(),
            settler: intake.settler().clone(),
            results: names.results(),
        },
        done_rx,
        shutdown.clone(),
    ));
    let (reports_tx, reports_rx) = mpsc::unbounded_channel();
    tokio::spawn(report_loop(publisher.clone(), names.results(), reports_rx));
    let session = Session {
        worker,
        pool,
        publisher,
        settler: intake.settler().clone(),
        done_tx,
        reports_tx,
        shutdown: shutdown.clone(),
    };
    let mut in_flight = tokio::task::JoinSet::new();
    let result = loop {
        let batch = tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            b = intake.next_batch(256, Duration::ZERO) => b,
        };
        let batch = match batch {
            Ok(Some(b)) => b,
            Ok(None) => break Err(WorkerError::ConsumerEnded),
            Err(e) => break Err(e.into()),
        };
        while in_flight.try_join_next().is_some() {}
        if let Err(e) = intake_batch(&session, batch, &mut in_flight).await {
            break Err(e);
        }
    };
    let tags: Vec<String> = queues.into_iter().map(|(_, tag)| tag).collect();
    intake.cancel(&tags).await;
    let grace = Duration::from_millis(settings.worker.drain_grace_ms);
    drain(in_flight, session.done_tx, completer, grace).await;
    // Closing returns every unacked delivery (prefetched, never started) to its queue.
    conn.close("worker stopping").await;
    result
}

async fn declare(
    conn: &broker::Connection,
    names: &Names,
    activities: &[String],
    settings: &Settings,
) -> broker::Result<()> {
    let limits = QueueLimits {
        delivery_limit: settings.queues.delivery_limit,
        dlq_max_length: settings.queues.dlq_max_length,
    };
    topology::declare_worker(conn, names, activities, limits).await
}

/// What the intake stage of one connection works with.
struct Session {
    worker: Arc<Worker>,
    pool: PgPool,
    publisher: Publisher,
    settler: Settler,
    done_tx: mpsc::Sender<Done>,
    /// `started` and heartbeat reports.
    reports_tx: mpsc::UnboundedSender<super::Report>,
    shutdown: CancellationToken,
}

/// Parses a batch, dead-letters what cannot be run here, answers tasks already in the
/// ledger and starts handlers for the rest. While the ledger is unreachable it holds
/// the batch (a handed-back task would lose a delivery attempt).
async fn intake_batch(
    s: &Session,
    batch: Vec<Inbound>,
    in_flight: &mut tokio::task::JoinSet<()>,
) -> Result<(), WorkerError> {
    let worker = &s.worker;
    let mut tasks = Vec::with_capacity(batch.len());
    let (mut refused, mut reasons) = (Vec::new(), Vec::new());
    for mut d in batch {
        let reason = match serde_json::from_slice::<TaskMessage>(&d.body) {
            Ok(t) if worker.handler(&t.activity).is_some() => {
                d.body = Vec::new();
                tasks.push((d, t));
                continue;
            }
            Ok(t) => format!("no handler for activity `{}` on this worker", t.activity),
            Err(e) => format!("task body: {e}"),
        };
        refused.push(d);
        reasons.push(Verdict::DeadLetter(reason));
    }
    if !refused.is_empty() {
        s.settler.settle(&s.publisher, &refused, &reasons).await?;
    }
    let keys: Vec<String> = tasks
        .iter()
        .map(|(_, t)| t.idempotency_key.clone())
        .collect();
    let lookup_began = std::time::Instant::now();
    let looked_up = crate::runtime::outlast(
        "worker ledger lookup",
        &s.worker.health,
        &s.shutdown,
        StoreError::is_transient,
        || ledger::lookup(&s.pool, &keys),
    )
    .await;
    // Shutdown while the database was away: the tasks stay unacked and go back.
    let Some(recorded) = looked_up else {
        return Ok(());
    };
    let recorded = recorded?;
    s.worker
        .health
        .hop(Hop::LedgerLookup, lookup_began.elapsed());
    for (msg, task) in tasks {
        let traceparent = msg.traceparent();
        if let Some(output) = recorded.get(&task.idempotency_key) {
            tracing::debug!(key = %task.idempotency_key, "task already completed: answering from the ledger");
            let _ = s
                .done_tx
                .send(Done {
                    msg,
                    task,
                    outcome: Ok(output.clone()),
                    recorded: true,
                    traceparent,
                })
                .await;
            continue;
        }
        let Some(handler) = worker.handler(&task.activity) else {
            continue; // checked above
        };
        let done_tx = s.done_tx.clone();
        // The handler run's span: a child of the task's trace context when spans are
        // exported; what it causes (its reports and result) names it as their parent.
        let span = task_span(&task);
        crate::telemetry::set_parent(&span, traceparent.as_deref());
        let traceparent = crate::telemetry::traceparent_of(&span).or(traceparent);
        let reporter = task
            .reports_progress()
            .then(|| super::Reporter::new(s.reports_tx.clone(), &task, traceparent.clone()));
        if task.reports_progress() {
            let started = ResultMessage::report(&task, Outcome::Started, None);
            let _ = s
                .reports_tx
                .send((task.reply_to.clone(), started, traceparent.clone()));
        }
        let health = s.worker.health.clone();
        in_flight.spawn(
            async move {
                let began = std::time::Instant::now();
                let outcome = execute(handler, &task, reporter).await;
                health.hop(Hop::Handler, began.elapsed());
                let span = tracing::Span::current();
                match &outcome {
                    Ok(_) => {
                        span.record("saga.outcome", "ok");
                    }
                    Err(e) => {
                        span.record("saga.outcome", "error");
                        span.record("error.code", e.code.as_str());
                        span.record("error.retryable", e.retryable);
                        span.record("otel.status_code", "ERROR");
                        tracing::info!(code = %e.code, retryable = e.retryable, "attempt failed");
                    }
                }
                let _ = done_tx
                    .send(Done {
                        msg,
                        task,
                        outcome,
                        recorded: false,
                        traceparent,
                    })
                    .await;
            }
            .instrument(span),
        );
    }
    Ok(())
}

/// The span of one handler run (docs/operations.md, "Tracing": the `saga.*`
/// attribute names the coordinator's `saga.step` span uses too).
fn task_span(task: &TaskMessage) -> tracing::Span {
    tracing::info_span!(
        "task",
        otel.name = %format!("{} {}", task.activity, task.kind.as_str()),
        saga.id = %task.saga_id,
        saga.name = %task.saga,
        saga.step = %task.step,
        saga.element = task.index.map(i64::from),
        saga.activity = %task.activity,
        saga.task.kind = task.kind.as_str(),
        saga.task.id = %task.task_id,
        saga.attempt = i64::from(task.attempt),
        saga.outcome = tracing::field::Empty,
        error.code = tracing::field::Empty,
        error.retryable = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    )
}

/// Runs one handler, enforcing schedule-to-start and start-to-close and turning a
/// panic into a retryable error.
async fn execute(
    handler: super::Handler,
    task: &TaskMessage,
    reporter: Option<super::Reporter>,
) -> Result<Value, ErrorInfo> {
    if let Some(deadline) = task.deadlines.schedule_to_start {
        if chrono::Utc::now() > deadline {
            return Err(ActivityError::retryable(
                "timeout.schedule_to_start",
                "the task waited in the queue past its schedule-to-start deadline",
            )
            .into_info());
        }
    }
    let limit = Duration::from_millis(task.deadlines.start_to_close_ms.max(1));
    let mut ctx = ActivityContext::from_task(task);
    if let Some(r) = reporter {
        ctx = ctx.with_reporter(r);
    }
    let fut = handler(ctx, task.input.clone());
    let mut handle = tokio::spawn(fut);
    // When this attempt is abandoned (drain grace over), stop the handler with it.
    let _abort = AbortOnDrop(handle.abort_handle());
    let joined = tokio::time::timeout(limit, &mut handle).await;
    if joined.is_err() {
        // Stop the handler at its next await point so it cannot overlap the next attempt.
        handle.abort();
    }
    match joined {
        Err(_) => Err(ActivityError::retryable(
            "timeout.start_to_close",
            format!("the handler ran longer than {} ms", limit.as_millis()),
        )
        .into_info()),
        Ok(Err(join)) => Err(ActivityError::retryable(
            "panic",
            format!("the handler panicked: {join}"),
        )
        .into_info()),
        Ok(Ok(r)) => r.map_err(ActivityError::into_info),
    }
}

/// Aborts a spawned handler when dropped, so an abandoned attempt does not keep running.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Publishes `started` and heartbeat reports. They are hints that move deadlines: a
/// lost one can only make a timeout fire early, never lose a result.
async fn report_loop(
    publisher: Publisher,
    exchange: String,
    mut rx: mpsc::UnboundedReceiver<super::Report>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let bodies: Vec<Vec<u8>> = batch.iter().map(|(_, r, _)| result_body(r)).collect();
        let msgs: Vec<Outgoing> = batch
            .iter()
            .zip(&bodies)
            .map(|((key, _, traceparent), body)| Outgoing {
                exchange: &exchange,
                routing_key: key,
                body,
                mandatory: true,
                headers: broker::trace_headers(traceparent.as_deref()),
            })
            .collect();
        for r in publisher.publish_all(&msgs).await {
            if let Err(e) = r {
                tracing::warn!(error = %e, "progress report not delivered");
            }
        }
    }
}

/// Lets in-flight tasks finish within `grace` (intake has stopped), then waits for the
/// completion stage to publish and ack their results. Handlers still running when the
/// grace period ends are aborted and their tasks left unacked, so they are redelivered.
async fn drain(
    mut in_flight: tokio::task::JoinSet<()>,
    done_tx: mpsc::Sender<Done>,
    completer: tokio::task::JoinHandle<u64>,
    grace: Duration,
) {
    tracing::info!(
        running = in_flight.len(),
        grace_ms = grace.as_millis() as u64,
        "worker draining: no new tasks, waiting for running handlers"
    );
    let waited = tokio::time::timeout(grace, async {
        while in_flight.join_next().await.is_some() {}
    })
    .await;
    let abandoned = in_flight.len();
    if waited.is_err() {
        tracing::warn!(
            abandoned,
            "drain grace period over; unfinished tasks will be redelivered"
        );
        in_flight.abort_all();
        // Wait for the aborted tasks to go, so their result senders are dropped.
        while in_flight.join_next().await.is_some() {}
    }
    drop(done_tx);
    match tokio::time::timeout(COMPLETION_GRACE, completer).await {
        Ok(Ok(acked)) => tracing::info!(
            acked,
            abandoned,
            "worker drained: finished tasks published and acked"
        ),
        Ok(Err(e)) => tracing::warn!(error = %e, "completion stage failed while draining"),
        Err(_) => tracing::warn!(
            "completion stage did not finish in time; unacked tasks will be redelivered"
        ),
    }
}
