//! Saga endpoints: start, list, show, history, signal, cancel.

use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::auth::Actor;
use super::error::{Body, Params};
use super::{cursor, ApiError, ApiState, ErrorBody};
use crate::client::StartOptions;
use crate::saga::state::SagaStatus;
use crate::store::history::{self, HistoryRow, Order};
use crate::store::sagas::{self, ListFilter, SagaSummary};

const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 500;

/// A start request; the same fields as a start event on the broker.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    pub saga: String,
    /// Business key; a UUID v7 when omitted. Starting an existing id starts nothing.
    pub id: Option<String>,
    #[schema(value_type = Object)]
    pub input: Option<Value>,
    /// Signal-with-start: deliver this signal in the transaction that starts the saga,
    /// or to the saga with this id if it exists (its input is then not compared).
    #[schema(value_type = Option<Object>)]
    pub signal: Option<crate::messages::StartSignal>,
    /// Run after this delay (`250ms`, `30s`, `36h`, `7d`).
    pub delay: Option<String>,
    /// Run at this instant (RFC 3339).
    pub start_at: Option<DateTime<Utc>>,
}

/// The id of a started saga, or of the saga a signal or cancel went to.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Accepted {
    pub id: String,
    /// With `wait`: how the saga ended (absent when it had not within the wait).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// With `wait`: the saga's output (its last completed step's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub output: Option<Value>,
    /// With `wait`: why it did not complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub error: Option<crate::messages::ErrorInfo>,
}

impl Accepted {
    fn id(id: String) -> Self {
        Accepted {
            id,
            status: None,
            output: None,
            error: None,
        }
    }
}

/// `POST /api/sagas?wait=30s`: answer with the outcome once the saga ends, or `202`
/// with its id when it has not within the wait (at most 5 minutes).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StartQuery {
    pub wait: Option<String>,
}

/// The longest `wait` a request may ask for: a waiting request holds a connection.
const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(300);

#[derive(Debug, Deserialize, ToSchema)]
pub struct SignalRequest {
    pub name: String,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub payload: Value,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CancelRequest {
    pub reason: Option<String>,
}

/// Filters and paging of `GET /api/sagas`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    pub saga: Option<String>,
    pub status: Option<String>,
    pub id_prefix: Option<String>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    /// Default 50, at most 500.
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// `true`: only sagas the reconciler flagged stuck that are still not moving.
    pub stuck: Option<bool>,
}

