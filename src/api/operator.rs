//! Operator actions over HTTP: act on one saga (retry, resume_at, skip, compensate) or
//! in bulk on the sagas a filter selects (with dry runs). Each action goes through
//! [`crate::operator::check`], the same check `sagaflow sagas retry|…` makes: a
//! refusal is a 409 with the reason; an accepted action is sent to the coordinators.

use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Actor;
use super::error::Body;
use super::{ApiError, ApiState, ErrorBody};
use crate::operator::{self, OperatorError, Verdict};
use crate::saga::machine::OperatorAction;
use crate::store::sagas::ListFilter;

/// An accepted operator action.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ActionAccepted {
    pub saga_id: String,
    pub action: String,
}

#[utoipa::path(post, path = "/sagas/{id}/actions", tag = "operator", params(("id" = String, Path)),
    request_body(content = serde_json::Value, description = "`{\"action\": \"retry\"|\"compensate\"}`, `{\"action\": \"resume_at\", \"step\": S}` or `{\"action\": \"skip\", \"output\": V}`"),
    responses((status = 202, body = ActionAccepted), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn saga_action(
    State(st): State<ApiState>,
    Extension(Actor(actor)): Extension<Actor>,
    Path(id): Path<String>,
    Body(action): Body<OperatorAction>,
) -> Result<(StatusCode, Json<ActionAccepted>), ApiError> {
    let ids = std::slice::from_ref(&id);
    let verdicts = operator::check(&st.pool, &st.catalog, &st.limits, ids, &action)
        .await
        .map_err(operator_error)?;
    if let Some(why) = verdicts.iter().find_map(|v| v.refused.clone()) {
        return Err(ApiError::ActionRefused(why));
    }
    operator::send(&*st.broker.client().await?, &verdicts, &action, &actor).await?;
    let accepted = ActionAccepted {
        saga_id: id,
        action: action.name().into(),
    };
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

/// A bulk operator action: the sagas a filter selects (at most `limit`, default 100).
#[derive(Debug, Deserialize, ToSchema)]
pub struct BulkAction {
    #[schema(value_type = Object)]
    pub action: OperatorAction,
    #[serde(default)]
    pub saga: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub id_prefix: Option<String>,
    #[serde(default)]
    pub limit: Option<i64>,
    /// Report what would happen, send nothing.
    #[serde(default)]
    pub dry_run: bool,
}

impl BulkAction {
    /// The selection, or why there is none: a bulk action on every saga is refused.
    fn filter(&self) -> Result<ListFilter, ApiError> {
        if self.saga.is_none() && self.status.is_none() && self.id_prefix.is_none() {
            return Err(ApiError::BadRequest(
                "a bulk action needs a filter: saga, status or id_prefix".into(),
            ));
        }
        Ok(ListFilter {
            saga: self.saga.clone(),
            status: self.status.clone(),
            id_prefix: self.id_prefix.clone(),
            ..Default::default()
        })
    }
}

/// Per selected saga: whether the action applies (and was sent) or why not.
#[derive(Debug, Serialize, ToSchema)]
pub struct BulkResult {
    pub action: String,
    pub dry_run: bool,
    pub sent: usize,
    #[schema(value_type = Vec<Object>)]
    pub sagas: Vec<Verdict>,
}

#[utoipa::path(post, path = "/sagas/actions", tag = "operator", request_body = BulkAction,
    responses((status = 200, body = BulkResult), (status = 400, body = ErrorBody)))]
pub async fn bulk_action(
    State(st): State<ApiState>,
    Extension(Actor(actor)): Extension<Actor>,
    Body(req): Body<BulkAction>,
) -> Result<Json<BulkResult>, ApiError> {
    // Over a limit is refused for every saga: say so before reading any.
    operator::admit(&req.action, &st.limits)?;
    let filter = req.filter()?;
    let ids = operator::select(&st.pool, &filter, req.limit.unwrap_or(100)).await?;
    let verdicts = operator::check(&st.pool, &st.catalog, &st.limits, &ids, &req.action)
        .await
        .map_err(operator_error)?;
    let sent = if req.dry_run {
        0
    } else {
        operator::send(&*st.broker.client().await?, &verdicts, &req.action, &actor).await?
    };
    Ok(Json(BulkResult {
        action: req.action.name().into(),
        dry_run: req.dry_run,
        sent,
        sagas: verdicts,
    }))
}

fn operator_error(e: OperatorError) -> ApiError {
    match e {
        OperatorError::NotFound(id) => ApiError::SagaNotFound(id),
        OperatorError::Store(e) => ApiError::Store(e),
        OperatorError::Limit(e) => ApiError::Limit(e),
    }
}
