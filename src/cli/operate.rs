//! Operator commands: act on a stuck or failed saga (`retry`, `resume`, `skip`,
//! `compensate`) and on dead letters (`dlq replay|purge`). Saga actions are checked
//! against the saga's current state first, so a refusal is immediate and exits 1;
//! an accepted action is sent to the coordinators, which apply it in a transaction
//! (and dead-letter it with the reason if the saga changed in the meantime).

use clap::Subcommand;
use serde_json::Value;

use super::{load_catalog, parse_json, pool};
use crate::broker::{Names, Publisher};
use crate::client::Client;
use crate::config::Settings;
use crate::dlq::{self, DlqAction, Selection};
use crate::saga::machine::{operate, OperatorAction};
use crate::store::sagas;

/// Saga-level operator actions.
#[derive(Debug, Subcommand)]
pub enum SagaAction {
    /// Run the stuck task again (new attempt chain), or a failed saga's failed compensation.
    Retry { id: String },
    /// Run the saga again from a step (the steps before it must still be completed).
    Resume {
        id: String,
        #[arg(long)]
        step: String,
    },
    /// Mark the current step completed with an output and go on.
    Skip {
        id: String,
        #[arg(long, default_value = "null", value_parser = parse_json)]
        output: Value,
    },
    /// Stop going forward: undo the completed steps in reverse.
    Compensate { id: String },
}

impl SagaAction {
    fn split(self) -> (String, OperatorAction) {
        match self {
            SagaAction::Retry { id } => (id, OperatorAction::Retry),
            SagaAction::Resume { id, step } => (id, OperatorAction::ResumeAt { step }),
            SagaAction::Skip { id, output } => (id, OperatorAction::Skip { output }),
            SagaAction::Compensate { id } => (id, OperatorAction::Compensate),
        }
    }
}

/// Checks the action against the saga as stored, then sends it.
pub async fn saga_action(settings: &Settings, action: SagaAction) -> anyhow::Result<()> {
    let (id, action) = action.split();
    let catalog = load_catalog(settings)?;
    let pool = pool(settings).await?;
    let Some(saga) = sagas::get(&pool, &id).await? else {
        return Err(super::SagaNotFound(id).into());
    };
    let s = &saga.state;
    let def = catalog.get(&s.saga, s.version).ok_or_else(|| {
        anyhow::anyhow!(
            "definition {} v{} is not in {}",
            s.saga,
            s.version,
            settings.sagas_dir.display()
        )
    })?;
    operate(&def, saga.state.clone(), &action, chrono::Utc::now())
        .map_err(|why| anyhow::anyhow!("{} refused: {why}", action.name()))?;
    let client = Client::connect(&settings.amqp.url, &settings.namespace).await?;
    client.operate(&id, &action).await?;
    client.close().await;
    println!(
        "{} sent to {id}; follow it with: sagaflow status {id}",
        action.name()
    );
    Ok(())
}

/// Replays or purges dead letters; prints what was (or would be) touched.
pub async fn dlq_action(
    settings: &Settings,
    queue: &str,
    sel: Selection,
    action: DlqAction,
    json: bool,
) -> anyhow::Result<()> {
    let names = Names::new(&settings.namespace);
    let queue = dlq::queue_name(&names, queue);
    let conn = crate::broker::connect(&settings.amqp.url, "sagaflow-cli").await?;
    let publisher = Publisher::open(&conn).await?;
    let touched = dlq::act(&conn, &publisher, &queue, &sel, action).await?;
    let _ = conn.close(200, "bye".into()).await;
    if json {
        println!(
            "{}",
            serde_json::json!({ "queue": queue, "dry_run": sel.dry_run, "messages": touched })
        );
        return Ok(());
    }
    let verb = match (action, sel.dry_run) {
        (_, true) => "would touch",
        (DlqAction::Replay, false) => "replayed",
        (DlqAction::Purge, false) => "purged",
    };
    let applied = touched.iter().filter(|t| t.applied).count();
    println!(
        "{queue}: {verb} {}",
        if sel.dry_run { touched.len() } else { applied }
    );
    for t in &touched {
        let saga = t.about.saga_id.as_deref().unwrap_or("-");
        let step = t.about.step.as_deref().unwrap_or("-");
        let left = if !sel.dry_run && !t.applied {
            "  (left in place)"
        } else {
            ""
        };
        println!(
            "  saga {saga:<28} step {step:<20} reason: {}{left}",
            t.reason
        );
    }
    Ok(())
}
