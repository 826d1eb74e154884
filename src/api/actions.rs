//! Operator actions over HTTP: act on a saga (retry, resume_at, skip, compensate),
//! replay or purge dead letters by saga (with dry runs), and pause, resume or trigger
//! schedules. Each saga action is checked against the saga as stored first (409 with
//! the reason when it does not apply), then sent to the coordinators like the CLI does.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::Body;
use super::{ApiError, ApiState, ErrorBody};
use crate::broker::Publisher;
use crate::dlq::{self, DlqAction, Selection, Touched};
use crate::saga::machine::OperatorAction;
use crate::scheduler::ops::{self as schedule_ops, OpsError};
use crate::store::{sagas, schedules};

/// An accepted operator action.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ActionAccepted {
    pub saga_id: String,
    pub action: String,
}

#[utoipa::path(post, path = "/api/sagas/{id}/actions", params(("id" = String, Path)),
    request_body(content = serde_json::Value, description = "`{\"action\": \"retry\"|\"compensate\"}`, `{\"action\": \"resume_at\", \"step\": S}` or `{\"action\": \"skip\", \"output\": V}`"),
    responses((status = 202, body = ActionAccepted), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn saga_action(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    Body(action): Body<OperatorAction>,
) -> Result<(StatusCode, Json<ActionAccepted>), ApiError> {
    check_action(&st, &action)?;
    // The same check the CLI makes, against the saga as stored.
    let verdicts = crate::ops::check(&st.pool, &st.catalog, std::slice::from_ref(&id), &action)
        .await
        .map_err(operator_error)?;
    if let Some(why) = verdicts.iter().find_map(|v| v.refused.clone()) {
        return Err(ApiError::ActionRefused(why));
    }
    crate::ops::send(&*st.broker.client().await?, &verdicts, &action).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(ActionAccepted {
            saga_id: id,
            action: action.name().into(),
        }),
    ))
}

/// A `skip` output is stored as the step's output: held to `limits.payload_bytes`.
fn check_action(st: &ApiState, action: &OperatorAction) -> Result<(), ApiError> {
    if let OperatorAction::Skip { output } = action {
        st.limits.check_payload("skip output", output)?;
    }
    Ok(())
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

/// Per selected saga: whether the action applies (and was sent) or why not.
#[derive(Debug, Serialize, ToSchema)]
pub struct BulkResult {
    pub action: String,
    pub dry_run: bool,
    pub sent: usize,
    #[schema(value_type = Vec<Object>)]
    pub sagas: Vec<crate::ops::Verdict>,
}

#[utoipa::path(post, path = "/api/sagas/actions", request_body = BulkAction,
    responses((status = 200, body = BulkResult), (status = 400, body = ErrorBody)))]
pub async fn bulk_action(
    State(st): State<ApiState>,
    Body(req): Body<BulkAction>,
) -> Result<Json<BulkResult>, ApiError> {
    check_action(&st, &req.action)?;
    if req.saga.is_none() && req.status.is_none() && req.id_prefix.is_none() {
        return Err(ApiError::BadRequest(
            "a bulk action needs a filter: saga, status or id_prefix".into(),
        ));
    }
    let filter = sagas::ListFilter {
        saga: req.saga,
        status: req.status,
        id_prefix: req.id_prefix,
        ..Default::default()
    };
    let ids = crate::ops::select(&st.pool, &filter, req.limit.unwrap_or(100)).await?;
    let verdicts = crate::ops::check(&st.pool, &st.catalog, &ids, &req.action)
        .await
        .map_err(operator_error)?;
    let sent = if req.dry_run {
        0
    } else {
        crate::ops::send(&*st.broker.client().await?, &verdicts, &req.action).await?
    };
    Ok(Json(BulkResult {
        action: req.action.name().into(),
        dry_run: req.dry_run,
        sent,
        sagas: verdicts,
    }))
}

/// Which dead letters a replay or purge touches.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct DlqRequest {
    /// Only the dead letters of this saga.
    #[serde(default)]
    pub saga: Option<String>,
    /// At most this many (default 1000).
    #[serde(default)]
    pub limit: Option<usize>,
    /// List what would be touched, touch nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// What a replay or purge touched.
