//! Liveness and readiness of the API process, open to probes without a token.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ApiState;
use crate::store;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: String,
}

/// Readiness of each dependency.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Readiness {
    pub postgres: bool,
    pub rabbitmq: bool,
}

#[utoipa::path(get, path = "/healthz", tag = "probes", security(()), responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// Ready when both Postgres and RabbitMQ answer: a load balancer takes an API process
/// out of rotation while either is down rather than let it answer 503 to operators.
#[utoipa::path(get, path = "/readyz", tag = "probes", security(()),
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
pub async fn readyz(State(st): State<ApiState>) -> (StatusCode, Json<Readiness>) {
    let postgres = store::ping(&st.pool).await.is_ok();
    let rabbitmq = st.broker.client().await.is_ok_and(|c| c.is_connected());
    let code = if postgres && rabbitmq {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(Readiness { postgres, rabbitmq }))
}
