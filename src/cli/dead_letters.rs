//! `sagaflow dead-letters list|show|replay|purge` (the deprecated spelling is `dlq`):
//! what is in the dead-letter queues, why, which saga it belongs to, and replaying or
//! purging a selection of it. The CLI mirror of `/api/dead-letters…`.

use clap::Subcommand;

use super::definitions::load_catalog;
use crate::broker::{Names, Publisher};
use crate::config::Settings;
use crate::dead_letters::{self, DeadLetter, DeadLetterAction, Selection, Touched};

#[derive(Debug, Subcommand)]
pub enum DeadLettersCmd {
    /// Dead-letter queues with their depth and the first messages with their reasons.
    List {
        #[arg(long, default_value_t = 10)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// One dead-letter queue's messages with their reason, saga, step and attempt.
    Show {
        /// `coordinator`, an activity name, or a full queue name.
        queue: String,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Publish dead letters again where they were going (the ledger and the saga
    /// machine make a second replay harmless), then remove them.
    Replay(Select),
    /// Remove dead letters.
    Purge(Select),
}

/// Which dead letters a replay or purge touches.
#[derive(Debug, clap::Args)]
pub struct Select {
    /// `coordinator`, an activity name, or a full queue name.
    pub queue: String,
    /// Only the dead letters of this saga.
    #[arg(long)]
    pub saga: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 1000)]
    pub limit: usize,
    /// List what would be touched and touch nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long)]
    pub json: bool,
}

impl Select {
    fn selection(&self) -> Selection {
        Selection {
            saga_id: self.saga.clone(),
            limit: self.limit,
            dry_run: self.dry_run,
        }
    }
}

/// Runs one `dead-letters` subcommand.
pub async fn run(settings: &Settings, cmd: DeadLettersCmd) -> anyhow::Result<()> {
    match cmd {
        DeadLettersCmd::List { limit, json } => list(settings, limit, json).await,
        DeadLettersCmd::Show { queue, limit, json } => show(settings, &queue, limit, json).await,
        DeadLettersCmd::Replay(s) => act(settings, &s, DeadLetterAction::Replay).await,
        DeadLettersCmd::Purge(s) => act(settings, &s, DeadLetterAction::Purge).await,
    }
}

/// Every dead-letter queue of the loaded definitions (and the demo's activities, which
/// this binary hosts) with its depth, then the first messages of the non-empty ones.
async fn list(settings: &Settings, limit: usize, json: bool) -> anyhow::Result<()> {
    let catalog = load_catalog(settings)?;
    let mut activities: Vec<String> = catalog.activities().into_iter().collect();
    activities.extend(crate::tools::demo::activity_names());
    activities.sort();
    activities.dedup();
    let names = Names::new(&settings.namespace);
    let conn = crate::broker::connect(&settings.amqp.url, "sagaflow-cli").await?;
    let queues = dead_letters::summaries(&conn, &names, &activities).await?;
    let mut letters = Vec::new();
    for q in queues.iter().filter(|q| q.messages > 0) {
        letters.extend(dead_letters::peek(&conn, &q.queue, limit).await?);
    }
    if json {
        println!(
            "{}",
            serde_json::json!({ "queues": queues, "messages": letters })
        );
        return Ok(());
    }
    for q in &queues {
        println!("{:<48} {:>8}", q.queue, q.messages);
    }
    print_letters(&letters, false)
}

/// One queue's first `limit` messages, left in place.
async fn show(settings: &Settings, queue: &str, limit: usize, json: bool) -> anyhow::Result<()> {
    let names = Names::new(&settings.namespace);
    let queue = dead_letters::queue_name(&names, queue);
    let conn = crate::broker::connect(&settings.amqp.url, "sagaflow-cli").await?;
    let letters = dead_letters::peek(&conn, &queue, limit).await?;
    conn.close("bye").await;
    print_letters(&letters, json)
}

/// Dead letters as JSON or as text with the saga each belongs to.
fn print_letters(letters: &[DeadLetter], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(letters)?);
        return Ok(());
    }
    for l in letters {
        let a = &l.about;
        println!("\n[{}] reason: {}", l.queue, l.reason);
        if let Some(saga) = &a.saga_id {
            let attempt = a
                .attempt
                .map(|n| format!(", attempt {n}"))
                .unwrap_or_default();
            println!(
                "  saga: {saga} (step {}{attempt}): sagaflow sagas show {saga}",
                a.step.as_deref().unwrap_or("-")
            );
        }
        for (k, v) in l.headers.iter().filter(|(k, _)| {
            ![
                crate::messages::REASON_HEADER,
                crate::broker::publisher::BATCH_SEQ_HEADER,
            ]
            .contains(&k.as_str())
        }) {
            println!("  header {k}: {v}");
        }
        println!("  routing key: {}\n  body: {}", l.routing_key, l.body);
    }
    Ok(())
}

/// Replays or purges dead letters; prints what was (or would be) touched.
async fn act(settings: &Settings, s: &Select, action: DeadLetterAction) -> anyhow::Result<()> {
    let sel = s.selection();
    let names = Names::new(&settings.namespace);
    let queue = dead_letters::queue_name(&names, &s.queue);
    let conn = crate::broker::connect(&settings.amqp.url, "sagaflow-cli").await?;
    let publisher = Publisher::open(&conn).await?;
    let touched = dead_letters::act(&conn, &publisher, &queue, &sel, action).await?;
    conn.close("bye").await;
    if s.json {
        println!(
            "{}",
            serde_json::json!({ "queue": queue, "dry_run": sel.dry_run, "messages": touched })
        );
        return Ok(());
    }
    print_touched(&queue, &touched, action, sel.dry_run);
    Ok(())
}

fn print_touched(queue: &str, touched: &[Touched], action: DeadLetterAction, dry_run: bool) {
    let verb = match (action, dry_run) {
        (_, true) => "would touch",
        (DeadLetterAction::Replay, false) => "replayed",
        (DeadLetterAction::Purge, false) => "purged",
    };
    let applied = touched.iter().filter(|t| t.applied).count();
    println!(
        "{queue}: {verb} {}",
        if dry_run { touched.len() } else { applied }
    );
    for t in touched {
        let saga = t.about.saga_id.as_deref().unwrap_or("-");
        let step = t.about.step.as_deref().unwrap_or("-");
        let left = if !dry_run && !t.applied {
            "  (left in place)"
        } else {
            ""
        };
        println!(
            "  saga {saga:<28} step {step:<20} reason: {}{left}",
            t.reason
        );
    }
}
