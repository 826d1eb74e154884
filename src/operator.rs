//! Operator actions on stored sagas, shared by the CLI and the HTTP API: select sagas
//! (one id or a filter), check the action against each saga as stored, and send it
//! to those it applies to (the coordinators apply it in their transaction). Both
//! surfaces call [`check`], so `sagaflow sagas retry` and `POST /api/sagas/{id}/actions`
//! refuse exactly the same things.

use serde::Serialize;
use sqlx::PgPool;

use crate::client::{Client, ClientError};
use crate::config::{LimitError, Limits};
use crate::saga::definition::Catalog;
use crate::saga::machine::{operate, IssuedFor, OperatorAction};
use crate::saga::state::SagaState;
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

/// Why an operator action could not be checked at all (a refusal for one saga is a
/// [`Verdict`], not an error).
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no saga with id `{0}`")]
    NotFound(String),
    /// The action itself is over a `[limits]` value (a `skip` output): it would be
    /// refused for every saga, so it is refused before any is read.
    #[error(transparent)]
    Limit(#[from] LimitError),
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

/// Refuses an action no saga could take: a `skip` output is stored as the step's
/// output, so it is held to `limits.payload_bytes` (the coordinator would refuse it).
pub fn admit(action: &OperatorAction, limits: &Limits) -> Result<(), LimitError> {
    if let OperatorAction::Skip { output } = action {
        limits.check_payload("skip output", output)?;
    }
    Ok(())
}

/// Checks `action` against `limits` ([`admit`]), then against each saga as stored
/// (the machine's own [`operate`], so the verdict is the one the coordinator reaches).
pub async fn check(
    pool: &PgPool,
    catalog: &Catalog,
    limits: &Limits,
    ids: &[String],
    action: &OperatorAction,
) -> Result<Vec<Verdict>, OperatorError> {
    admit(action, limits)?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let saga = match sagas::get(pool, id).await {
            Ok(Some(saga)) => saga,
            Ok(None) => return Err(OperatorError::NotFound(id.clone())),
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
        out.push(judge(catalog, id, &saga.state, action));
    }
    Ok(out)
}

/// The verdict on one readable saga: the machine's [`operate`] on a copy of its state,
/// with the definition version it runs.
fn judge(catalog: &Catalog, id: &str, s: &SagaState, action: &OperatorAction) -> Verdict {
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
            match operate(&def, s.clone(), action, &at, None, chrono::Utc::now()) {
                Ok(_) => (None, Some(at)),
                Err(why) => (Some(why), None),
            }
        }
    };
    Verdict {
        saga_id: id.to_string(),
        refused,
        issued_for,
    }
}

/// Sends `action` on behalf of `actor` (recorded in each saga's history) to every
/// saga whose verdict accepted it; returns how many.
pub async fn send(
    client: &Client,
    verdicts: &[Verdict],
    action: &OperatorAction,
    actor: &str,
) -> Result<usize, ClientError> {
    let mut sent = 0;
    for v in verdicts.iter().filter(|v| v.refused.is_none()) {
        let Some(at) = &v.issued_for else {
            continue;
        };
        client.operate(&v.saga_id, action, at, actor).await?;
        sent += 1;
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skip_output_over_payload_bytes_is_refused_before_any_saga_is_read() {
        let limits = Limits {
            payload_bytes: 8,
            ..Limits::default()
        };
        let big = OperatorAction::Skip {
            output: serde_json::json!({"a": "0123456789"}),
        };
        let e = admit(&big, &limits).unwrap_err().to_string();
        assert!(e.starts_with("skip output is"), "{e}");
        assert!(admit(&OperatorAction::Retry, &limits).is_ok());
        let small = OperatorAction::Skip {
            output: serde_json::json!(1),
        };
        assert!(admit(&small, &limits).is_ok());
    }
}
