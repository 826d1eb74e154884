//! Dead letters over HTTP: list the dead-letter queues with their first messages, and
//! replay or purge the dead letters of one queue (of one saga, with dry runs).

use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{Body, Params};
use super::{ApiError, ApiState, ErrorBody};
use crate::broker::Publisher;
use crate::dead_letters::{
    self, DeadLetter, DeadLetterAction, DeadLetterQueue, Selection, Touched,
};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeadLetterQuery {
    /// Messages shown per queue (default 10, at most 100); they stay in the queue.
    pub limit: Option<usize>,
}

/// Dead-letter queues with their depth, and the first messages of the non-empty ones.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetters {
    #[schema(value_type = Vec<Object>)]
    pub queues: Vec<DeadLetterQueue>,
    #[schema(value_type = Vec<Object>)]
    pub messages: Vec<DeadLetter>,
}

#[utoipa::path(get, path = "/dead-letters", tag = "dead_letters", params(DeadLetterQuery),
    responses((status = 200, body = DeadLetters), (status = 503, body = ErrorBody)))]
pub async fn dead_letters(
    State(st): State<ApiState>,
    Params(q): Params<DeadLetterQuery>,
) -> Result<Json<DeadLetters>, ApiError> {
    let limit = q.limit.unwrap_or(10).min(100);
    let activities: Vec<String> = st.catalog.activities().into_iter().collect();
    let client = st.broker.client().await?;
    let conn = client.connection();
    let queues = dead_letters::summaries(conn, &st.names, &activities).await?;
    let mut messages = Vec::new();
    for q in queues.iter().filter(|q| q.messages > 0) {
        messages.extend(dead_letters::peek(conn, &q.queue, limit).await?);
    }
    Ok(Json(DeadLetters { queues, messages }))
}

/// Which dead letters a replay or purge touches.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct DeadLetterRequest {
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
pub struct DeadLetterResult {
    pub queue: String,
    pub dry_run: bool,
    #[schema(value_type = Vec<Object>)]
    pub messages: Vec<Touched>,
}

async fn act(
    st: &ApiState,
    queue: &str,
    req: DeadLetterRequest,
    action: DeadLetterAction,
) -> Result<Json<DeadLetterResult>, ApiError> {
    let queue = dead_letters::queue_name(&st.names, queue);
    let sel = Selection {
        saga_id: req.saga,
        limit: req.limit.unwrap_or(1000),
        dry_run: req.dry_run,
    };
    let client = st.broker.client().await?;
    let publisher = Publisher::open(client.connection()).await?;
    let messages = dead_letters::act(client.connection(), &publisher, &queue, &sel, action).await?;
    publisher.close().await;
    Ok(Json(DeadLetterResult {
        queue,
        dry_run: sel.dry_run,
        messages,
    }))
}

#[utoipa::path(post, path = "/dead-letters/{queue}/replay", tag = "dead_letters", params(("queue" = String, Path, description = "`coordinator`, an activity or a full queue name")),
    request_body = DeadLetterRequest, responses((status = 200, body = DeadLetterResult)))]
pub async fn replay(
    State(st): State<ApiState>,
    Path(queue): Path<String>,
    Body(req): Body<DeadLetterRequest>,
) -> Result<Json<DeadLetterResult>, ApiError> {
    act(&st, &queue, req, DeadLetterAction::Replay).await
}

#[utoipa::path(post, path = "/dead-letters/{queue}/purge", tag = "dead_letters", params(("queue" = String, Path, description = "`coordinator`, an activity or a full queue name")),
    request_body = DeadLetterRequest, responses((status = 200, body = DeadLetterResult)))]
pub async fn purge(
    State(st): State<ApiState>,
    Path(queue): Path<String>,
    Body(req): Body<DeadLetterRequest>,
) -> Result<Json<DeadLetterResult>, ApiError> {
    act(&st, &queue, req, DeadLetterAction::Purge).await
}
