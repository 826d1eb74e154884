//! `sagaflow sagas …`: everything done to a saga from the command line. Reads (list,
//! show) go straight to Postgres, the CLI mirror of `GET /api/sagas…`; starts, signals
//! and cancels are published like any service publishes them; operator actions are
//! checked against the saga as stored before they are sent ([`operator`]).

mod operator;
mod purge;
mod show;
mod wait;

use chrono::{DateTime, Utc};
use clap::Subcommand;
use serde_json::Value;

use super::database::pool;
use super::parse_json;
use crate::client::{Client, StartOptions};
use crate::config::Settings;
use crate::saga::machine::OperatorAction;
use crate::saga::state::SagaStatus;
use crate::store::sagas::{self, ListFilter};

pub use self::operator::Bulk;
pub use self::show::show;
pub use self::wait::NotCompleted;

/// Exit code 3: the saga asked for does not exist (`main` maps this error to it).
#[derive(Debug, thiserror::Error)]
#[error("no saga with id `{0}`")]
pub struct SagaNotFound(pub String);

#[derive(Debug, Subcommand)]
pub enum SagasCmd {
    /// Sagas, newest first.
    List(ListArgs),
    /// A saga's status, timers and history.
    Show(ShowArgs),
    /// Start a saga.
    Start(StartArgs),
    /// Send a named signal to a saga.
    Signal(SignalArgs),
    /// Cancel a saga: undo its completed steps and end it `cancelled`.
    Cancel(CancelArgs),
    /// Run the stuck task again (new attempt chain), or a failed saga's failed compensation.
    Retry {
        /// The saga; omit it and give a filter for a bulk action.
        id: Option<String>,
        #[command(flatten)]
        bulk: Bulk,
    },
    /// Run the saga again from a step (the steps before it must still be completed).
    #[command(alias = "resume")]
    ResumeAt {
        /// The saga; omit it and give a filter for a bulk action.
        id: Option<String>,
        /// The step to run again from.
        #[arg(long)]
        step: String,
        #[command(flatten)]
        bulk: Bulk,
    },
    /// Mark the current step completed with an output and go on.
    Skip {
        /// The saga; omit it and give a filter for a bulk action.
        id: Option<String>,
        /// The step's output, as JSON.
        #[arg(long, default_value = "null", value_parser = parse_json)]
        output: Value,
        #[command(flatten)]
        bulk: Bulk,
    },
    /// Delete ended sagas with their history and ledger rows (erasure on demand).
    Purge(purge::PurgeArgs),
    /// Stop going forward: undo the completed steps in reverse.
    Compensate {
        /// The saga; omit it and give a filter for a bulk action.
        id: Option<String>,
        #[command(flatten)]
        bulk: Bulk,
    },
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[arg(long)]
    pub saga: Option<String>,
    #[arg(long, value_parser = parse_status)]
    pub status: Option<SagaStatus>,
    #[arg(long)]
    pub id_prefix: Option<String>,
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..=500))]
    pub limit: i64,
    /// Only sagas the reconciler flagged stuck (nothing will move them) that are
    /// still not moving.
    #[arg(long)]
    pub stuck: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    pub id: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Show the newest N history entries (0: none); a line says how many older
    /// ones are left out.
    #[arg(long, value_name = "N", default_value_t = show::DEFAULT_HISTORY)]
    pub history_limit: u64,
    /// Show every history entry, read and printed a page at a time.
    #[arg(long, conflicts_with = "history_limit")]
    pub all: bool,
}

#[derive(Debug, clap::Args)]
pub struct StartArgs {
    /// Saga name, e.g. order_fulfillment.
    pub saga: String,
    /// Business key; a UUID v7 when omitted.
    #[arg(long)]
    pub id: Option<String>,
    /// Saga input as JSON.
    #[arg(long, default_value = "{}", value_parser = parse_json)]
    pub input: Value,
    /// Run after this delay (250ms, 30s, 5m, 36h, 7d).
    #[arg(long, conflicts_with = "start_at")]
    pub delay: Option<String>,
    /// Run at this instant (RFC 3339).
    #[arg(long)]
    pub start_at: Option<DateTime<Utc>>,
    /// Signal-with-start: deliver this signal in the transaction that starts the saga,
    /// or to the saga with this id if it exists.
    #[arg(long, conflicts_with = "wait")]
    pub signal: Option<String>,
    /// The signal's payload, as JSON.
    #[arg(long, default_value = "null", value_parser = parse_json, requires = "signal")]
    pub signal_payload: Value,
    /// Wait for the saga to end; print its status and output as JSON. Exit code: 0
    /// completed, 4 compensated, 5 failed, 6 cancelled, 7 still running after --timeout.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits (250ms, 30s, 5m).
    #[arg(long, default_value = "60s", requires = "wait", value_parser = parse_wait)]
    pub timeout: std::time::Duration,
    /// W3C trace context the saga's trace continues (`00-<trace id>-<span id>-<flags>`);
    /// a new trace when omitted (docs/operations.md, "Tracing")
    #[arg(long, env = "TRACEPARENT", value_parser = parse_traceparent)]
    pub traceparent: Option<String>,
}

