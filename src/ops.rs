//! Operator actions on stored sagas, shared by the CLI and the HTTP API: select sagas
//! (one id or a filter), check the action against each saga as stored, and send it
//! to those it applies to (the coordinators apply it in their transaction).

use serde::Serialize;
use sqlx::PgPool;

use crate::client::{Client, ClientError};
use crate::saga::definition::Catalog;
use crate::saga::machine::{operate, IssuedFor, OperatorAction};
use crate::store::sagas::{self, ListFilter};
use crate::store::StoreError;

/// What the check said for one saga.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub saga_id: String,
    /// `None` when the action applies; otherwise why not.
    pub refused: Option<String>,
    /// Where the saga stood when it was checked: sent with the action, so the
    /// coordinator refuses it if the saga moved on before it arrived.
    #[serde(skip)]
    pub issued_for: Option<IssuedFor>,
}

/// Why an operation could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("broker: {0}")]
    Client(#[from] ClientError),
    #[error("no saga with id `{0}`")]
    NotFound(String),
}

/// The ids of the sagas `filter` selects, newest first, at most `limit`.
pub async fn select(
    pool: &PgPool,
    filter: &ListFilter,
    limit: i64,
) -> Result<Vec<String>, StoreError> {
    Ok(sagas::list(pool, filter, limit.max(1))
        .await?
        .into_iter()
        .map(|s| s.id)
        .collect())
}

/// Checks `action` against each saga as stored.
pub async fn check(
    pool: &PgPool,
    catalog: &Catalog,
    ids: &[String],
    action: &OperatorAction,
) -> Result<Vec<Verdict>, OpsError> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let saga = match sagas::get(pool, id).await {
            Ok(Some(saga)) => saga,
            Ok(None) => return Err(OpsError::NotFound(id.clone())),
            // One unreadable saga in a bulk selection is refused, not the whole request.
            Err(e @ StoreError::Corrupt { .. }) => {
                out.push(Verdict {
                    saga_id: id.clone(),
                    refused: Some(e.to_string()),
                    issued_for: None,
                });
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let s = &saga.state;
        let (refused, issued_for) = match catalog.get(&s.saga, s.version) {
            None => (
                Some(format!(
                    "definition {} v{} is not loaded here",
                    s.saga, s.version
                )),
                None,
            ),
            Some(def) => {
                let at = IssuedFor::of(&def, s);
                match operate(&def, s.clone(), action, &at, chrono::Utc::now()) {
                    Ok(_) => (None, Some(at)),
                    Err(why) => (Some(why), None),
                }
            }
        };
        out.push(Verdict {
            saga_id: id.clone(),
            refused,
            issued_for,
        });
    }
    Ok(out)
}

/// Sends `action` to every saga whose verdict accepted it; returns how many.
pub async fn send(
    client: &Client,
    verdicts: &[Verdict],
    action: &OperatorAction,
) -> Result<usize, ClientError> {
    let mut sent = 0;
    for v in verdicts.iter().filter(|v| v.refused.is_none()) {
        let Some(at) = &v.issued_for else {
            continue;
        };
        client.operate(&v.saga_id, action, at).await?;
        sent += 1;
    }
    Ok(sent)
}
