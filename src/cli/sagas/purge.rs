//! `sagaflow sagas purge`: erasure on demand. Deletes ended sagas with their history
//! and ledger rows (a saga still running is never deleted: cancel it first), in
//! batches that leave sagas another transaction holds for the next batch.

use chrono::{DateTime, Utc};

use super::super::database::pool;
use super::parse_status;
use crate::config::Settings;
use crate::saga::state::SagaStatus;
use crate::store::purge::{self, Selection};

#[derive(Debug, clap::Args)]
pub struct PurgeArgs {
    /// Only these sagas (repeatable).
    #[arg(long = "id")]
    pub ids: Vec<String>,
    /// Only sagas of this definition.
    #[arg(long)]
    pub saga: Option<String>,
    /// Only sagas that ended with this status (completed, compensated, failed, cancelled).
    #[arg(long, value_parser = parse_status)]
    pub status: Option<SagaStatus>,
    /// Only sagas that ended before this instant (RFC 3339).
    #[arg(long)]
    pub before: Option<DateTime<Utc>>,
    /// List what would be deleted (at most 1000), delete nothing.
    #[arg(long)]
    pub dry_run: bool,
}

const BATCH: i64 = 500;

/// The selection the arguments name, or why it is refused ([`purge::refusal`]).
async fn selection(pool: &sqlx::PgPool, args: PurgeArgs) -> anyhow::Result<Selection> {
    let sel = Selection {
        ids: (!args.ids.is_empty()).then_some(args.ids),
        saga: args.saga,
        status: args.status,
        before: args.before,
    };
    if let Some(why) = purge::refusal(pool, &sel).await? {
        anyhow::bail!(
            "{}",
            why.replace(
                "id, saga, status, before",
                "--id, --saga, --status, --before"
            )
        );
    }
    Ok(sel)
}

/// Runs `sagas purge`.
pub async fn run(settings: &Settings, args: PurgeArgs) -> anyhow::Result<()> {
    let dry_run = args.dry_run;
    let pool = pool(settings).await?;
    let sel = selection(&pool, args).await?;
    if dry_run {
        let rows = purge::matching(&pool, &sel, 1000).await?;
        for (id, saga) in &rows {
            println!("{id}\t{saga}");
        }
        println!(
            "{} saga(s) would be purged (dry run; nothing deleted)",
            rows.len()
        );
        return Ok(());
    }
    let mut total = 0;
    loop {
        let n = purge::selected(&pool, &sel, BATCH).await?.len();
        total += n;
        if n < BATCH as usize {
            break;
        }
    }
    println!("{total} saga(s) purged with their history and ledger rows");
    Ok(())
}
