//! The API's one error type and its JSON shape:
//! `{"error": {"code": "<stable_code>", "message": "..."}}`. Codes are part of the
//! contract (scripts match on them); messages are for humans.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody, JsonRejection, QueryRejection};
use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::client::ClientError;
use crate::config::{LimitError, Limits};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("no saga with id `{0}`")]
    SagaNotFound(String),
    #[error("{0}")]
    BadRequest(String),
    /// Over a `[limits]` value: 413 (too large), 422 (too deep) or 400 (a bad id).
    #[error(transparent)]
    Limit(#[from] LimitError),
    #[error("action refused: {0}")]
    ActionRefused(String),
    /// A start for an id that exists with a different saga name or input.
    #[error("{0}")]
    IdConflict(String),
    #[error("no schedule named `{0}`")]
    ScheduleNotFound(String),
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// A token whose role does not grant the route.
    #[error("token `{token}` has role `{role}`; {route} needs role `{needed}`")]
    Forbidden {
        token: String,
        role: crate::config::ApiRole,
        needed: crate::config::ApiRole,
        route: String,
    },
    /// A route missing from the role table (a bug: a unit test keeps the table whole).
    #[error("no role is declared for {0}")]
    NoRole(String),
    /// Without tokens: a request for a host that is not a loopback name.
    #[error("host `{0}` is not allowed: an API without api.tokens answers only requests for localhost, 127.0.0.1 or [::1] (a page of another site must not reach it through DNS rebinding)")]
    HostNotAllowed(String),
    /// Without tokens: a mutation without the header a cross-site form cannot send.
    #[error("a request that changes something needs the header `X-Sagaflow-Request: 1` when the API has no api.tokens (a cross-site form cannot send it)")]
    RequestHeaderRequired,
    #[error("{0} unavailable")]
    Unavailable(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("broker: {0}")]
    Client(#[from] ClientError),
    #[error("broker: {0}")]
    Broker(#[from] crate::broker::Error),
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
            ApiError::IdConflict(_) => (StatusCode::CONFLICT, "id_conflict"),
            ApiError::ScheduleNotFound(_) => (StatusCode::NOT_FOUND, "schedule_not_found"),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden { .. } => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NoRole(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            ApiError::HostNotAllowed(_) => (StatusCode::FORBIDDEN, "host_not_allowed"),
            ApiError::RequestHeaderRequired => (StatusCode::FORBIDDEN, "request_header_required"),
            ApiError::Limit(e) | ApiError::Client(ClientError::Limit(e)) => limit_status(e),
            ApiError::Store(StoreError::Corrupt { .. }) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "saga_unreadable")
            }
            ApiError::Store(e) if !e.is_transient() => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
            _ => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        }
    }
}

fn limit_status(e: &LimitError) -> (StatusCode, &'static str) {
    match e {
        LimitError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
        LimitError::TooDeep { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "json_too_deep"),
        LimitError::BadId(_) => (StatusCode::BAD_REQUEST, "bad_request"),
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
        // No URL password in a body or a log line, even from an error that quotes one.
        let message = crate::redact::text(&self.to_string());
        if status.is_server_error() {
            tracing::warn!(error = %message, "api request failed");
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.into(),
                message,
            },
        };
        let mut response = (status, axum::Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// A JSON body held to `[limits]`, whose rejection is our JSON error rather than
/// axum's plain text: 413 over `limits.message_bytes` (from `Content-Length` before
/// reading, or while reading; the router's body limit is `message_bytes`), 422 nested
/// deeper than `limits.json_depth` (a byte scan, before parsing), 400 for anything else.
pub struct Body<T>(pub T);

impl<S, T> FromRequest<S> for Body<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
    Limits: FromRef<S>,
{
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let limits = Limits::from_ref(state);
        if !json_content_type(req.headers()) {
            return Err(ApiError::BadRequest(
                "Expected request with `Content-Type: application/json`".into(),
            ));
        }
        let too_large = |size| LimitError::TooLarge {
            what: "request body".into(),
            size,
            limit: "message_bytes",
            max: limits.message_bytes,
        };
        if let Some(n) = content_length(req.headers()).filter(|n| *n > limits.message_bytes) {
            return Err(too_large(Some(n)).into());
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| match e {
            BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => {
                ApiError::Limit(too_large(None))
            }
            other => ApiError::BadRequest(other.body_text()),
        })?;
        limits.check_message("request body", &bytes)?;
        axum::Json::<T>::from_bytes(&bytes)
            .map(|axum::Json(v)| Body(v))
            .map_err(|e: JsonRejection| ApiError::BadRequest(e.body_text()))
    }
}

fn content_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// `application/json` or `application/<something>+json`, parameters ignored (what
/// axum's `Json` accepts).
fn json_content_type(headers: &HeaderMap) -> bool {
    let Some(v) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mime = v
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
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
