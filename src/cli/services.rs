//! The long-running processes: `sagaflow coordinator`, `worker --demo` and `serve`.
//! Each stops on SIGINT/SIGTERM and serves its probes on its `health_listen` when set.

use super::database::pool;
use super::definitions::load_catalog;
use crate::config::Settings;

/// `sagaflow coordinator`.
pub async fn coordinator(settings: Settings) -> anyhow::Result<()> {
    let catalog = load_catalog(&settings)?;
    if catalog.is_empty() {
        anyhow::bail!("no saga definitions in {}", settings.sagas_dir.display());
    }
    let pool = pool(&settings).await?;
    let shutdown = crate::runtime::shutdown_on_signals();
    let coordinator = crate::coordinator::Coordinator::new(settings, catalog, pool);
    let listen = &coordinator.settings.coordinator.health_listen;
    serve_health(listen, coordinator.health.clone(), &shutdown).await?;
    coordinator.run(shutdown).await;
    Ok(())
}

/// `sagaflow worker --demo`: this binary hosts only the example activities.
pub async fn worker(settings: Settings, demo: bool) -> anyhow::Result<()> {
    if !demo {
        anyhow::bail!("this binary hosts only the example activities: run `sagaflow worker --demo`, or embed sagaflow::worker::Worker in your service");
    }
    let pool = pool(&settings).await?;
    crate::tools::demo::prepare(&pool).await?;
    let shutdown = crate::runtime::shutdown_on_signals();
    let worker = crate::tools::demo::worker(pool.clone());
    serve_health(&settings.worker.health_listen, worker.health(), &shutdown).await?;
    worker.run(settings, pool, shutdown).await;
    Ok(())
}

/// `sagaflow serve`: the operator HTTP API, the dashboard and `/metrics`.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    // Bind first: a refused address is reported before any connection is made.
    let listener = crate::api::bind(&settings).await?;
    let catalog = load_catalog(&settings)?;
    let pool = pool(&settings).await?;
    let state = crate::api::ApiState::new(&settings, catalog, pool);
    let shutdown = crate::runtime::shutdown_on_signals();
    crate::api::serve(listener, state, shutdown).await?;
    Ok(())
}

/// Serves a process's own probes when `listen` is set.
async fn serve_health(
    listen: &str,
    health: crate::health::Health,
    shutdown: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    if !listen.is_empty() {
        crate::health::serve(listen, health, shutdown.clone())
            .await
            .map_err(|e| anyhow::anyhow!("health probes on {listen}: {e}"))?;
    }
    Ok(())
}
