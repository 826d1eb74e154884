//! Process plumbing shared by the coordinator and the worker: the reconnect loop and
//! shutdown on signals.

use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio_util::sync::CancellationToken;

/// Runs `connected` until it returns `Ok` (a clean shutdown) or `shutdown` fires;
/// after an error, waits with exponential backoff (200 ms to 10 s, reset after a
/// connection that lasted a while) and runs it again. lapin does not reconnect on its
/// own and a consumer can go quiet after a broker restart, so every failure rebuilds
/// the connection, redeclares the topology and resumes from what RabbitMQ redelivers.
pub async fn reconnect_loop<F, Fut, E>(what: &str, shutdown: CancellationToken, mut connected: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let builder = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times();
    let mut backoff = builder.build();
    loop {
        let began = tokio::time::Instant::now();
        match connected().await {
            Ok(()) => return,
            Err(e) if shutdown.is_cancelled() => {
                tracing::info!(error = %e, "{what} stopped");
                return;
            }
            Err(e) => {
                if began.elapsed() > Duration::from_secs(30) {
                    backoff = builder.build();
                }
                let wait = backoff.next().unwrap_or(Duration::from_secs(10));
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "{what} lost its connection; reconnecting");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

/// A token cancelled on SIGINT or SIGTERM.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutdown requested");
        t.cancel();
    });
    token
}
