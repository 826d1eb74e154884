//! Process plumbing shared by the coordinator and the worker: the reconnect loop and
//! shutdown on signals.

use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio_util::sync::CancellationToken;

use crate::health::Health;

/// Runs `connected` until it returns `Ok` (a clean shutdown) or `shutdown` fires;
/// after an error, waits with exponential backoff (200 ms to 10 s, reset after a
/// connection that lasted a while) and runs it again. lapin does not reconnect on its
/// own and a consumer can go quiet after a broker restart, so every failure rebuilds
/// the connection, redeclares the topology and resumes from what RabbitMQ redelivers.
pub async fn reconnect_loop<F, Fut, E>(
    what: &str,
    health: &Health,
    shutdown: CancellationToken,
    mut connected: F,
) where
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
                health.broker_lost(&e.to_string());
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

/// The waits of a consumer holding deliveries through an outage instead of handing
/// them back: 100 ms, doubling, at most 5 s, for as long as it lasts.
pub(crate) fn holding_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_factor(2.0)
        .without_max_times()
        .build()
}

/// Runs `op` until it succeeds or fails for a reason that waiting cannot fix
/// (`transient` says which), backing off as [`holding_backoff`] and logging as it goes;
/// `None` when `shutdown` fires first. Used wherever a consumer holds deliveries
/// through a database outage instead of handing them back: a handed-back message
/// costs one of its delivery attempts.
pub async fn outlast<T, E, F, Fut>(
    what: &str,
    health: &Health,
    shutdown: &CancellationToken,
    transient: impl Fn(&E) -> bool,
    mut op: F,
) -> Option<Result<T, E>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let mut waits = holding_backoff();
    let mut since: Option<tokio::time::Instant> = None;
    loop {
        let wait = match op().await {
            Err(e) if transient(&e) => {
                let wait = waits.next().unwrap_or(Duration::from_secs(5));
                health.database_unavailable(&e.to_string());
                let first = *since.get_or_insert_with(tokio::time::Instant::now);
                tracing::warn!(error = %e, waiting_ms = first.elapsed().as_millis() as u64, retry_in_ms = wait.as_millis() as u64, "{what}: database unavailable; holding on");
                wait
            }
            done => {
                health.database_available();
                if let Some(t) = since {
                    tracing::info!(
                        waited_ms = t.elapsed().as_millis() as u64,
                        "{what}: database back"
                    );
                }
                return Some(done);
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(wait) => {}
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

/// Background loops that must not die quietly: a loop that returns or panics while
/// its process runs is reported by [`Supervised::stopped`], and the caller restarts
/// everything (a dead wake-up scanner would otherwise stop every timer while the
/// process looked healthy). Dropping it aborts the loops.
pub struct Supervised {
    set: tokio::task::JoinSet<()>,
    names: std::collections::HashMap<tokio::task::Id, &'static str>,
    stop: CancellationToken,
}

impl Supervised {
    /// Loops that end when `stop` is cancelled are not reported.
    pub fn new(stop: CancellationToken) -> Self {
        Supervised {
            set: tokio::task::JoinSet::new(),
            names: Default::default(),
            stop,
        }
    }

    pub fn spawn<F>(&mut self, name: &'static str, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let handle = self.set.spawn(fut);
        self.names.insert(handle.id(), name);
    }

    /// Resolves with the name of the first loop that ended on its own (cancel-safe;
    /// pending for ever when none does).
    pub async fn stopped(&mut self) -> &'static str {
        loop {
            let Some(joined) = self.set.join_next_with_id().await else {
                return std::future::pending().await;
            };
            let (id, how) = match joined {
                Ok((id, ())) => (id, "returned".to_string()),
                Err(e) => (e.id(), format!("failed: {e}")),
            };
            let name = self.names.remove(&id).unwrap_or("background loop");
            if self.stop.is_cancelled() {
                continue;
            }
            tracing::error!(task = name, how, "a background loop stopped");
            return name;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn outlast_retries_transient_errors_only() {
        let stop = CancellationToken::new();
        let health = Health::new("test");
        let mut calls = 0;
        let r: Option<Result<u32, String>> = outlast(
            "t",
            &health,
            &stop,
            |e: &String| e == "down",
            || {
                calls += 1;
                let n = calls;
                async move {
                    match n {
                        1 | 2 => Err("down".to_string()),
                        _ => Ok(n),
                    }
                }
            },
        )
        .await;
        assert_eq!(r, Some(Ok(3)));
        assert!(health.report().database_available);
        let r: Option<Result<u32, String>> = outlast(
            "t",
            &health,
            &stop,
            |e: &String| e == "down",
            || async { Err("bad".to_string()) },
        )
        .await;
        assert_eq!(r, Some(Err("bad".to_string())));
        stop.cancel();
        let r: Option<Result<u32, String>> = outlast(
            "t",
            &health,
            &stop,
            |_: &String| true,
            || async { Err("down".to_string()) },
        )
        .await;
        assert_eq!(r, None);
        assert_eq!(health.report().database_error.as_deref(), Some("down"));
    }

    #[tokio::test]
    async fn a_loop_that_panics_or_returns_is_reported_by_name() {
        let stop = CancellationToken::new();
        let mut s = Supervised::new(stop.clone());
        s.spawn("sleeper", std::future::pending());
        s.spawn("panicker", async { panic!("boom") });
        assert_eq!(s.stopped().await, "panicker");
        s.spawn("quitter", async {});
        assert_eq!(s.stopped().await, "quitter");
    }

    #[tokio::test]
    async fn loops_ending_after_stop_are_not_reported() {
        let stop = CancellationToken::new();
        let mut s = Supervised::new(stop.clone());
        let t = stop.clone();
        s.spawn("waits for stop", async move { t.cancelled().await });
        stop.cancel();
        let reported = tokio::time::timeout(Duration::from_millis(200), s.stopped()).await;
        assert!(reported.is_err(), "nothing to report: {reported:?}");
    }

    #[test]
    fn holding_waits_double_from_100_ms_up_to_5_s_and_go_on() {
        let ms: Vec<u128> = holding_backoff().take(9).map(|d| d.as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
    }
}
