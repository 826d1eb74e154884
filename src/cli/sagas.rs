//! `sagaflow sagas …` and `sagaflow queues`: the CLI mirror of the HTTP API's reads,
//! straight against Postgres and the broker.

use clap::Subcommand;

use super::{load_catalog, pool};
use crate::config::Settings;
use crate::saga::state::SagaStatus;
use crate::store::sagas::{self, ListFilter};

/// Exit code 3: the saga asked for does not exist (`main` maps this error to it).
#[derive(Debug, thiserror::Error)]
#[error("no saga with id `{0}`")]
pub struct SagaNotFound(pub String);

#[derive(Debug, Subcommand)]
pub enum SagasCmd {
    /// Sagas, newest first.
    List {
        #[arg(long)]
        saga: Option<String>,
        #[arg(long, value_parser = parse_status)]
        status: Option<SagaStatus>,
        #[arg(long)]
        id_prefix: Option<String>,
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..=500))]
        limit: i64,
        /// Only sagas the reconciler flagged stuck (nothing will move them) that are
        /// still not moving.
        #[arg(long)]
        stuck: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// A saga's status and history (same as `sagaflow status`).
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

fn parse_status(s: &str) -> Result<SagaStatus, String> {
    s.parse()
}

pub async fn run(settings: &Settings, cmd: SagasCmd) -> anyhow::Result<()> {
    match cmd {
        SagasCmd::Show { id, json } => status(settings, &id, json).await,
        SagasCmd::List {
            saga,
            status,
            id_prefix,
            limit,
            stuck,
            json,
        } => {
            let filter = ListFilter {
                saga,
                status: status.map(|s| s.as_str().to_string()),
                id_prefix,
                stuck,
                ..Default::default()
            };
            let rows = sagas::list(&pool(settings).await?, &filter, limit).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
                return Ok(());
            }
            println!(
                "{:<40} {:<24} {:>3} {:<13} {:<20} updated",
                "id", "saga", "v", "status", "created"
            );
            for r in rows {
                println!(
                    "{:<40} {:<24} {:>3} {:<13} {:<20} {}",
                    r.id,
                    r.saga,
                    r.version,
                    // The reason is in `--json` and in `sagaflow status <id>`.
                    if r.unreadable.is_some() {
                        "unreadable"
                    } else {
                        r.status.as_str()
                    },
                    r.created_at.format("%Y-%m-%d %H:%M:%S"),
                    r.updated_at.format("%Y-%m-%d %H:%M:%S")
                );
            }
            Ok(())
        }
    }
}

/// `sagaflow queues`: ready messages and consumers of every task queue.
pub async fn queues(settings: &Settings, json: bool) -> anyhow::Result<()> {
    let catalog = load_catalog(settings)?;
    let activities: Vec<String> = catalog.activities().into_iter().collect();
    let names = crate::broker::Names::new(&settings.namespace);
    let conn = crate::broker::connect(&settings.amqp.url, "sagaflow-cli").await?;
    let queues = crate::broker::inspect::task_queues(&conn, &names, &activities).await?;
    conn.close("bye").await;
    if json {
        println!("{}", serde_json::to_string_pretty(&queues)?);
        return Ok(());
    }
    println!(
        "{:<32} {:>8} {:>9}  queue",
        "activity", "ready", "consumers"
    );
    for q in queues {
        println!(
            "{:<32} {:>8} {:>9}  {}",
            q.activity, q.ready, q.consumers, q.queue
        );
    }
    Ok(())
}

/// `sagaflow status <id>` / `sagaflow sagas show <id>`: the saga and its history.
pub async fn status(settings: &Settings, id: &str, json: bool) -> anyhow::Result<()> {
    let pool = pool(settings).await?;
    let saga = match sagas::read(&pool, id).await? {
        None => return Err(SagaNotFound(id.to_string()).into()),
        Some(Ok(saga)) => saga,
        Some(Err(u)) => return unreadable(&pool, *u, json).await,
    };
    let history = sagas::history(&pool, id).await?;
    if json {
        let out = serde_json::json!({ "saga": saga.state, "created_at": saga.created_at, "updated_at": saga.updated_at, "history": history });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let s = &saga.state;
    println!("saga     {} ({} v{})", s.id, s.saga, s.version);
    println!("status   {}", s.status);
    if let Some(at) = s.run_at {
        println!("runs at  {}", at.to_rfc3339());
    }
    if let Some(at) = s.next_wake().filter(|_| s.run_at.is_none()) {
        println!(
            "wakes at {} (sleep, wait timeout, activity timeout or parked retry)",
            at.to_rfc3339()
        );
    }
    println!(
        "created  {}   updated {}",
        saga.created_at.to_rfc3339(),
        saga.updated_at.to_rfc3339()
    );
    if let Some(e) = &s.error {
        println!("error    {}: {}", e.code, e.message);
    }
    println!(
        "\n{:<28} {:<26} {:<18} {:>7}  detail",
        "at", "event", "step", "attempt"
    );
    for h in history {
        let attempt = h.attempt.map(|a| a.to_string()).unwrap_or_default();
        let detail = if h.detail == serde_json::json!({}) {
            String::new()
        } else {
            h.detail.to_string()
        };
        println!(
            "{:<28} {:<26} {:<18} {:>7}  {}",
            h.at.format("%Y-%m-%d %H:%M:%S%.3f"),
            h.event,
            h.step.unwrap_or_default(),
            attempt,
            detail
        );
    }
    Ok(())
}

/// `status` of a saga whose stored state cannot be decoded: what its columns say, the
/// reason and its history, then an error (exit code 1) naming the reason.
async fn unreadable(
    pool: &sqlx::PgPool,
    u: sagas::UnreadableSaga,
    json: bool,
) -> anyhow::Result<()> {
    let history = sagas::history(pool, &u.id).await?;
    if json {
        let out = serde_json::json!({ "saga": null, "unreadable": &u, "history": history });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Err(u.error().into());
    }
    let or_unknown = |v: Option<String>| v.unwrap_or_else(|| "?".into());
    println!(
        "saga     {} ({} v{})",
        u.id,
        or_unknown(u.saga.clone()),
        or_unknown(u.version.map(|v| v.to_string()))
    );
    println!(
        "status   unreadable (the status column says {})",
        or_unknown(u.status.clone())
    );
    println!("reason   {}", u.reason);
    println!(
        "\n{:<28} {:<26} {:<18} {:>7}  detail",
        "at", "event", "step", "attempt"
    );
    for h in history {
        println!(
            "{:<28} {:<26} {:<18} {:>7}  {}",
            h.at.format("%Y-%m-%d %H:%M:%S%.3f"),
            h.event,
            h.step.unwrap_or_default(),
            h.attempt.map(|a| a.to_string()).unwrap_or_default(),
            h.detail
        );
    }
    Err(u.error().into())
}
