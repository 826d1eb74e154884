//! The API's one error type and its JSON shape:
//! `{"error": {"code": "<stable_code>", "message": "..."}}`. Codes are part of the
//! contract (scripts match on them); messages are for humans.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::client::ClientError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("no saga with id `{0}`")]
    SagaNotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("action refused: {0}")]
    ActionRefused(String),
    #[error("no schedule named `{0}`")]
    ScheduleNotFound(String),
    #[error("missing or invalid bearer token")]
    Unauthorized,
    #[error("{0} unavailable")]
    Unavailable(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("broker: {0}")]
    Client(#[from] ClientError),
    #[error("broker: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("refusing to listen on {0} without api.tokens: unauthenticated access is allowed on loopback addresses only")]
    Insecure(std::net::SocketAddr),
    #[error("bad api.listen `{0}`: expected an IP address and port")]
    Listen(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

impl ApiError {
    /// The HTTP status and the stable code of this error.
    pub fn status_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::SagaNotFound(_) => (StatusCode::NOT_FOUND, "saga_not_found"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::ActionRefused(_) => (StatusCode::CONFLICT, "action_refused"),
            ApiError::ScheduleNotFound(_) => (StatusCode::NOT_FOUND, "schedule_not_found"),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Store(e) if !e.is_transient() => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
            _ => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        }
    }
}

/// The error body, for OpenAPI and clients.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_code();
        if status.is_server_error() {
            tracing::warn!(error = %self, "api request failed");
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.into(),
                message: self.to_string(),
            },
        };
        (status, axum::Json(body)).into_response()
    }
}

/// A JSON body whose rejection is our JSON 400 rather than axum's plain text.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        axum::Json::<T>::from_request(req, state)
            .await
            .map(|axum::Json(v)| Body(v))
            .map_err(|e: JsonRejection| ApiError::BadRequest(e.body_text()))
    }
}

/// Query parameters whose rejection is our JSON 400.
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| Params(v))
            .map_err(|e: QueryRejection| ApiError::BadRequest(e.body_text()))
    }
}
