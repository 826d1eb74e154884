//! Queue views: the task queues as the broker counts them, and the scaling signal
//! (work outstanding per activity, as Postgres counts it) that an autoscaler reads.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::Params;
use super::{ApiError, ApiState, ErrorBody};
use crate::broker::inspect::{self, TaskQueue};
use crate::store::stats::{self, ActivityLoad};

/// Counts of every task queue of the loaded definitions plus the coordinator queue.
pub async fn queue_views(st: &ApiState) -> Result<Vec<TaskQueue>, ApiError> {
    let activities: Vec<String> = st.catalog.activities().into_iter().collect();
    let client = st.broker.client().await?;
    Ok(inspect::task_queues(client.connection(), &st.names, &activities).await?)
}

#[utoipa::path(get, path = "/queues", tag = "queues",
    responses((status = 200, body = [TaskQueue]), (status = 503, body = ErrorBody)))]
pub async fn queues(State(st): State<ApiState>) -> Result<Json<Vec<TaskQueue>>, ApiError> {
    Ok(Json(queue_views(&st).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ScalingQuery {
    /// Seconds ahead in which a parked retry counts as due soon (default 60).
    pub window: Option<f64>,
}

/// The scaling signal of one activity.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ActivityScaling {
    pub outstanding: i64,
    pub due_soon: i64,
    pub oldest_age_seconds: f64,
    /// `outstanding + due_soon`: the value a KEDA `metrics-api` trigger reads.
    pub desired_workload: i64,
}

/// Shaped for KEDA's `metrics-api` scaler, e.g. `valueLocation:
/// activities.payments\.charge.desired_workload`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Scaling {
    pub activities: BTreeMap<String, ActivityScaling>,
}

pub const DEFAULT_WINDOW_SECS: f64 = 60.0;

/// Load per activity; activities of the catalog with no work report zeros, so a
/// scaler always finds its key.
pub async fn activity_loads(st: &ApiState, window: f64) -> Result<Vec<ActivityLoad>, ApiError> {
    let mut loads: BTreeMap<String, ActivityLoad> = st
        .catalog
        .activities()
        .into_iter()
        .map(|a| {
            let zero = ActivityLoad {
                activity: a.clone(),
                outstanding: 0,
                due_soon: 0,
                oldest_age_seconds: 0.0,
            };
            (a, zero)
        })
        .collect();
    for l in stats::activity_load(&st.pool, window).await? {
        loads.insert(l.activity.clone(), l);
    }
    Ok(loads.into_values().collect())
}

#[utoipa::path(get, path = "/scaling", tag = "queues", params(ScalingQuery),
    responses((status = 200, body = Scaling), (status = 400, body = ErrorBody)))]
pub async fn scaling(
    State(st): State<ApiState>,
    Params(q): Params<ScalingQuery>,
) -> Result<Json<Scaling>, ApiError> {
    let window = q.window.unwrap_or(DEFAULT_WINDOW_SECS);
    if !(0.0..=86_400.0).contains(&window) {
        return Err(ApiError::BadRequest(
            "window must be 0..=86400 seconds".into(),
        ));
    }
    let activities = activity_loads(&st, window)
        .await?
        .into_iter()
        .map(|l| (l.activity.clone(), signal(&l)))
        .collect();
    Ok(Json(Scaling { activities }))
}

/// One activity's load as the scaler reads it.
fn signal(l: &ActivityLoad) -> ActivityScaling {
    ActivityScaling {
        outstanding: l.outstanding,
        due_soon: l.due_soon,
        oldest_age_seconds: l.oldest_age_seconds,
        desired_workload: l.outstanding + l.due_soon,
    }
}
