//! The worker's completion stage: finished tasks are recorded in the ledger (waiting
//! out database outages), their results published with confirms, and only then are
//! their tasks acked (results the broker refuses for now are published again, their
//! tasks held meanwhile). A result the coordinator would refuse, or one the ledger
//! cannot store, fails its attempt here instead of stranding the task.

use std::collections::HashMap;

use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::runtime::{Done, WorkerError};
use crate::broker::consumer::{Inbound, Settler, Verdict};
use crate::broker::{Outgoing, PublishError, Publisher};
use crate::hops::Hop;
use crate::messages::{Outcome, ResultMessage};
use crate::store::ledger::{self, Completion as LedgerEntry};
use crate::store::StoreError;
use crate::worker::ActivityError;

/// What the completion stage works with.
pub(super) struct Completion {
    pub health: crate::health::Health,
    pub limits: crate::config::Limits,
    pub pool: PgPool,
    pub publisher: Publisher,
    pub settler: Settler,
    pub results: String,
}

/// Records, publishes and acks finished tasks in batches until every sender is gone;
/// returns how many tasks it acked.
pub(super) async fn complete_loop(
    c: Completion,
    mut rx: mpsc::Receiver<Done>,
    shutdown: CancellationToken,
) -> u64 {
    let mut acked = 0;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < 512 {
            match rx.try_recv() {
                Ok(d) => batch.push(d),
                Err(_) => break,
            }
        }
        match complete(&c, batch, &shutdown).await {
            Ok(n) => acked += n,
            // Only the broker can fail here (the ledger waits out outages): the channel
            // is gone, its tasks are redelivered and the ledger answers those that
            // completed.
            Err(e) => tracing::warn!(error = %e, "completing tasks failed"),
        }
    }
    acked
}

/// Records the successful outputs in the ledger (waiting out database outages), then
/// publishes every result with confirms and acks its task. A result the broker
/// refuses or does not confirm is published again while its task is held; a task
/// whose result fails for good (returned, channel closed) or is still held at
/// shutdown is handed back.
async fn complete(
    c: &Completion,
    mut batch: Vec<Done>,
    shutdown: &CancellationToken,
) -> Result<u64, WorkerError> {
    refuse_over_limit(&c.limits, &mut batch);
    let began = std::time::Instant::now();
    let Some(()) = record(c, &mut batch, shutdown).await else {
        return Ok(0); // shutdown while the database was away: redelivered, run again
    };
    c.health.hop(Hop::LedgerWrite, began.elapsed());
    let began = std::time::Instant::now();
    let bodies: Vec<Vec<u8>> = batch
        .iter()
        .map(|d| result_body(&result_message(d)))
        .collect();
    let msgs: Vec<Outgoing> = batch
        .iter()
        .zip(&bodies)
        .map(|(d, body)| Outgoing {
            exchange: &c.results,
            routing_key: &d.task.reply_to,
            body,
            mandatory: true,
            headers: crate::broker::trace_headers(d.traceparent.as_deref()),
        })
        .collect();
    let confirmed = publish_holding(c, &msgs, shutdown).await;
    c.health.hop(Hop::ResultPublish, began.elapsed());
    let verdicts: Vec<Verdict> = batch
        .iter()
        .zip(confirmed)
        .map(|(d, res)| match res {
            Ok(()) => Verdict::Ack,
            Err(e) => {
                tracing::warn!(task_id = %d.task.task_id, error = %e, "result not confirmed; task handed back");
                Verdict::HandBack
            }
        })
        .collect();
    let acked = verdicts.iter().filter(|v| **v == Verdict::Ack).count() as u64;
    let msgs: Vec<Inbound> = batch.into_iter().map(|d| d.msg).collect();
    c.settler.settle(&c.publisher, &msgs, &verdicts).await?;
    Ok(acked)
}

