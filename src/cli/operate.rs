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
use crate::dead_letters::{self, DeadLetterAction, Selection};
use crate::operator;
use crate::saga::machine::OperatorAction;
use crate::store::sagas;

/// Saga-level operator actions, on one saga (`<id>`) or in bulk on the sagas a
/// filter selects (`--saga`, `--status`, `--id-prefix`; `--dry-run` lists them).
#[derive(Debug, Subcommand)]
pub enum SagaAction {
    /// Run the stuck task again (new attempt chain), or a failed saga's failed compensation.
    Retry {
        id: Option<String>,
        #[command(flatten)]
        bulk: Bulk,
    },
    /// Run the saga again from a step (the steps before it must still be completed).
    Resume {
        id: Option<String>,
        #[arg(long)]
        step: String,
        #[command(flatten)]
        bulk: Bulk,
    },
    /// Mark the current step completed with an output and go on.
    Skip {
        id: Option<String>,
        #[arg(long, default_value = "null", value_parser = parse_json)]
        output: Value,
        #[command(flatten)]
        bulk: Bulk,
    },
    /// Stop going forward: undo the completed steps in reverse.
    Compensate {
        id: Option<String>,
        #[command(flatten)]
        bulk: Bulk,
    },
}

/// Which sagas a bulk action selects.
#[derive(Debug, Default, clap::Args)]
pub struct Bulk {
    /// Sagas of this definition.
    #[arg(long)]
    pub saga: Option<String>,
    /// Sagas in this status (e.g. `failed`).
    #[arg(long)]
    pub status: Option<String>,
    /// Sagas whose id starts with this.
    #[arg(long)]
    pub id_prefix: Option<String>,
    /// At most this many sagas.
    #[arg(long, default_value_t = 100)]
    pub limit: i64,
    /// List what the action would do to each selected saga; send nothing.
    #[arg(long)]
    pub dry_run: bool,
}

impl SagaAction {
    fn split(self) -> (Option<String>, Bulk, OperatorAction) {
        match self {
            SagaAction::Retry { id, bulk } => (id, bulk, OperatorAction::Retry),
            SagaAction::Resume { id, step, bulk } => (id, bulk, OperatorAction::ResumeAt { step }),
            SagaAction::Skip { id, output, bulk } => (id, bulk, OperatorAction::Skip { output }),
            SagaAction::Compensate { id, bulk } => (id, bulk, OperatorAction::Compensate),
        }
    }
}

/// The sagas an action targets: the one named, or those the filter selects.
async fn targets(
    pool: &sqlx::PgPool,
    id: &Option<String>,
    bulk: &Bulk,
) -> anyhow::Result<Vec<String>> {
    if let Some(id) = id {
        return Ok(vec![id.clone()]);
    }
    if bulk.saga.is_none() && bulk.status.is_none() && bulk.id_prefix.is_none() {
        anyhow::bail!(
            "expected a saga id, or a filter (--saga, --status, --id-prefix) for a bulk action"
        );
    }
    let f = sagas::ListFilter {
        saga: bulk.saga.clone(),
        status: bulk.status.clone(),
        id_prefix: bulk.id_prefix.clone(),
        ..Default::default()
    };
    Ok(operator::select(pool, &f, bulk.limit).await?)
}

/// Checks the action against each selected saga as stored, then sends it to those it
/// applies to. One saga: a refusal is an error (exit 1). Bulk: one line per saga.
pub async fn saga_action(settings: &Settings, action: SagaAction) -> anyhow::Result<()> {
    let (id, bulk, action) = action.split();
    let catalog = load_catalog(settings)?;
    let pool = pool(settings).await?;
    let ids = targets(&pool, &id, &bulk).await?;
    let verdicts = operator::check(&pool, &catalog, &settings.limits, &ids, &action)
        .await
        .map_err(|e| match e {
            operator::OperatorError::NotFound(id) => anyhow::Error::from(super::SagaNotFound(id)),
            other => other.into(),
        })?;
    if let (Some(_), Some(why)) = (&id, verdicts.first().and_then(|v| v.refused.clone())) {
        anyhow::bail!("{} refused: {why}", action.name());
    }
    if id.is_none() {
        for v in &verdicts {
            match &v.refused {
                Some(why) => println!("  {:<36} refused: {why}", v.saga_id),
                None => println!(
                    "  {:<36} {}{}",
                    v.saga_id,
                    if bulk.dry_run { "would " } else { "" },
                    action.name()
                ),
            }
        }
    }
    let accepted = verdicts.iter().filter(|v| v.refused.is_none()).count();
    if bulk.dry_run {
        println!(
            "dry run: {accepted} of {} selected sagas would accept {}",
            ids.len(),
            action.name()
        );
        return Ok(());
    }
    let client = Client::connect(&settings.amqp.url, &settings.namespace)
        .await?
        .with_limits(settings.limits.clone());
    operator::send(&client, &verdicts, &action).await?;
    client.close().await;
    match id {
        Some(id) => println!(
            "{} sent to {id}; follow it with: sagaflow status {id}",
            action.name()
        ),
        None => println!(
            "{} sent to {accepted} of {} selected sagas",
            action.name(),
            ids.len()
        ),
    }
    Ok(())
}

/// Replays or purges dead letters; prints what was (or would be) touched.
pub async fn dlq_action(
    settings: &Settings,
    queue: &str,
    sel: Selection,
    action: DeadLetterAction,
    json: bool,
) -> anyhow::Result<()> {
    let names = Names::new(&settings.namespace);
    let queue = dead_letters::queue_name(&names, queue);
    let conn = crate::broker::connect(&settings.amqp.url, "sagaflow-cli").await?;
    let publisher = Publisher::open(&conn).await?;
    let touched = dead_letters::act(&conn, &publisher, &queue, &sel, action).await?;
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
        (DeadLetterAction::Replay, false) => "replayed",
        (DeadLetterAction::Purge, false) => "purged",
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
