//! The unloaded-version check: at start and every `coordinator.reconcile_interval_ms`
//! it counts stored sagas that have not ended (scheduled, running, compensating)
//! whose definition version this coordinator does not load. Such sagas move only on a
//! coordinator that loads their version; when none does, they stop (their messages
//! are handed back until dead-lettered, their wake-ups postponed). That is an upgrade
//! mistake (a version unloaded while in use) an operator must hear about, so each such
//! version is logged at ERROR on every check, and the figures are the
//! `sagaflow_sagas_unloaded_version{saga,version}` gauge on the health listener's
//! `/metrics`. Failed sagas are left out: they wait for an operator anyway, and
//! `sagaflow versions` lists them.
//!
//! The check is run independently of the broker connection, so a coordinator that
//! cannot reach RabbitMQ still says it at start.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::health::Health;
use crate::saga::definition::Catalog;
use crate::store::StoreError;
use crate::versions::{self, Unloaded};

/// Runs the check until `stop`: once at once, then every `interval`.
pub async fn run(
    pool: PgPool,
    catalog: Arc<Catalog>,
    health: Health,
    interval: Duration,
    stop: CancellationToken,
) {
    let loaded = versions::loaded(&catalog);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match check(&pool, &loaded).await {
            Ok(found) => {
                for u in &found {
                    tracing::error!(
                        saga = %u.saga,
                        version = u.version,
                        sagas = u.open,
                        loaded = ?loaded_versions(&loaded, &u.saga),
                        "{} sagas of `{}` version {} have not ended, and this coordinator does not load that version: they move only on a coordinator that does. Put the version's definition back in sagas_dir (alongside the newer one) and restart, or run a coordinator that loads it, until `sagaflow versions` says it is safe to unload",
                        u.open,
                        u.saga,
                        u.version
                    );
                }
                health.unloaded_versions(found);
            }
            Err(e) => tracing::warn!(error = %e, "unloaded-version check failed"),
        }
    }
}

/// The versions with non-terminal sagas that `loaded` lacks.
pub async fn check(pool: &PgPool, loaded: &[(String, u32)]) -> Result<Vec<Unloaded>, StoreError> {
    let stored = crate::store::versions::stored(pool).await?;
    Ok(versions::unloaded(loaded, &stored))
}

/// The versions of `saga` this coordinator does load (for the log line).
fn loaded_versions(loaded: &[(String, u32)], saga: &str) -> Vec<u32> {
    loaded
        .iter()
        .filter(|(n, _)| n == saga)
        .map(|(_, v)| *v)
        .collect()
}
