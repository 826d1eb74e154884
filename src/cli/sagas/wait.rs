//! `sagaflow sagas start --wait`: start a saga and wait for its outcome, for scripts
//! and for a caller that needs the result (a checkout). Prints the terminal status
//! and output as JSON; the exit code says how it ended.

use std::time::Duration;

use serde_json::json;

use crate::client::{Client, StartOptions};
use crate::saga::state::SagaStatus;
use crate::store::sagas;

/// How a waited-for saga ended, as the process exit code (`main` maps it): 0
/// completed, 4 compensated, 5 failed, 6 cancelled, 7 still running when the wait ran
/// out.
#[derive(Debug, thiserror::Error)]
#[error("saga `{id}` {outcome}")]
pub struct NotCompleted {
    pub id: String,
    pub outcome: String,
    pub code: u8,
}

fn exit_code(status: SagaStatus) -> u8 {
    match status {
        SagaStatus::Completed => 0,
        SagaStatus::Compensated => 4,
        SagaStatus::Failed => 5,
        SagaStatus::Cancelled => 6,
        _ => 7,
    }
}

/// Starts `saga` and waits up to `within` for it to end. The subscription to its
/// events is made before the start is published; the stored saga is read after, so
/// a saga with this id that had already ended (a repeated start) answers at once.
pub async fn start_and_wait(
    client: &Client,
    pool: &sqlx::PgPool,
    saga: &str,
    input: serde_json::Value,
    opts: StartOptions,
    within: Duration,
) -> anyhow::Result<()> {
    let id = opts.id.clone().unwrap_or_default();
    let mut watch = client.watch(saga).await?;
    client.start(saga, input, opts).await?;
    let ended_before = sagas::get(pool, &id)
        .await?
        .is_some_and(|s| s.state.status.is_terminal());
    if !ended_before && watch.ended(&id, within).await.is_none() {
        println!(
            "{}",
            json!({"id": id, "status": "running", "waited": format!("{within:?}")})
        );
        return Err(NotCompleted {
            id,
            outcome: format!("had not ended after {within:?} (it goes on running)"),
            code: 7,
        }
        .into());
    }
    let Some(stored) = sagas::get(pool, &id).await? else {
        anyhow::bail!("saga `{id}` ended but is no longer stored (purged by its retention?)");
    };
    let s = &stored.state;
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "id": id, "saga": s.saga, "status": s.status, "output": s.output(), "error": s.error,
        }))?
    );
    match exit_code(s.status) {
        0 => Ok(()),
        code => Err(NotCompleted {
            id,
            outcome: format!("ended {}", s.status),
            code,
        }
        .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_ending_has_its_own_exit_code() {
        let codes: Vec<u8> = SagaStatus::ALL.iter().map(|s| exit_code(*s)).collect();
        // scheduled, running, compensating: still going when the wait ran out.
        assert_eq!(codes, [7, 7, 7, 0, 4, 5, 6]);
    }
}