fn parse_wait(s: &str) -> Result<std::time::Duration, String> {
    crate::saga::definition::parse_duration(s)
}

#[derive(Debug, clap::Args)]
pub struct SignalArgs {
    pub id: String,
    pub name: String,
    #[arg(long, default_value = "null", value_parser = parse_json)]
    pub payload: Value,
}

#[derive(Debug, clap::Args)]
pub struct CancelArgs {
    pub id: String,
    #[arg(long, default_value = "cancelled by operator")]
    pub reason: String,
}

fn parse_status(s: &str) -> Result<SagaStatus, String> {
    s.parse()
}

/// Runs one `sagas` subcommand.
pub async fn run(settings: &Settings, cmd: SagasCmd) -> anyhow::Result<()> {
    use OperatorAction as A;
    match cmd {
        SagasCmd::List(args) => list(settings, args).await,
        SagasCmd::Show(args) => show(settings, args).await,
        SagasCmd::Start(args) => start(settings, args).await,
        SagasCmd::Signal(args) => signal(settings, args).await,
        SagasCmd::Cancel(args) => cancel(settings, args).await,
        SagasCmd::Retry { id, bulk } => operator::act(settings, id, bulk, A::Retry).await,
        SagasCmd::ResumeAt { id, step, bulk } => {
            operator::act(settings, id, bulk, A::ResumeAt { step }).await
        }
        SagasCmd::Skip { id, output, bulk } => {
            operator::act(settings, id, bulk, A::Skip { output }).await
        }
        SagasCmd::Compensate { id, bulk } => operator::act(settings, id, bulk, A::Compensate).await,
        SagasCmd::Purge(args) => purge::run(settings, args).await,
    }
}

/// `sagas list`: a table (or JSON) of the sagas the filter selects.
async fn list(settings: &Settings, args: ListArgs) -> anyhow::Result<()> {
    let filter = ListFilter {
        saga: args.saga,
        status: args.status.map(|s| s.as_str().to_string()),
        id_prefix: args.id_prefix,
        stuck: args.stuck,
        ..Default::default()
    };
    let rows = sagas::list(&pool(settings).await?, &filter, args.limit).await?;
    if args.json {
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
            // The reason is in `--json` and in `sagaflow sagas show <id>`.
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

/// A broker client held to `[limits]`, as every publishing command uses.
async fn client(settings: &Settings) -> anyhow::Result<Client> {
    Ok(Client::connect(&settings.amqp.url, &settings.namespace)
        .await?
        .with_limits(settings.limits.clone()))
}

/// A `--traceparent` is checked here: the coordinator would replace a malformed one.
fn parse_traceparent(s: &str) -> Result<String, String> {
    crate::traceparent::TraceParent::parse(s)
        .map(|tp| tp.to_string())
        .map_err(|e| e.to_string())
}

/// `sagas start`: publishes the start event; with `--wait`, waits for the outcome.
pub async fn start(settings: &Settings, args: StartArgs) -> anyhow::Result<()> {
    if let Some(d) = &args.delay {
        crate::saga::definition::parse_duration(d).map_err(|e| anyhow::anyhow!("--delay: {e}"))?;
    }
    let id = args.id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let opts = StartOptions {
        id: Some(id.clone()),
        delay: args.delay,
        start_at: args.start_at,
        version: None,
        traceparent: args.traceparent,
    };
    let client = client(settings).await?;
    if args.wait {
        let pool = pool(settings).await?;
        let outcome =
            wait::start_and_wait(&client, &pool, &args.saga, args.input, opts, args.timeout).await;
        client.close().await;
        return outcome;
    }
    match &args.signal {
        None => client.start(&args.saga, args.input, opts).await?,
        Some(name) => {
            client
                .signal_with_start(&args.saga, args.input, opts, name, args.signal_payload)
                .await?
        }
    }
    client.close().await;
    println!(
        "start event for {} published (id {id}); follow it with: sagaflow sagas show {id}",
        args.saga
    );
    Ok(())
}

/// `sagas signal`.
pub async fn signal(settings: &Settings, args: SignalArgs) -> anyhow::Result<()> {
    let client = client(settings).await?;
    client.signal(&args.id, &args.name, args.payload).await?;
    client.close().await;
    println!("signal {} sent to {}", args.name, args.id);
    Ok(())
}

/// `sagas cancel`.
pub async fn cancel(settings: &Settings, args: CancelArgs) -> anyhow::Result<()> {
    let client = client(settings).await?;
    client.cancel(&args.id, &args.reason).await?;
    client.close().await;
    println!("cancel sent to {}", args.id);
    Ok(())
}