/// One page of sagas, newest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SagaPage {
    pub sagas: Vec<SagaRow>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SagaRow {
    pub id: String,
    pub saga: String,
    pub version: i32,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Present when the row cannot be shown as stored (its state does not match the
    /// row, or a column does not decode): why. The dashboard shows it as `unreadable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreadable: Option<String>,
}

impl From<SagaSummary> for SagaRow {
    fn from(s: SagaSummary) -> Self {
        SagaRow {
            id: s.id,
            saga: s.saga,
            version: s.version,
            status: s.status,
            created_at: s.created_at,
            updated_at: s.updated_at,
            unreadable: s.unreadable,
        }
    }
}

/// A saga's full state. A saga whose stored state cannot be decoded is still a 200:
/// `state` is `null` and `unreadable` holds its columns and the reason (its history
/// stays readable at `/api/sagas/{id}/history`).
#[derive(Debug, Serialize, ToSchema)]
pub struct SagaDetail {
    /// The persisted saga state (status, steps, active task, error); `null` when
    /// unreadable.
    #[schema(value_type = Object)]
    pub state: Option<crate::saga::state::SagaState>,
    /// `{"id", "saga", "version", "status", "wake_at", "created_at", "updated_at",
    /// "reason"}` when the stored state cannot be decoded.
    #[schema(value_type = Object)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreadable: Option<sagas::UnreadableSaga>,
    /// The step names of the saga's definition version, in order (index = `state.steps`).
    pub step_names: Vec<String>,
    /// Per step, the branch names of a parallel step (index = `state.steps[i].branches`),
    /// empty for other steps.
    pub branch_names: Vec<Vec<String>>,
    /// The parent saga's id, for a child saga.
    pub parent: Option<String>,
    /// The child sagas this saga started: `[{"id", "status"}]`, by id.
    #[schema(value_type = Vec<Object>)]
    pub children: Vec<sagas::ChildSaga>,
    /// When a timer (delayed start, sleep, wait timeout, long retry delay, activity
    /// timeout) next wakes this saga, if any.
    pub wake_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One audit-trail entry.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HistoryItem {
    pub at: DateTime<Utc>,
    pub event: String,
    pub step: Option<String>,
    pub attempt: Option<i32>,
    #[schema(value_type = Object)]
    pub detail: Value,
}

impl From<HistoryRow> for HistoryItem {
    fn from(h: HistoryRow) -> Self {
        HistoryItem {
            at: h.at,
            event: h.event,
            step: h.step,
            attempt: h.attempt,
            detail: h.detail,
        }
    }
}

/// Paging of `GET /api/sagas/{id}/history`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Entries per page: default 200, at most 1,000 (more is a 400, not clamped).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page, requested with the same `order`.
    pub cursor: Option<String>,
    /// `asc` (default: oldest first) or `desc` (newest first).
    pub order: Option<String>,
}

/// Entries per history page when `limit` is not given.
pub const HISTORY_DEFAULT_LIMIT: i64 = 200;
/// The largest history page: a saga may have 100,000 entries, and one answer must not
/// carry them all.
pub const HISTORY_MAX_LIMIT: i64 = 1000;

impl HistoryQuery {
    /// The order, the position to start after and the limit, or a 400 saying which
    /// parameter is wrong and what it accepts.
    fn validate(&self) -> Result<(Order, Option<i64>, i64), ApiError> {
        let limit = self.limit.unwrap_or(HISTORY_DEFAULT_LIMIT);
        if !(1..=HISTORY_MAX_LIMIT).contains(&limit) {
            return Err(ApiError::BadRequest(format!(
                "limit must be 1..={HISTORY_MAX_LIMIT}, not {limit}"
            )));
        }
        let order = match &self.order {
            None => Order::Asc,
            Some(o) => o.parse().map_err(ApiError::BadRequest)?,
        };
        let after = match &self.cursor {
            None => None,
            Some(c) => {
                let (after, made_for) = cursor::decode_history(c).ok_or_else(|| {
                    ApiError::BadRequest(
                        "bad cursor: pass the `next_cursor` of a history page unchanged".into(),
                    )
                })?;
                if made_for != order {
                    return Err(ApiError::BadRequest(format!(
                        "bad cursor: it continues a page in order={}, this request asks for order={}",
                        made_for.as_str(),
                        order.as_str()
                    )));
                }
                Some(after)
            }
        };
        Ok((order, after, limit))
    }
}

/// One page of a saga's history.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HistoryPage {
    /// In the order asked for.
    pub entries: Vec<HistoryItem>,
    /// Pass as `cursor` (with the same `order`) for the next page; `null` when there
    /// were no more entries at the time of the request.
    pub next_cursor: Option<String>,
}

