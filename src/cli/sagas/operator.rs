//! `sagaflow sagas retry|resume-at|skip|compensate`: operator actions on a stuck or
//! failed saga, or in bulk on the sagas a filter selects. Each action goes through
//! [`crate::operator::check`] (the check the HTTP API makes too), so a refusal is
//! immediate and exits 1; an accepted action is sent to the coordinators, which apply
//! it in a transaction (and dead-letter it with the reason if the saga changed since).

use super::{client, SagaNotFound};
use crate::cli::database::pool;
use crate::cli::definitions::load_catalog;
use crate::config::Settings;
use crate::operator::{self, OperatorError, Verdict};
use crate::saga::machine::OperatorAction;
use crate::store::sagas::ListFilter;

/// Which sagas a bulk action selects, when no id is given.
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
    let f = ListFilter {
        saga: bulk.saga.clone(),
        status: bulk.status.clone(),
        id_prefix: bulk.id_prefix.clone(),
        ..Default::default()
    };
    Ok(operator::select(pool, &f, bulk.limit).await?)
}

/// Checks the action against each selected saga as stored, then sends it to those it
/// applies to. One saga: a refusal is an error (exit 1). Bulk: one line per saga.
pub async fn act(
    settings: &Settings,
    id: Option<String>,
    bulk: Bulk,
    action: OperatorAction,
) -> anyhow::Result<()> {
    let catalog = load_catalog(settings)?;
    let pool = pool(settings).await?;
    let ids = targets(&pool, &id, &bulk).await?;
    let verdicts = operator::check(&pool, &catalog, &settings.limits, &ids, &action)
        .await
        .map_err(|e| match e {
            OperatorError::NotFound(id) => anyhow::Error::from(SagaNotFound(id)),
            other => other.into(),
        })?;
    if let (Some(_), Some(why)) = (&id, verdicts.first().and_then(|v| v.refused.clone())) {
        anyhow::bail!("{} refused: {why}", action.name());
    }
    if id.is_none() {
        print_verdicts(&verdicts, &action, bulk.dry_run);
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
    let client = client(settings).await?;
    operator::send(&client, &verdicts, &action, &actor()).await?;
    client.close().await;
    match id {
        Some(id) => println!(
            "{} sent to {id}; follow it with: sagaflow sagas show {id}",
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

/// Who acts, as the saga's history records it: `cli:<the OS user>` (`$USER`, else
/// `$LOGNAME`). Like any actor it is what the sender says: the broker credentials are
/// what is checked.
fn actor() -> String {
    let user = ["USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "unknown".into());
    format!("cli:{user}")
}

/// One line per selected saga: what the action does (or would do) to it, or why not.
fn print_verdicts(verdicts: &[Verdict], action: &OperatorAction, dry_run: bool) {
    for v in verdicts {
        match &v.refused {
            Some(why) => println!("  {:<36} refused: {why}", v.saga_id),
            None => println!(
                "  {:<36} {}{}",
                v.saga_id,
                if dry_run { "would " } else { "" },
                action.name()
            ),
        }
    }
}
