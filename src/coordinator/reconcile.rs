//! The stuck-saga reconciler: every `coordinator.reconcile_interval_ms` it flags
//! non-terminal sagas that nothing will move (no timer, nothing in flight, not
//! waiting for a signal) for longer than `coordinator.stuck_after_ms`, records
//! `stuck_detected` in their history and wakes each once, so the machine re-arms
//! what it waits on. What stays stuck shows in `sagaflow sagas list --stuck`, the
//! dashboard and the `sagaflow_stuck_sagas` gauge. Several coordinators may run it:
//! rows are claimed with SKIP LOCKED and flagged once.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::store::stuck;

/// Runs the reconciler until `stop`.
pub async fn run(pool: PgPool, interval: Duration, grace: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let grace = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match stuck::flag(&pool, chrono::Utc::now(), grace, 1000).await {
            Ok(ids) if ids.is_empty() => {}
            Ok(ids) => tracing::warn!(
                count = ids.len(),
                sagas = ?ids.iter().take(20).collect::<Vec<_>>(),
                "stuck sagas flagged and woken once (see `sagaflow sagas list --stuck`)"
            ),
            Err(e) => tracing::warn!(error = %e, "stuck-saga reconciler failed"),
        }
    }
}
