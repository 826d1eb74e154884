//! `POST /api/sagas/purge`: erasure on demand over HTTP, the API twin of `sagaflow
//! sagas purge`, refused for the same reasons ([`purge::refusal`]). Ended sagas only,
//! with their history and ledger rows.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::Body;
use super::{ApiError, ApiState, ErrorBody};
use crate::saga::state::SagaStatus;
use crate::store::purge::{self, Selection};

/// Which ended sagas to delete; every given field must match, at least one is needed.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PurgeRequest {
    pub ids: Option<Vec<String>>,
    pub saga: Option<String>,
    /// `completed`, `compensated`, `failed` or `cancelled`.
    pub status: Option<String>,
    /// Ended before this instant.
    pub before: Option<DateTime<Utc>>,
    /// List what would be deleted, delete nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// At most this many (default 500, at most 5000).
    pub limit: Option<i64>,
}

/// The sagas deleted (or that would be, in a dry run).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PurgeResult {
    pub dry_run: bool,
    pub sagas: Vec<PurgedSaga>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PurgedSaga {
    pub id: String,
    pub saga: String,
}

#[utoipa::path(post, path = "/sagas/purge", tag = "sagas", request_body = PurgeRequest,
    responses((status = 200, body = PurgeResult), (status = 400, body = ErrorBody)))]
pub async fn purge_sagas(
    State(st): State<ApiState>,
    Body(req): Body<PurgeRequest>,
) -> Result<Json<PurgeResult>, ApiError> {
    let status = match req.status.as_deref() {
        None => None,
        Some(s) => Some(
            s.parse::<SagaStatus>()
                .map_err(|e| ApiError::BadRequest(format!("status: {e}")))?,
        ),
    };
    let sel = Selection {
        ids: req.ids,
        saga: req.saga,
        status,
        before: req.before,
    };
    if let Some(why) = purge::refusal(&st.pool, &sel).await? {
        return Err(ApiError::BadRequest(why));
    }
    let limit = req.limit.unwrap_or(500).clamp(1, 5000);
    let rows = if req.dry_run {
        purge::matching(&st.pool, &sel, limit).await?
    } else {
        purge::selected(&st.pool, &sel, limit).await?
    };
    Ok(Json(PurgeResult {
        dry_run: req.dry_run,
        sagas: rows
            .into_iter()
            .map(|(id, saga)| PurgedSaga { id, saga })
            .collect(),
    }))
}
