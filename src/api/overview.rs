//! `GET /api/overview`: what the dashboard's home page shows. Sagas per definition and
//! status, sagas started and ended per minute over the last hour, the stuck-saga count
//! (the `sagaflow_stuck_sagas` gauge) and the oldest open sagas. Postgres only: the
//! page reads dead letters from `GET /api/dead-letters`, so a broker outage leaves
//! the rest of the overview readable.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::sagas::SagaRow;
use super::{ApiError, ApiState, ErrorBody};
use crate::store::overview::{self, Minute};
use crate::store::{stats, stuck};

/// How many open sagas the overview lists.
const OLDEST: i64 = 10;

#[derive(Debug, Serialize, ToSchema)]
pub struct Overview {
    /// When the overview was read (this API process's clock): in the last minute of `throughput`.
    pub now: DateTime<Utc>,
    /// Sagas per definition name and status (all versions together).
    pub counts: Vec<StatusCount>,
    /// One entry per minute of the last hour, oldest first, the current minute last.
    pub throughput: Vec<Minute>,
    /// Open sagas the reconciler flagged stuck and that are still not moving.
    pub stuck: i64,
    /// The ten oldest running or compensating sagas, oldest first.
    pub oldest_open: Vec<SagaRow>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StatusCount {
    pub saga: String,
    pub status: String,
    pub count: i64,
}

#[utoipa::path(get, path = "/overview", tag = "sagas",
    description = "The dashboard's home page: sagas per definition and status, sagas started and ended (completed, compensated, failed, cancelled) per minute over the last hour, the stuck count and the ten oldest running or compensating sagas. Dead letters are in `GET /api/dead-letters`.",
    responses((status = 200, body = Overview), (status = 503, body = ErrorBody)))]
pub async fn overview(State(st): State<ApiState>) -> Result<Json<Overview>, ApiError> {
    let now = Utc::now();
    let (counts, throughput, stuck, oldest) = tokio::try_join!(
        stats::sagas_by_name_status(&st.pool),
        overview::throughput(&st.pool, now),
        stuck::count(&st.pool),
        overview::oldest_open(&st.pool, OLDEST),
    )?;
    Ok(Json(Overview {
        now,
        counts: counts
            .into_iter()
            .map(|(saga, status, count)| StatusCount {
                saga,
                status,
                count,
            })
            .collect(),
        throughput,
        stuck,
        oldest_open: oldest.into_iter().map(SagaRow::from).collect(),
    }))
}