/// Publishes `msgs` with confirms, publishing again those the broker refused or did
/// not confirm for now ([`PublishError::is_transient`]), backing off as a database
/// outage is waited out (`runtime::holding_backoff`), until each is confirmed, fails
/// for good, or `shutdown` fires.
///
/// The tasks stay unacked meanwhile, as through a database outage: handing one back
/// would cost it a delivery attempt, and a coordinator queue that refuses results for
/// longer than a few redeliveries (a quorum queue without a leader for minutes, one
/// at a length limit) would otherwise push completed tasks into the dead-letter queue
/// and their sagas into a retry or a compensation they do not need. A result published
/// twice (a confirm lost, not the message) is absorbed by the coordinator as a
/// duplicate. `/readyz` names the wait while it lasts.
async fn publish_holding(
    c: &Completion,
    msgs: &[Outgoing<'_>],
    shutdown: &CancellationToken,
) -> Vec<Result<(), PublishError>> {
    let mut results = c.publisher.publish_all(msgs).await;
    let mut waits = crate::runtime::holding_backoff();
    let since = std::time::Instant::now();
    loop {
        let held: Vec<usize> = (0..results.len())
            .filter(|i| results[*i].as_ref().is_err_and(PublishError::is_transient))
            .collect();
        let Some(first) = held.first() else {
            break;
        };
        let why = format!(
            "{} results not taken by the broker: {}",
            held.len(),
            error_of(&results[*first])
        );
        let wait = waits.next().unwrap_or(std::time::Duration::from_secs(5));
        c.health.results_held(Some(&why));
        tracing::warn!(
            waiting_ms = since.elapsed().as_millis() as u64,
            retry_in_ms = wait.as_millis() as u64,
            "{why}; holding their tasks"
        );
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
        let again: Vec<Outgoing> = held.iter().map(|i| msgs[*i].clone()).collect();
        for (i, r) in held.into_iter().zip(c.publisher.publish_all(&again).await) {
            results[i] = r;
        }
    }
    if c.health.results_held(None) {
        tracing::info!(
            waited_ms = since.elapsed().as_millis() as u64,
            "results taken by the broker again"
        );
    }
    results
}

fn error_of(r: &Result<(), PublishError>) -> String {
    r.as_ref()
        .err()
        .map(ToString::to_string)
        .unwrap_or_default()
}

/// A handler output the coordinator would refuse (over `limits.payload_bytes` or
/// `limits.json_depth`) fails its attempt here, with the limit named, instead of
/// being published, dead-lettered and leaving the saga to its no-answer deadline.
fn refuse_over_limit(limits: &crate::config::Limits, batch: &mut [Done]) {
    for d in batch.iter_mut().filter(|d| !d.recorded) {
        let Ok(output) = &d.outcome else {
            continue;
        };
        let checked = limits
            .check_payload("result output", output)
            .and_then(|()| {
                limits.check_depth(
                    "result output",
                    &serde_json::to_vec(output).unwrap_or_default(),
                )
            });
        if let Err(e) = checked {
            tracing::warn!(task_id = %d.task.task_id, error = %e, "handler output over a limit; failing the attempt");
            d.outcome = Err(ActivityError::fatal("result_over_limit", e.to_string()).into_info());
        }
    }
}

/// Writes the batch's new successful outputs to the ledger and swaps in what the
/// ledger holds (an earlier attempt may have recorded first). An output the ledger
/// refuses for good (e.g. text Postgres cannot store) fails its attempt with
/// `result_unrecordable` instead of stranding the task. `None` on shutdown.
async fn record(c: &Completion, batch: &mut [Done], shutdown: &CancellationToken) -> Option<()> {
    let pool = &c.pool;
    let pending: Vec<usize> = (0..batch.len())
        .filter(|i| batch[*i].outcome.is_ok() && !batch[*i].recorded)
        .collect();
    let all = completions(batch, &pending);
    let written = crate::runtime::outlast(
        "worker ledger write",
        &c.health,
        shutdown,
        StoreError::is_transient,
        || ledger::record(pool, &all),
    )
    .await?;
    let stored = match written {
        Ok(stored) => stored,
        Err(e) => {
            tracing::warn!(error = %e, "ledger write refused; recording task by task");
            let mut stored = HashMap::new();
            for i in &pending {
                let one = completions(batch, &[*i]);
                let r = crate::runtime::outlast(
                    "worker ledger write",
                    &c.health,
                    shutdown,
                    StoreError::is_transient,
                    || ledger::record(pool, &one),
                )
                .await?;
                match r {
                    Ok(s) => stored.extend(s),
                    Err(e) => {
                        batch[*i].outcome = Err(ActivityError::fatal(
                            "result_unrecordable",
                            format!("the worker could not record the handler's output: {e}"),
                        )
                        .into_info())
                    }
                }
            }
            stored
        }
    };
    for i in pending {
        let d = &mut batch[i];
        if let (Ok(_), Some(s)) = (&d.outcome, stored.get(&d.task.idempotency_key)) {
            d.outcome = Ok(s.clone());
        }
    }
    Some(())
}

fn completions(batch: &[Done], which: &[usize]) -> Vec<LedgerEntry> {
    which
        .iter()
        .filter_map(|i| {
            let d = &batch[*i];
            d.outcome.as_ref().ok().map(|o| LedgerEntry {
                saga_id: d.task.saga_id.clone(),
                key: d.task.idempotency_key.clone(),
                task_id: d.task.task_id.clone(),
                output: o.clone(),
            })
        })
        .collect()
}

/// A result body; a `Value` always serialises, so the fallback is never taken.
pub(super) fn result_body(r: &ResultMessage) -> Vec<u8> {
    serde_json::to_vec(r).unwrap_or_default()
}

fn result_message(d: &Done) -> ResultMessage {
    let (outcome, output, error) = match &d.outcome {
        Ok(v) => (Outcome::Ok, Some(v.clone()), None),
        Err(e) => (Outcome::Error, None, Some(e.clone())),
    };
    ResultMessage {
        task_id: d.task.task_id.clone(),
        saga_id: d.task.saga_id.clone(),
        attempt: Some(d.task.attempt),
        outcome,
        output,
        error,
        details: None,
    }
}
