//! Cron schedules: every coordinator polls the `schedules` table and starts one saga
//! per tick.
//!
//! **Exactly one saga per tick.** A pass runs in ONE Postgres transaction: it locks the
//! due rows (`FOR UPDATE SKIP LOCKED`, so two coordinators never hold the same row),
//! creates the sagas through the same code as start events
//! ([`crate::coordinator::batch::apply_inputs`]: state, history and outbox), advances
//! `next_fire_at` and commits. A crash before the commit leaves the row due, and the
//! next pass (here or on another coordinator) handles the tick again from scratch. The
//! saga id is deterministic, `<schedule>@<tick in RFC 3339 UTC, whole seconds>` (e.g.
//! `nightly_cleanup.nightly@2026-12-01T00:00:00Z`), and its insert is
//! `ON CONFLICT DO NOTHING`: even a pass that somehow saw a stale row could not start
//! a second saga for a tick. Manual runs are `<schedule>@manual-<request time>`.
//! After the commit the outbox rows go to the relay, as for every other batch.
//!
//! **Lag.** Passes run every `coordinator.timer_poll_ms` (200 ms by default), so a saga
//! starts up to that long after its tick (plus the transaction). Ticks are whole
//! seconds; a schedule fires at most once per second.
//!
//! **Catch-up.** `next_fire_at` is the first tick not handled yet and survives
//! restarts. When a pass finds ticks due, those within the catch-up window before now
//! are started (in order, at most [`decide::TICKS_PER_PASS`] per pass) and older ones
//! are skipped and added to `missed_ticks`. The window is never shorter than
//! `max(1 s, 5 × timer_poll_ms)`, so the polling lag alone never misses a tick.
//! A paused schedule handles no ticks (a buffered tick waits too); `resume` recomputes
//! `next_fire_at` from the moment of resuming, so ticks that fell in the pause are
//! neither started nor counted.
//!
//! **Overlap** (see [`overlap`]): the last run started is `last_saga_id`; while it is
//! not terminal, `skip` drops ticks (`skipped_ticks`), `buffer_one` keeps the first
//! (`buffered_tick`, started by the first pass that sees the run ended) and drops the
//! rest, `allow_all` starts every tick.
//!
//! **Input.** Each run gets the schedule's input; when that is a JSON object,
//! `scheduled_at` (the tick, or the manual request time) is set in it.
//!
//! **File schedules** are written to the table by every coordinator at start
//! ([`sync`]); operators add their own with `sagaflow schedules add` ([`admin`]).

pub mod admin;
pub mod cron;
pub mod decide;
pub mod overlap;
pub mod sync;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::broker::Names;
use crate::coordinator::batch::{apply_inputs, Committed};
use crate::coordinator::input::Input;
use crate::saga::definition::Catalog;
use crate::saga::state::SagaStatus;
use crate::store::outbox::OutboxRow;
use crate::store::schedules::{self, Advance, ScheduleRow};
use crate::store::{self, StoreError, Tx};

/// Schedule rows locked per pass transaction.
const ROWS_PER_PASS: i64 = 200;

/// What a coordinator's scheduler needs; cheap to clone.
#[derive(Clone)]
pub struct Scheduler {
    pub pool: PgPool,
    pub names: Names,
    pub catalog: Arc<Catalog>,
    /// Outbox lease of the rows a pass writes (as for any coordinator batch).
    pub lease: Duration,
    /// `coordinator.timer_poll_ms`.
    pub poll: Duration,
}

/// What one pass did.
#[derive(Debug, Default)]
pub struct Pass {
    /// Rows locked.
    pub rows: usize,
    /// Rows whose state changed.
    pub advanced: usize,
    /// Outbox rows to publish now that the pass committed.
    pub outbox: Vec<OutboxRow>,
}

impl Scheduler {
    /// The shortest catch-up window applied: a few polls, at least a second.
    fn min_window(&self) -> Duration {
        (self.poll * 5).max(Duration::from_secs(1))
    }