#[utoipa::path(post, path = "/sagas", tag = "sagas", request_body = StartRequest, params(StartQuery, ("traceparent" = Option<String>, Header, description = "W3C trace context the saga's trace continues (a new trace when absent or malformed)")),
    responses((status = 202, description = "start published (with `wait`: not ended within it)", body = Accepted),
        (status = 200, description = "with `wait`: the saga ended, with its status and output; without: a saga with this id, saga name and input exists, nothing started", body = Accepted),
        (status = 400, body = ErrorBody), (status = 409, description = "`id_conflict`: the id exists with a different saga name or input", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn start(
    State(st): State<ApiState>,
    Params(q): Params<StartQuery>,
    headers: axum::http::HeaderMap,
    Body(req): Body<StartRequest>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let wait = match q.wait.as_deref() {
        None => None,
        Some(w) => Some(
            crate::saga::definition::parse_duration(w)
                .map_err(|e| ApiError::BadRequest(format!("wait: {e}")))?
                .min(MAX_WAIT),
        ),
    };
    if st.catalog.latest(&req.saga).is_none() {
        return Err(ApiError::BadRequest(format!("unknown saga `{}`", req.saga)));
    }
    if let Some(d) = &req.delay {
        crate::saga::definition::parse_duration(d)
            .map_err(|e| ApiError::BadRequest(format!("delay: {e}")))?;
    }
    if req.delay.is_some() && req.start_at.is_some() {
        return Err(ApiError::BadRequest(
            "give `delay` or `start_at`, not both".into(),
        ));
    }
    let id = req.id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    st.limits.check_id("id", &id)?;
    if crate::scheduler::decide::is_run_id(&id) {
        return Err(ApiError::BadRequest(
            crate::coordinator::input::reserved_id(&id),
        ));
    }
    let input = req.input.unwrap_or_else(|| serde_json::json!({}));
    st.limits.check_payload("start input", &input)?;
    // The coordinator is the authority (it refuses a conflicting start it receives);
    // answering here tells an HTTP caller at once.
    let existing = match &req.signal {
        // A signal-with-start goes to the saga whatever input it was started with.
        Some(_) => None,
        None => crate::store::sagas::get(&st.pool, &id).await?,
    };
    if let Some(stored) = existing {
        let s = &stored.state;
        if let Some(why) =
            crate::coordinator::id_reuse::id_reuse(&id, &s.saga, &s.input, &req.saga, &input)
        {
            return Err(ApiError::IdConflict(why));
        }
        if wait.is_none() || s.status.is_terminal() {
            return Ok((StatusCode::OK, Json(outcome(id, wait.map(|_| s)))));
        }
    }
    let opts = StartOptions {
        id: Some(id.clone()),
        delay: req.delay,
        start_at: req.start_at,
        version: None,
        // The caller's trace: the saga's spans join it (the coordinator checks it
        // and starts a new trace when it is malformed).
        traceparent: headers
            .get(crate::traceparent::HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    };
    let client = st.broker.client().await?;
    let publish = async {
        match req.signal {
            None => client.start(&req.saga, input, opts).await,
            Some(s) => {
                client
                    .signal_with_start(&req.saga, input, opts, &s.name, s.payload)
                    .await
            }
        }
    };
    let Some(wait) = wait else {
        publish.await?;
        return Ok((StatusCode::ACCEPTED, Json(Accepted::id(id))));
    };
    // Subscribed before the start is published, so the terminal event cannot be missed.
    let mut watch = client.watch(&req.saga).await?;
    publish.await?;
    let ended_before = sagas::get(&st.pool, &id)
        .await?
        .is_some_and(|s| s.state.status.is_terminal());
    if !ended_before && watch.ended(&id, wait).await.is_none() {
        return Ok((StatusCode::ACCEPTED, Json(Accepted::id(id))));
    }
    let stored = sagas::get(&st.pool, &id).await?;
    Ok((
        StatusCode::OK,
        Json(outcome(id, stored.as_ref().map(|s| &s.state))),
    ))
}

/// The answer for saga `id`, with its status, output and error when `state` is given.
fn outcome(id: String, state: Option<&crate::saga::state::SagaState>) -> Accepted {
    match state {
        None => Accepted::id(id),
        Some(s) => Accepted {
            id,
            status: Some(s.status.to_string()),
            output: s.output().cloned(),
            error: s.error.clone(),
        },
    }
}

#[utoipa::path(get, path = "/sagas", tag = "sagas", params(ListQuery),
    responses((status = 200, body = SagaPage), (status = 400, body = ErrorBody)))]
pub async fn list(
    State(st): State<ApiState>,
    Params(q): Params<ListQuery>,
) -> Result<Json<SagaPage>, ApiError> {
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be 1..={MAX_LIMIT}"
        )));
    }
    if let Some(s) = &q.status {
        s.parse::<SagaStatus>().map_err(ApiError::BadRequest)?;
    }
    let after = match &q.cursor {
        Some(c) => {
            Some(cursor::decode(c).ok_or_else(|| ApiError::BadRequest("bad cursor".into()))?)
        }
        None => None,
    };
    let filter = ListFilter {
        saga: q.saga,
        status: q.status,
        id_prefix: q.id_prefix,
        created_after: q.created_after,
        created_before: q.created_before,
        after,
        stuck: q.stuck.unwrap_or(false),
    };
    let mut rows = sagas::list(&st.pool, &filter, limit + 1).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = more
        .then(|| rows.last().map(|r| cursor::encode(r.created_at, &r.id)))
        .flatten();
    Ok(Json(SagaPage {
        sagas: rows.into_iter().map(SagaRow::from).collect(),
        next_cursor,
    }))
}

#[utoipa::path(get, path = "/sagas/{id}", tag = "sagas", params(("id" = String, Path)),
    responses((status = 200, body = SagaDetail), (status = 404, body = ErrorBody)))]
