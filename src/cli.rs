//! The `sagaflow` command line: argument parsing and the operator commands.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde_json::Value;

use crate::client::{Client, StartOptions};
use crate::config::Settings;
use crate::saga::definition::Catalog;
use crate::store;

pub mod operate;
pub mod sagas;
pub mod schedule;

pub use self::sagas::SagaNotFound;

#[derive(Debug, Parser)]
#[command(
    name = "sagaflow",
    version,
    about = "Durable sagas on RabbitMQ and Postgres"
)]
pub struct Cli {
    /// Configuration file (default: config/default.toml when present).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Create the database if missing and apply migrations.
    Migrate,
    /// Run a coordinator (several may run at once).
    Coordinator,
    /// Run a worker hosting the demo activities (embed `sagaflow::worker::Worker` for your own).
    Worker {
        /// Host the example activities (order saga, benchmark no-op).
        #[arg(long)]
        demo: bool,
    },
    /// Start a saga.
    Start {
        /// Saga name, e.g. order_fulfillment.
        saga: String,
        /// Business key; a UUID v7 when omitted.
        #[arg(long)]
        id: Option<String>,
        /// Saga input as JSON.
        #[arg(long, default_value = "{}", value_parser = parse_json)]
        input: Value,
        /// Run after this delay (250ms, 30s, 5m, 36h, 7d).
        #[arg(long, conflicts_with = "start_at")]
        delay: Option<String>,
        /// Run at this instant (RFC 3339).
        #[arg(long)]
        start_at: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// Show a saga's status and history.
    Status {
        id: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List sagas or show one.
    Sagas {
        #[command(subcommand)]
        command: self::sagas::SagasCmd,
    },
    /// Ready messages and consumers of every task queue and the coordinator's queue.
    Queues {
        #[arg(long)]
        json: bool,
    },
    /// Send a named signal to a saga.
    Signal {
        id: String,
        name: String,
        #[arg(long, default_value = "null", value_parser = parse_json)]
        payload: Value,
    },
    /// Cancel a saga: undo its completed steps and end it `cancelled`.
    Cancel {
        id: String,
        #[arg(long, default_value = "cancelled by operator")]
        reason: String,
    },
    /// Cron schedules: add, list, pause, resume, trigger, delete.
    #[command(alias = "schedules")]
    Schedule {
        #[command(subcommand)]
        command: schedule::ScheduleCmd,
    },
    /// Act on a stuck or failed saga: retry, resume --step, skip --output, compensate.
    Saga {
        #[command(subcommand)]
        action: operate::SagaAction,
    },
    /// Inspect dead-letter queues.
    Dlq {
        #[command(subcommand)]
        command: DlqCmd,
    },
    /// Serve the operator HTTP API and /metrics on `api.listen`.
    Serve,
    /// Check the saga definitions in sagas_dir and exit.
    Check,
    /// Run the demo: a coordinator, a worker and example sagas, with live progress.
    Demo {
        #[arg(long, default_value_t = 20)]
        sagas: usize,
    },
    /// Benchmark N sagas of K no-op steps through a coordinator and a worker process.
    Bench {
        #[arg(long, default_value_t = 5000)]
        sagas: usize,
        #[arg(long, default_value_t = 3)]
        steps: usize,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// Measure the broker's ceiling: N event-sized messages published with confirms.
    BenchBroker {
        #[arg(long, default_value_t = 100_000)]
        messages: usize,
        /// Messages per confirmed batch.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// Benchmark durable timers: N sleeping sagas all due within one window.
    BenchTimers {
        #[arg(long, default_value_t = 100_000)]
        sagas: usize,
        /// Spread the due instants evenly over this many milliseconds.
        #[arg(long, default_value_t = 1000)]
        window_ms: u64,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum DlqCmd {
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
    Replay(DlqSelect),
    /// Remove dead letters.
    Purge(DlqSelect),
}

/// Which dead letters a bulk action touches.
#[derive(Debug, clap::Args)]
pub struct DlqSelect {
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

impl DlqSelect {
    fn selection(&self) -> crate::dead_letters::Selection {
        crate::dead_letters::Selection {
            saga_id: self.saga.clone(),
            limit: self.limit,
            dry_run: self.dry_run,
        }
    }
}

fn parse_json(s: &str) -> Result<Value, String> {
    serde_json::from_str(s).map_err(|e| format!("expected JSON (e.g. '{{\"order_id\": 1}}'): {e}"))
}

/// Loads the definitions, reporting every error with file, field and reason.
pub fn load_catalog(settings: &Settings) -> anyhow::Result<Catalog> {
    let invalid = |errors: Vec<crate::saga::definition::DefinitionError>| {
        let lines: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
        anyhow::anyhow!(
            "invalid saga definitions in {}:\n{}",
            settings.sagas_dir.display(),
            lines.join("\n")
        )
    };
    let catalog = Catalog::load_dir(&settings.sagas_dir).map_err(invalid)?;
    let limit = std::time::Duration::from_millis(settings.queues.consumer_timeout_ms);
    let too_long = catalog.check_consumer_timeout(limit);
    if !too_long.is_empty() {
        return Err(invalid(too_long));
    }
    Ok(catalog)
}

async fn pool(settings: &Settings) -> anyhow::Result<sqlx::PgPool> {
    store::connect_with(&settings.database)
        .await
        .with_context(|| format!("database {}", redact(&settings.database.url)))
}

/// A URL without its password, for messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Runs a parsed command.
pub async fn run(cli: Cli, settings: Settings) -> anyhow::Result<()> {
    match cli.command {
        Cmd::Migrate => {
            pool(&settings).await?;
            println!("migrations applied to {}", redact(&settings.database.url));
        }
        Cmd::Check => {
            let catalog = load_catalog(&settings)?;
            for d in catalog.iter() {
                println!(
                    "{} v{}: {} steps, activities {:?}",
                    d.name,
                    d.version,
                    d.steps.len(),
                    d.activities()
                );
                for s in &d.schedules {
                    println!(
                        "  schedule {}.{}: cron `{}` in {}, overlap {}",
                        d.name,
                        s.name,
                        s.cron,
                        s.timezone,
                        s.overlap.as_str()
                    );
                }
            }
        }
        Cmd::Coordinator => {
            let catalog = load_catalog(&settings)?;
            if catalog.is_empty() {
                anyhow::bail!("no saga definitions in {}", settings.sagas_dir.display());
            }
            let pool = pool(&settings).await?;
            let shutdown = crate::runtime::shutdown_on_signals();
            let coordinator = crate::coordinator::Coordinator::new(settings, catalog, pool);
            let listen = &coordinator.settings.coordinator.health_listen;
            serve_health(listen, coordinator.health.clone(), &shutdown).await?;
            coordinator.run(shutdown).await;
        }
        Cmd::Worker { demo } => {
            if !demo {
                anyhow::bail!("this binary hosts only the example activities: run `sagaflow worker --demo`, or embed sagaflow::worker::Worker in your service");
            }
            let pool = pool(&settings).await?;
            crate::demo::prepare(&pool).await?;
            let shutdown = crate::runtime::shutdown_on_signals();
            let worker = crate::demo::worker(pool.clone());
            serve_health(&settings.worker.health_listen, worker.health(), &shutdown).await?;
            worker.run(settings, pool, shutdown).await;
        }
        Cmd::Start {
            saga,
            id,
            input,
            delay,
            start_at,
        } => {
            if let Some(d) = &delay {
                crate::saga::definition::parse_duration(d)
                    .map_err(|e| anyhow::anyhow!("--delay: {e}"))?;
            }
            let id = id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
            let client = Client::connect(&settings.amqp.url, &settings.namespace)
                .await?
                .with_limits(settings.limits.clone());
            let opts = StartOptions {
                id: Some(id.clone()),
                delay,
                start_at,
                version: None,
            };
            client.start(&saga, input, opts).await?;
            client.close().await;
            println!(
                "start event for {saga} published (id {id}); follow it with: sagaflow status {id}"
            );
        }
        Cmd::Status { id, json } => sagas::status(&settings, &id, json).await?,
        Cmd::Signal { id, name, payload } => {
            let client = Client::connect(&settings.amqp.url, &settings.namespace)
                .await?
                .with_limits(settings.limits.clone());
            client.signal(&id, &name, payload).await?;
            client.close().await;
            println!("signal {name} sent to {id}");
        }
        Cmd::Cancel { id, reason } => {
            let client = Client::connect(&settings.amqp.url, &settings.namespace)
                .await?
                .with_limits(settings.limits.clone());
            client.cancel(&id, &reason).await?;
            client.close().await;
            println!("cancel sent to {id}");
        }
        Cmd::Serve => serve(settings).await?,
        Cmd::Sagas { command } => self::sagas::run(&settings, command).await?,
        Cmd::Queues { json } => self::sagas::queues(&settings, json).await?,
        Cmd::Schedule { command } => schedule::run(&settings, command).await?,
        Cmd::Dlq {
            command: DlqCmd::List { limit, json },
        } => dlq_list(&settings, limit, json).await?,
        Cmd::Dlq {
            command: DlqCmd::Show { queue, limit, json },
        } => dlq_show(&settings, &queue, limit, json).await?,
        Cmd::Dlq {
            command: DlqCmd::Replay(s),
        } => {
            operate::dlq_action(
                &settings,
                &s.queue,
                s.selection(),
                crate::dead_letters::DeadLetterAction::Replay,
                s.json,
            )
            .await?
        }
        Cmd::Dlq {
            command: DlqCmd::Purge(s),
        } => {
            operate::dlq_action(
                &settings,
                &s.queue,
                s.selection(),
                crate::dead_letters::DeadLetterAction::Purge,
                s.json,
            )
            .await?
        }
        Cmd::Saga { action } => operate::saga_action(&settings, action).await?,
        Cmd::Demo { sagas } => {
            let pool = pool(&settings).await?;
            crate::demo::run::run(&settings, &pool, sagas).await?;
        }
        Cmd::BenchBroker {
            messages,
            batch,
            timeout,
        } => {
            if messages == 0 || batch == 0 {
                anyhow::bail!("--messages and --batch must be at least 1");
            }
            let args = crate::bench::broker::BrokerArgs {
                messages,
                batch,
                timeout: Duration::from_secs(timeout),
            };
            println!("{}", crate::bench::broker::run(&settings, &args).await?);
        }
        Cmd::BenchTimers {
            sagas,
            window_ms,
            timeout,
        } => {
            if sagas == 0 || window_ms == 0 {
                anyhow::bail!("--sagas and --window-ms must be at least 1");
            }
            let args = crate::bench::timers::TimerArgs {
                sagas,
                window: Duration::from_millis(window_ms),
                timeout: Duration::from_secs(timeout),
            };
            println!("{}", crate::bench::timers::run(&settings, &args).await?);
        }
        Cmd::Bench {
            sagas,
            steps,
            timeout,
        } => {
            if sagas == 0 || steps == 0 {
                anyhow::bail!("--sagas and --steps must be at least 1");
            }
            let args = crate::bench::BenchArgs {
                sagas,
                steps,
                timeout: Duration::from_secs(timeout),
            };
            let line = crate::bench::run(&settings, &args).await?;
            println!("{line}");
        }
    }
    Ok(())
}

/// Serves a process's own probes when `listen` is set.
async fn serve_health(
    listen: &str,
    health: crate::health::Health,
    shutdown: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    if !listen.is_empty() {
        crate::health::serve(listen, health, shutdown.clone())
            .await
            .map_err(|e| anyhow::anyhow!("health probes on {listen}: {e}"))?;
    }
    Ok(())
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    // Bind first: a refused address is reported before any connection is made.
    let listener = crate::api::bind(&settings).await?;
    let catalog = load_catalog(&settings)?;
    let pool = pool(&settings).await?;
    let state = crate::api::ApiState::new(&settings, catalog, pool);
    let shutdown = crate::runtime::shutdown_on_signals();
    crate::api::serve(listener, state, shutdown).await?;
    Ok(())
}

async fn dlq_show(
    settings: &Settings,
    queue: &str,
    limit: usize,
    json: bool,
) -> anyhow::Result<()> {
    let names = crate::broker::Names::new(&settings.namespace);
    let queue = crate::dead_letters::queue_name(&names, queue);
    let conn = crate::broker::connect(&settings.amqp.url, "sagaflow-cli").await?;
    let letters = crate::dead_letters::peek(&conn, &queue, limit).await?;
    let _ = conn.close(200, "bye".into()).await;
    print_letters(&letters, json)
}

/// Dead letters as JSON or as text with the saga each belongs to.
fn print_letters(letters: &[crate::dead_letters::DeadLetter], json: bool) -> anyhow::Result<()> {
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
                "  saga: {saga} (step {}{attempt}): sagaflow status {saga}",
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

async fn dlq_list(settings: &Settings, limit: usize, json: bool) -> anyhow::Result<()> {
    let catalog = load_catalog(settings)?;
    let mut activities: Vec<String> = catalog.activities().into_iter().collect();
    activities.extend(crate::demo::activity_names());
    activities.sort();
    activities.dedup();
    let names = crate::broker::Names::new(&settings.namespace);
    let conn = crate::broker::connect(&settings.amqp.url, "sagaflow-cli").await?;
    let queues = crate::dead_letters::summaries(&conn, &names, &activities).await?;
    let mut letters = Vec::new();
    for q in queues.iter().filter(|q| q.messages > 0) {
        letters.extend(crate::dead_letters::peek(&conn, &q.queue, limit).await?);
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
