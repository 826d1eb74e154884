//! A coordinator's or worker's own view of its health, served by the process itself
//! (`/livez`, `/readyz`, `/metrics` on `health.listen`), so a Kubernetes probe asks
//! the process that does the work rather than a sidecar.
//!
//! Liveness is "the process's runtime answers": a wedged runtime cannot serve the
//! probe. Readiness is "connected to the broker, the database answers, and the broker
//! takes this process's results": a process waiting out an outage is alive
//! (restarting it would not help and would cost every held message a delivery
//! attempt) but not ready.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// Shared, cheap to clone; every loop of the process reports into it.
#[derive(Clone)]
pub struct Health {
    inner: Arc<Inner>,
}

struct Inner {
    role: &'static str,
    broker: AtomicBool,
    database: AtomicBool,
    reconnects: AtomicU64,
    broker_error: Mutex<Option<String>>,
    database_error: Mutex<Option<String>>,
    /// Why a worker holds finished tasks whose results the broker does not take.
    results_held: Mutex<Option<String>>,
    hops: crate::hops::Hops,
    /// Coordinator inputs applied from cached states, and under lock (only the
    /// coordinator counts them; workers show no family).
    inputs: [AtomicU64; 2],
    /// The coordinator's last unloaded-version check; `None` before the first one
    /// and in workers (no gauge then).
    unloaded: Mutex<Option<Vec<crate::versions::Unloaded>>>,
}

/// What `/readyz` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthReport {
    /// `coordinator` or `worker`.
    pub role: String,
    pub ready: bool,
    pub broker_connected: bool,
    pub database_available: bool,
    /// Connections lost and rebuilt since the process started.
    pub reconnects: u64,
    /// Why the broker connection is down (refused, handshake timeout, authentication, vhost…).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_error: Option<String>,
    /// A worker holds finished tasks because the broker refuses or does not confirm
    /// their results (a coordinator queue without a leader, or at a length limit);
    /// says how many and why. Not ready meanwhile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub results_held: Option<String>,
}

impl Health {
    pub fn new(role: &'static str) -> Self {
        Health {
            inner: Arc::new(Inner {
                role,
                broker: AtomicBool::new(false),
                database: AtomicBool::new(true),
                reconnects: AtomicU64::new(0),
                broker_error: Mutex::new(None),
                database_error: Mutex::new(None),
                results_held: Mutex::new(None),
                hops: Default::default(),
                inputs: Default::default(),
                unloaded: Mutex::new(None),
            }),
        }
    }

    /// The process consumes again.
    pub fn broker_connected(&self) {
        self.inner.broker.store(true, Ordering::Relaxed);
        set(&self.inner.broker_error, None);
    }

    /// The connection failed or could not be made; `why` says which.
    pub fn broker_lost(&self, why: &str) {
        if self.inner.broker.swap(false, Ordering::Relaxed) {
            self.inner.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        set(&self.inner.broker_error, Some(why.to_string()));
    }

    pub fn database_available(&self) {
        self.inner.database.store(true, Ordering::Relaxed);
        set(&self.inner.database_error, None);
    }

    pub fn database_unavailable(&self, why: &str) {
        self.inner.database.store(false, Ordering::Relaxed);
        set(&self.inner.database_error, Some(why.to_string()));
    }

    /// A worker holds results the broker does not take (`Some(why)`), or no longer
    /// does (`None`); returns whether it held some before.
    pub fn results_held(&self, why: Option<&str>) -> bool {
        let mut slot = self
            .inner
            .results_held
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        std::mem::replace(&mut *slot, why.map(str::to_string)).is_some()
    }

    /// Records how long one hop of a step's round trip took (`/metrics`).
    pub fn hop(&self, hop: crate::hops::Hop, took: std::time::Duration) {
        self.inner.hops.record(hop, took);
    }

    /// Counts coordinator inputs applied from cached states (`cached`) or under lock.
    pub fn inputs_applied(&self, cached: bool, n: usize) {
        self.inner.inputs[usize::from(cached)].fetch_add(n as u64, Ordering::Relaxed);
    }

    /// What the coordinator's last unloaded-version check found
    /// ([`crate::coordinator::versions`]): the `sagaflow_sagas_unloaded_version` gauge.
    pub fn unloaded_versions(&self, found: Vec<crate::versions::Unloaded>) {
        *self
            .inner
            .unloaded
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(found);
    }

    pub fn report(&self) -> HealthReport {
        let broker = self.inner.broker.load(Ordering::Relaxed);
        let database = self.inner.database.load(Ordering::Relaxed);
        let results_held = get(&self.inner.results_held);
        HealthReport {
            role: self.inner.role.to_string(),
            ready: broker && database && results_held.is_none(),
            broker_connected: broker,
            database_available: database,
            reconnects: self.inner.reconnects.load(Ordering::Relaxed),
            broker_error: get(&self.inner.broker_error),
            database_error: get(&self.inner.database_error),
            results_held,
        }
    }

    /// Prometheus text exposition of the report.
    pub fn metrics(&self) -> String {
        let r = self.report();
        let role = &r.role;
        let flag = |b: bool| u8::from(b);
        let hops = self.inner.hops.exposition(role);
        let unloaded = unloaded_exposition(&self.inner.unloaded);
        let inputs = if self.inner.role == "coordinator" {
            let n = |i: usize| self.inner.inputs[i].load(Ordering::Relaxed);
            format!(
                "# HELP sagaflow_coordinator_inputs_total Inputs applied: from the states this coordinator committed last (no lock), or under lock.\n\
                 # TYPE sagaflow_coordinator_inputs_total counter\n\
                 sagaflow_coordinator_inputs_total{{path=\"cached\"}} {}\n\
                 sagaflow_coordinator_inputs_total{{path=\"locked\"}} {}\n",
                n(1),
                n(0)
            )
        } else {
            String::new()
        };
        format!(
            "# HELP sagaflow_broker_connected 1 while the process is connected to RabbitMQ.\n\
             # TYPE sagaflow_broker_connected gauge\n\
             sagaflow_broker_connected{{role=\"{role}\"}} {}\n\
             # HELP sagaflow_database_available 0 while the process waits out a database outage.\n\
             # TYPE sagaflow_database_available gauge\n\
             sagaflow_database_available{{role=\"{role}\"}} {}\n\
             # HELP sagaflow_results_held 1 while a worker holds finished tasks whose results the broker does not take.\n\
             # TYPE sagaflow_results_held gauge\n\
             sagaflow_results_held{{role=\"{role}\"}} {}\n\
             # HELP sagaflow_reconnects_total Broker connections lost and rebuilt.\n\
             # TYPE sagaflow_reconnects_total counter\n\
             sagaflow_reconnects_total{{role=\"{role}\"}} {}\n{hops}{inputs}{unloaded}",
            flag(r.broker_connected),
            flag(r.database_available),
            flag(r.results_held.is_some()),
            r.reconnects
        )
    }
}

/// The `sagaflow_sagas_unloaded_version` family; empty before the first check.
fn unloaded_exposition(slot: &Mutex<Option<Vec<crate::versions::Unloaded>>>) -> String {
    let found = slot.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let Some(found) = found else {
        return String::new();
    };
    let mut e = crate::api::prom::Exposition::default();
    crate::api::metrics::unloaded_versions(&mut e, &found);
    e.finish()
}

fn set(slot: &Mutex<Option<String>>, value: Option<String>) {
    *slot.lock().unwrap_or_else(|p| p.into_inner()) = value;
}

fn get(slot: &Mutex<Option<String>>) -> Option<String> {
    slot.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

async fn livez() -> &'static str {
    "ok"
}

async fn readyz(State(h): State<Health>) -> (StatusCode, Json<HealthReport>) {
    let r = h.report();
    let code = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(r))
}