pub async fn show(
    State(st): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<SagaDetail>, ApiError> {
    let saga = match sagas::read(&st.pool, &id).await? {
        None => return Err(ApiError::SagaNotFound(id)),
        Some(Ok(saga)) => saga,
        Some(Err(u)) => {
            let epoch = DateTime::<Utc>::default();
            return Ok(Json(SagaDetail {
                state: None,
                step_names: vec![],
                branch_names: vec![],
                parent: None,
                children: sagas::children(&st.pool, &id).await?,
                wake_at: u.wake_at,
                created_at: u.created_at.unwrap_or(epoch),
                updated_at: u.updated_at.unwrap_or(epoch),
                unreadable: Some(*u),
            }));
        }
    };
    let def = st.catalog.get(&saga.state.saga, saga.state.version);
    let steps = def.as_ref().map(|d| d.steps.as_slice()).unwrap_or_default();
    let step_names = steps.iter().map(|s| s.name.clone()).collect();
    let branch_names = steps
        .iter()
        .map(|s| match &s.kind {
            crate::saga::definition::StepKind::Parallel(b) => {
                b.iter().map(|b| b.name.clone()).collect()
            }
            _ => vec![],
        })
        .collect();
    Ok(Json(SagaDetail {
        wake_at: saga.state.next_wake(),
        step_names,
        branch_names,
        parent: saga.state.parent.as_ref().map(|p| p.saga_id.clone()),
        children: sagas::children(&st.pool, &id).await?,
        state: Some(saga.state),
        unreadable: None,
        created_at: saga.created_at,
        updated_at: saga.updated_at,
    }))
}

#[utoipa::path(get, path = "/sagas/{id}/history", tag = "sagas", params(("id" = String, Path), HistoryQuery),
    responses((status = 200, body = HistoryPage),
        (status = 400, description = "a bad `limit`, `cursor` or `order`", body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn history(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    Params(q): Params<HistoryQuery>,
) -> Result<Json<HistoryPage>, ApiError> {
    let (order, after, limit) = q.validate()?;
    has_row(&st, &id).await?;
    let mut rows = history::page(&st.pool, &id, order, after, limit + 1).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = more
        .then(|| rows.last().map(|r| cursor::encode_history(r.id, order)))
        .flatten();
    Ok(Json(HistoryPage {
        entries: rows.into_iter().map(HistoryItem::from).collect(),
        next_cursor,
    }))
}

#[utoipa::path(post, path = "/sagas/{id}/signal", tag = "sagas", params(("id" = String, Path)), request_body = SignalRequest,
    responses((status = 202, body = Accepted), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn signal(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    Body(req): Body<SignalRequest>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    st.limits.check_payload("signal payload", &req.payload)?;
    exists(&st, &id).await?;
    let client = st.broker.client().await?;
    client.signal(&id, &req.name, req.payload).await?;
    Ok((StatusCode::ACCEPTED, Json(Accepted::id(id))))
}

#[utoipa::path(post, path = "/sagas/{id}/cancel", tag = "sagas", params(("id" = String, Path)), request_body = CancelRequest,
    responses((status = 202, body = Accepted), (status = 404, body = ErrorBody)))]
pub async fn cancel(
    State(st): State<ApiState>,
    Extension(Actor(actor)): Extension<Actor>,
    Path(id): Path<String>,
    Body(req): Body<CancelRequest>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    exists(&st, &id).await?;
    // A cancel rides `<ns>.signals` like any service's and carries no actor field: the
    // default reason names who asked.
    let reason = req
        .reason
        .unwrap_or_else(|| format!("cancelled by {actor} (API)"));
    st.broker.client().await?.cancel(&id, &reason).await?;
    Ok((StatusCode::ACCEPTED, Json(Accepted::id(id))))
}

/// 404 before publishing: a signal to an unknown id would only be dead-lettered. A
/// saga whose stored state is unreadable is a 500 `saga_unreadable` naming the
/// reason: the coordinator could only dead-letter what was sent to it.
async fn exists(st: &ApiState, id: &str) -> Result<(), ApiError> {
    match sagas::get(&st.pool, id).await? {
        Some(_) => Ok(()),
        None => Err(ApiError::SagaNotFound(id.to_string())),
    }
}

/// 404 for an unknown id; a saga whose state is unreadable still has a history.
async fn has_row(st: &ApiState, id: &str) -> Result<(), ApiError> {
    match sagas::read(&st.pool, id).await? {
        Some(_) => Ok(()),
        None => Err(ApiError::SagaNotFound(id.to_string())),
    }
}