#[derive(Debug, Serialize, ToSchema)]
pub struct DlqResult {
    pub queue: String,
    pub dry_run: bool,
    #[schema(value_type = Vec<Object>)]
    pub messages: Vec<Touched>,
}

async fn dlq_act(
    st: &ApiState,
    queue: &str,
    req: DlqRequest,
    action: DlqAction,
) -> Result<Json<DlqResult>, ApiError> {
    let queue = dlq::queue_name(&st.names, queue);
    let sel = Selection {
        saga_id: req.saga,
        limit: req.limit.unwrap_or(1000),
        dry_run: req.dry_run,
    };
    let client = st.broker.client().await?;
    let publisher = Publisher::open(client.connection()).await?;
    let messages = dlq::act(client.connection(), &publisher, &queue, &sel, action).await?;
    publisher.close().await;
    Ok(Json(DlqResult {
        queue,
        dry_run: sel.dry_run,
        messages,
    }))
}

#[utoipa::path(post, path = "/api/dead-letters/{queue}/replay", params(("queue" = String, Path, description = "`coordinator`, an activity or a full queue name")),
    request_body = DlqRequest, responses((status = 200, body = DlqResult)))]
pub async fn replay(
    State(st): State<ApiState>,
    Path(queue): Path<String>,
    Body(req): Body<DlqRequest>,
) -> Result<Json<DlqResult>, ApiError> {
    dlq_act(&st, &queue, req, DlqAction::Replay).await
}

#[utoipa::path(post, path = "/api/dead-letters/{queue}/purge", params(("queue" = String, Path, description = "`coordinator`, an activity or a full queue name")),
    request_body = DlqRequest, responses((status = 200, body = DlqResult)))]
pub async fn purge(
    State(st): State<ApiState>,
    Path(queue): Path<String>,
    Body(req): Body<DlqRequest>,
) -> Result<Json<DlqResult>, ApiError> {
    dlq_act(&st, &queue, req, DlqAction::Purge).await
}

/// The schedules with their state.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleList {
    #[schema(value_type = Vec<Object>)]
    pub schedules: Vec<schedules::ScheduleRow>,
}

#[utoipa::path(get, path = "/api/schedules", responses((status = 200, body = ScheduleList)))]
pub async fn list_schedules(State(st): State<ApiState>) -> Result<Json<ScheduleList>, ApiError> {
    let rows = schedules::list(&st.pool).await?;
    Ok(Json(ScheduleList {
        schedules: rows.into_iter().map(|(row, _)| row).collect(),
    }))
}

/// The result of a schedule operation.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ScheduleDone {
    pub name: String,
    pub op: String,
    /// `trigger`: the id the run will have; `resume`: the next fire time.
    pub detail: Option<String>,
}

#[utoipa::path(post, path = "/api/schedules/{name}/{op}", params(("name" = String, Path), ("op" = String, Path, description = "pause | resume | trigger")),
    responses((status = 200, body = ScheduleDone), (status = 404, body = ErrorBody), (status = 400, body = ErrorBody)))]
pub async fn schedule_op(
    State(st): State<ApiState>,
    Path((name, op)): Path<(String, String)>,
) -> Result<Json<ScheduleDone>, ApiError> {
    let detail = match op.as_str() {
        "pause" => schedule_ops::pause(&st.pool, &name).await.map(|_| None),
        "resume" => schedule_ops::resume(&st.pool, &name, chrono::Utc::now())
            .await
            .map(|n| n.map(|t| t.to_rfc3339())),
        "trigger" => schedule_ops::trigger(&st.pool, &name).await.map(Some),
        other => {
            return Err(ApiError::BadRequest(format!(
                "unknown schedule operation `{other}`: expected pause, resume or trigger"
            )))
        }
    }
    .map_err(|e| match e {
        OpsError::Unknown(n) => ApiError::ScheduleNotFound(n),
        other => ApiError::BadRequest(other.to_string()),
    })?;
    Ok(Json(ScheduleDone { name, op, detail }))
}

fn operator_error(e: crate::ops::OpsError) -> ApiError {
    match e {
        crate::ops::OpsError::NotFound(id) => ApiError::SagaNotFound(id),
        crate::ops::OpsError::Store(e) => ApiError::Store(e),
        crate::ops::OpsError::Client(e) => ApiError::Client(e),
    }
}