async fn metrics(State(h): State<Health>) -> String {
    h.metrics()
}

/// The probe routes.
pub fn router(health: Health) -> Router {
    Router::new()
        .route("/livez", axum::routing::get(livez))
        .route("/readyz", axum::routing::get(readyz))
        .route("/metrics", axum::routing::get(metrics))
        .with_state(health)
}

/// Serves the probes on `listen` until `shutdown`; returns the bound address.
pub async fn serve(
    listen: &str,
    health: Health,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "health probes on /livez /readyz /metrics");
    tokio::spawn(async move {
        let served = axum::serve(listener, router(health))
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "health probe server stopped");
        }
    });
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_needs_both_and_reconnects_count_lost_connections_once() {
        let h = Health::new("worker");
        assert!(!h.report().ready, "not connected yet");
        h.broker_lost("refused");
        assert_eq!(h.report().reconnects, 0, "never connected: nothing lost");
        h.broker_connected();
        assert!(h.report().ready);
        h.broker_lost("handshake timed out");
        h.broker_lost("handshake timed out");
        let r = h.report();
        assert_eq!((r.ready, r.reconnects), (false, 1));
        assert_eq!(r.broker_error.as_deref(), Some("handshake timed out"));
        h.broker_connected();
        h.database_unavailable("connection refused");
        let r = h.report();
        assert!(!r.ready && r.broker_connected && !r.database_available);
        assert!(h
            .metrics()
            .contains("sagaflow_database_available{role=\"worker\"} 0"));
        h.database_available();
        assert!(h.report().ready);
    }

    #[test]
    fn held_results_make_a_worker_unready_until_the_broker_takes_them() {
        let h = Health::new("worker");
        h.broker_connected();
        assert!(!h.results_held(Some("3 results not taken by the broker: no confirm")));
        let r = h.report();
        assert!(!r.ready && r.broker_connected && r.database_available);
        assert_eq!(
            r.results_held.as_deref(),
            Some("3 results not taken by the broker: no confirm")
        );
        assert!(h
            .metrics()
            .contains("sagaflow_results_held{role=\"worker\"} 1"));
        assert!(h.results_held(None), "it held some before");
        assert!(h.report().ready);
        assert!(h
            .metrics()
            .contains("sagaflow_results_held{role=\"worker\"} 0"));
        assert!(!h.results_held(None));
    }

    #[test]
    fn the_unloaded_version_gauge_appears_with_the_first_check() {
        let h = Health::new("coordinator");
        assert!(!h.metrics().contains("sagaflow_sagas_unloaded_version"));
        h.unloaded_versions(vec![crate::versions::Unloaded {
            saga: "order".into(),
            version: 1,
            open: 3,
        }]);
        let m = h.metrics();
        assert!(
            m.contains("# TYPE sagaflow_sagas_unloaded_version gauge\n"),
            "{m}"
        );
        assert!(
            m.ends_with("sagaflow_sagas_unloaded_version{saga=\"order\",version=\"1\"} 3\n"),
            "{m}"
        );
        h.unloaded_versions(vec![]);
        let m = h.metrics();
        assert!(
            m.ends_with("# TYPE sagaflow_sagas_unloaded_version gauge\n"),
            "{m}"
        );
    }
}
