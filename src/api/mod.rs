//! The operator HTTP API (`sagaflow serve`): sagas, operator actions, queues, dead
//! letters, schedules, the scaling signal, the version drain, Prometheus metrics and
//! the OpenAPI document generated from the routes ([`routes`]). Reads go to Postgres;
//! starts, signals and cancels are published through [`crate::client::Client`] like
//! any other service would.

pub mod auth;
pub mod cursor;
mod dashboard;
mod dead_letters;
mod error;
pub mod metrics;
pub mod openapi;
mod operator;
mod overview;
mod probes;
pub mod prom;
mod purge;
mod queues;
mod routes;
mod sagas;
mod schedules;
mod versions;

use std::net::SocketAddr;
use std::sync::Arc;

use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::broker::Names;
use crate::client::Client;
use crate::config::{ApiToken, Limits, Settings};
use crate::saga::definition::Catalog;

pub use error::{ApiError, ErrorBody};
pub use routes::router;

/// What every handler needs; cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    pub pool: PgPool,
    pub catalog: Arc<Catalog>,
    pub names: Names,
    /// `api.tokens`; empty: unauthenticated, loopback only (see [`auth`]).
    pub tokens: Arc<Vec<ApiToken>>,
    pub broker: Arc<BrokerLink>,
    /// `[limits]`: request bodies and the payloads in them are held to these.
    pub limits: Limits,
}

impl axum::extract::FromRef<ApiState> for Limits {
    fn from_ref(st: &ApiState) -> Limits {
        st.limits.clone()
    }
}

impl ApiState {
    pub fn new(settings: &Settings, catalog: Catalog, pool: PgPool) -> Self {
        ApiState {
            pool,
            catalog: Arc::new(catalog),
            names: Names::new(&settings.namespace),
            tokens: Arc::new(settings.api.tokens.clone()),
            broker: Arc::new(
                BrokerLink::new(&settings.amqp.url, &settings.namespace)
                    .with_limits(settings.limits.clone()),
            ),
            limits: settings.limits.clone(),
        }
    }
}

/// One shared broker client, reconnected on the next request after it dropped
/// (lapin does not reconnect by itself).
pub struct BrokerLink {
    url: String,
    namespace: String,
    limits: Limits,
    client: Mutex<Option<Arc<Client>>>,
}

impl BrokerLink {
    pub fn new(url: &str, namespace: &str) -> Self {
        BrokerLink {
            url: url.into(),
            namespace: namespace.into(),
            limits: Limits::default(),
            client: Mutex::new(None),
        }
    }

    /// Clients made by this link hold messages to `limits`.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The open client, connecting when there is none or it dropped.
    pub async fn client(&self) -> Result<Arc<Client>, ApiError> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| c.is_connected()) {
            return Ok(c.clone());
        }
        if let Some(stale) = slot.take() {
            // Its connection dropped, or a publish the broker refused closed its
            // publishing channel: let go of the connection too.
            stale.connection().close("replaced").await;
        }
        let c = Arc::new(
            Client::connect(&self.url, &self.namespace)
                .await?
                .with_limits(self.limits.clone()),
        );
        *slot = Some(c.clone());
        Ok(c)
    }
}

/// Binds `api.listen`, enforcing the loopback rule before anything listens.
pub async fn bind(settings: &Settings) -> Result<TcpListener, ApiError> {
    let addr: SocketAddr = settings
        .api
        .listen
        .parse()
        .map_err(|_| ApiError::Listen(settings.api.listen.clone()))?;
    auth::check_listen(addr, &settings.api.tokens)?;
    TcpListener::bind(addr)
        .await
        .map_err(|source| ApiError::Bind { addr, source })
}

/// Serves until `shutdown`, then finishes the requests in flight.
pub async fn serve(
    listener: TcpListener,
    state: ApiState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    if state.tokens.is_empty() {
        tracing::warn!(%addr, "API is unauthenticated (no api.tokens): listening on localhost only, answering requests for loopback host names only");
    } else {
        let tokens: Vec<String> = state
            .tokens
            .iter()
            .map(|t| format!("{} ({})", t.name, t.role))
            .collect();
        tracing::info!(%addr, ?tokens, "API listening, bearer tokens required on /api");
        let legacy: Vec<&str> = state
            .tokens
            .iter()
            .filter(|t| t.legacy)
            .map(|t| t.name.as_str())
            .collect();
        if !legacy.is_empty() {
            tracing::warn!(?legacy, "api.tokens: plain-string tokens are deprecated; they act as `operate` tokens named token-<n>. Give each a name and a role: [[api.tokens]] name, role (read, operate or scaling), secret; or SAGAFLOW__API__TOKENS=name:role:secret,...");
        }
    }
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
