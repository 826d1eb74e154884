//! `GET /api/versions`: the version drain ([`crate::versions`]) against the
//! definitions this API process loaded, the same report as `sagaflow versions --json`.

use axum::extract::State;
use axum::Json;

use super::{ApiError, ApiState, ErrorBody};
use crate::versions::{self, Report};

#[utoipa::path(get, path = "/versions", tag = "versions",
    description = "Per definition name and version: whether this process loads it, its scheduled, running, compensating and failed sagas, the schedules that start it (counted on the latest loaded version only), and whether it is safe to unload.",
    responses((status = 200, body = Report), (status = 503, body = ErrorBody)))]
pub async fn versions(State(st): State<ApiState>) -> Result<Json<Report>, ApiError> {
    let stored = crate::store::versions::stored(&st.pool).await?;
    Ok(Json(versions::report(
        &versions::loaded(&st.catalog),
        &stored,
    )))
}