    /// Syncs the file schedules, then runs a pass every poll interval until `stop`,
    /// handing each pass's outbox rows to the relay.
    pub async fn run(self, relay: mpsc::Sender<Vec<OutboxRow>>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut synced = false;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            // Sync before the first pass, so changed crons are not fired at old times.
            if !synced {
                match sync::sync(&self.pool, &self.catalog, Utc::now()).await {
                    Ok((n, deleted)) => {
                        tracing::info!(schedules = n, deleted, "file schedules synced");
                        synced = true;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "schedule sync failed; retrying");
                        continue;
                    }
                }
            }
            if !self.drain(&relay).await {
                return;
            }
        }
    }

    /// Runs passes until one finds less than a full page of work; `false` when the
    /// relay is gone (the coordinator is reconnecting).
    async fn drain(&self, relay: &mpsc::Sender<Vec<OutboxRow>>) -> bool {
        loop {
            match self.pass(Utc::now()).await {
                Ok(p) => {
                    if !p.outbox.is_empty() && relay.send(p.outbox).await.is_err() {
                        return false;
                    }
                    // Rows that changed nothing (a buffer waiting for its run) would be
                    // locked again by an immediate retry: wait for the next poll instead.
                    if p.rows < ROWS_PER_PASS as usize || p.advanced == 0 {
                        return true;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "scheduler pass failed");
                    return true;
                }
            }
        }
    }

    /// One pass in one transaction: lock due rows, decide, start sagas, advance rows.
    pub async fn pass(&self, now: DateTime<Utc>) -> Result<Pass, StoreError> {
        let mut tx = store::begin(&self.pool).await?;
        let sagas: Vec<String> = self.catalog.names().into_iter().collect();
        let rows = schedules::lock_due(&mut tx, &sagas, now, ROWS_PER_PASS).await?;
        if rows.is_empty() {
            return Ok(Pass::default());
        }
        let open = open_runs(&mut tx, &rows).await?;
        let (inputs, advances) = self.decide_rows(&rows, &open, now);
        let mut committed =
            apply_inputs(&mut tx, &self.names, &self.catalog, inputs, self.lease, now).await?;
        log_rejected(&committed);
        schedules::advance(&mut tx, &advances).await?;
        tx.commit().await?;
        committed.emit_spans();
        Ok(Pass {
            rows: rows.len(),
            advanced: advances.len(),
            outbox: committed.outbox,
        })
    }

    /// Decides every locked row: the start inputs (numbered as a batch) and the row
    /// updates. A row that cannot be read is logged and left as it is.
    fn decide_rows(
        &self,
        rows: &[ScheduleRow],
        open: &HashMap<String, bool>,
        now: DateTime<Utc>,
    ) -> (Vec<(usize, Input)>, Vec<Advance>) {
        let mut inputs = vec![];
        let mut advances = vec![];
        for row in rows {
            let previous_open = row.last_saga_id.as_ref().is_some_and(|id| open[id]);
            let d = match decide::decide(row, previous_open, now, self.min_window()) {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(schedule = %row.name, error = %e, "schedule row unreadable; left alone");
                    continue;
                }
            };
            for s in d.starts {
                tracing::info!(schedule = %row.name, saga_id = %s.id, "scheduled start");
                let input = Input::Start {
                    saga: s.saga,
                    id: s.id,
                    version: None,
                    input: s.input,
                    run_at: None,
                    signal: None,
                    parent: None,
                    traceparent: None,
                };
                inputs.push((inputs.len(), input));
            }
            advances.extend(d.advance);
        }
        (inputs, advances)
    }
}

/// Whether each row's last run is still open (exists and is not terminal), by saga id.
async fn open_runs(tx: &mut Tx, rows: &[ScheduleRow]) -> Result<HashMap<String, bool>, StoreError> {
    let ids: Vec<String> = rows.iter().filter_map(|r| r.last_saga_id.clone()).collect();
    let mut open: HashMap<String, bool> = ids.iter().map(|id| (id.clone(), false)).collect();
    for (id, status) in schedules::saga_statuses(tx, &ids).await? {
        let running = SagaStatus::from_str(&status).is_ok_and(|s| !s.is_terminal());
        open.insert(id, running);
    }
    Ok(open)
}

/// Starts are only refused for an unknown saga, which `lock_due` already filters out.
fn log_rejected(committed: &Committed) {
    for (_, reason) in &committed.rejected {
        tracing::error!(reason = %reason, "scheduled start refused");
    }
}
