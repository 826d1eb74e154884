//! Schedules over HTTP: list them with their state; pause, resume or trigger one. The
//! work is [`crate::scheduler::admin`]'s, as for `sagaflow schedules …`.

use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiError, ApiState, ErrorBody};
use crate::scheduler::admin::{self, ScheduleAdminError};
use crate::store::schedules;

/// The schedules with their state.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleList {
    #[schema(value_type = Vec<Object>)]
    pub schedules: Vec<schedules::ScheduleRow>,
}

#[utoipa::path(get, path = "/schedules", tag = "schedules", responses((status = 200, body = ScheduleList)))]
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

#[utoipa::path(post, path = "/schedules/{name}/{op}", tag = "schedules", params(("name" = String, Path), ("op" = String, Path, description = "pause | resume | trigger")),
    responses((status = 200, body = ScheduleDone), (status = 404, body = ErrorBody), (status = 400, body = ErrorBody)))]
pub async fn schedule_op(
    State(st): State<ApiState>,
    Path((name, op)): Path<(String, String)>,
) -> Result<Json<ScheduleDone>, ApiError> {
    let detail = match op.as_str() {
        "pause" => admin::pause(&st.pool, &name).await.map(|_| None),
        "resume" => admin::resume(&st.pool, &name, chrono::Utc::now())
            .await
            .map(|n| n.map(|t| t.to_rfc3339())),
        "trigger" => admin::trigger(&st.pool, &name).await.map(Some),
        other => {
            return Err(ApiError::BadRequest(format!(
                "unknown schedule operation `{other}`: expected pause, resume or trigger"
            )))
        }
    }
    .map_err(admin_error)?;
    Ok(Json(ScheduleDone { name, op, detail }))
}

fn admin_error(e: ScheduleAdminError) -> ApiError {
    match e {
        ScheduleAdminError::Unknown(n) => ApiError::ScheduleNotFound(n),
        other => ApiError::BadRequest(other.to_string()),
    }
}
