//! The `sagaflow` command line: the clap definitions and the dispatch. Each command
//! lives in `cli/<noun>.rs`; this file only says which.
//!
//! One noun per thing: saga commands are `sagaflow sagas …`, dead letters
//! `sagaflow dead-letters …`, schedules `sagaflow schedules …`. The older spellings
//! (`start`, `status`, `signal`, `cancel`, `saga …`, `dlq …`, `schedule …`) still
//! parse, hidden from `--help`, and are deprecated: they go in the next release.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use serde_json::Value;

use crate::config::Settings;

pub mod bench;
pub mod database;
pub mod dead_letters;
pub mod definitions;
pub mod queues;
pub mod sagas;
pub mod schedules;
pub mod services;
pub mod versions;

pub use self::sagas::{NotCompleted, SagaNotFound};

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
    /// Check the saga definitions in sagas_dir and exit.
    Check,
    /// Run a coordinator (several may run at once).
    Coordinator,
    /// Run a worker hosting the demo activities (embed `sagaflow::worker::Worker` for your own).
    Worker {
        /// Host the example activities (order saga, the benchmark's no-ops and failure).
        #[arg(long)]
        demo: bool,
    },
    /// Serve the operator HTTP API and /metrics on `api.listen`.
    Serve,
    /// Sagas: list, show, start, signal, cancel; retry, resume-at, skip, compensate.
    #[command(alias = "saga")]
    Sagas {
        #[command(subcommand)]
        command: sagas::SagasCmd,
    },
    /// Ready messages and consumers of every task queue and the coordinator's queue.
    Queues {
        #[arg(long)]
        json: bool,
    },
    /// Per definition version: sagas and schedules that still use it, and whether it is
    /// safe to unload (the upgrade runbook in docs/operations.md).
    Versions {
        #[arg(long)]
        json: bool,
    },
    /// Dead-letter queues: list, show, replay, purge.
    #[command(alias = "dlq")]
    DeadLetters {
        #[command(subcommand)]
        command: dead_letters::DeadLettersCmd,
    },
    /// Cron schedules: add, list, pause, resume, trigger, delete.
    #[command(alias = "schedule")]
    Schedules {
        #[command(subcommand)]
        command: schedules::SchedulesCmd,
    },
    /// Run the demo: a coordinator, a worker, the dashboard and example sagas, with live
    /// progress; the dashboard stays up until Ctrl-C (or use --exit).
    Demo(bench::DemoArgs),
    /// Benchmark N sagas through a coordinator and a worker process: in a burst, a closed
    /// loop (--concurrency) or an open loop (--rate).
    Bench(bench::ThroughputArgs),
    /// Measure the broker's ceiling: N event-sized messages published with confirms.
    BenchBroker(bench::BrokerArgs),
    /// Benchmark durable timers: N sleeping sagas all due within one window.
    BenchTimers(bench::TimerArgs),
    /// One saga whose for_each step runs a no-op over N elements; one JSON line.
    BenchFanOut(bench::FanOutArgs),
    /// Deprecated: `sagas start`.
    #[command(hide = true)]
    Start(sagas::StartArgs),
    /// Deprecated: `sagas show`.
    #[command(hide = true)]
    Status(sagas::ShowArgs),
    /// Deprecated: `sagas signal`.
    #[command(hide = true)]
    Signal(sagas::SignalArgs),
    /// Deprecated: `sagas cancel`.
    #[command(hide = true)]
    Cancel(sagas::CancelArgs),
}

/// A `--input`, `--payload` or `--output` value.
fn parse_json(s: &str) -> Result<Value, String> {
    serde_json::from_str(s).map_err(|e| format!("expected JSON (e.g. '{{\"order_id\": 1}}'): {e}"))
}

/// Runs a parsed command.
pub async fn run(cli: Cli, settings: Settings) -> anyhow::Result<()> {
    match cli.command {
        Cmd::Migrate => database::migrate(&settings).await,
        Cmd::Check => definitions::check(&settings),
        Cmd::Coordinator => services::coordinator(settings).await,
        Cmd::Worker { demo } => services::worker(settings, demo).await,
        Cmd::Serve => services::serve(settings).await,
        Cmd::Sagas { command } => sagas::run(&settings, command).await,
        Cmd::Queues { json } => queues::show(&settings, json).await,
        Cmd::Versions { json } => versions::show(&settings, json).await,
        Cmd::DeadLetters { command } => dead_letters::run(&settings, command).await,
        Cmd::Schedules { command } => schedules::run(&settings, command).await,
        Cmd::Demo(args) => bench::demo(&settings, args).await,
        Cmd::Bench(args) => bench::throughput(&settings, args).await,
        Cmd::BenchBroker(args) => bench::broker(&settings, args).await,
        Cmd::BenchTimers(args) => bench::timers(&settings, args).await,
        Cmd::BenchFanOut(args) => bench::fan_out(&settings, args).await,
        Cmd::Start(args) => sagas::start(&settings, args).await,
        Cmd::Status(args) => sagas::show(&settings, args).await,
        Cmd::Signal(args) => sagas::signal(&settings, args).await,
        Cmd::Cancel(args) => sagas::cancel(&settings, args).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Cmd {
        let mut argv = vec!["sagaflow"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).unwrap().command
    }

    #[test]
    fn the_definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn old_spellings_parse_as_the_new_commands() {
        use sagas::SagasCmd;
        assert!(matches!(parse(&["status", "o-1"]), Cmd::Status(a) if a.id == "o-1"));
        assert!(matches!(
            parse(&["saga", "retry", "o-1"]),
            Cmd::Sagas { command: SagasCmd::Retry { id: Some(id), .. } } if id == "o-1"
        ));
        assert!(matches!(
            parse(&["saga", "resume", "o-1", "--step", "b"]),
            Cmd::Sagas { command: SagasCmd::ResumeAt { step, .. } } if step == "b"
        ));
        assert!(matches!(parse(&["dlq", "list"]), Cmd::DeadLetters { .. }));
        assert!(matches!(
            parse(&["schedule", "list"]),
            Cmd::Schedules { .. }
        ));
        assert!(matches!(parse(&["start", "order"]), Cmd::Start(a) if a.saga == "order"));
    }

    #[test]
    fn the_demo_stays_up_unless_told_to_exit() {
        assert!(matches!(
            parse(&["demo"]),
            Cmd::Demo(a) if a.sagas == 20 && !a.exit && !a.plain
        ));
        assert!(matches!(
            parse(&["demo", "--exit", "--plain", "--sagas", "5"]),
            Cmd::Demo(a) if a.sagas == 5 && a.exit && a.plain
        ));
    }

    #[test]
    fn help_shows_one_noun_per_thing_and_hides_the_old_spellings() {
        let visible: Vec<String> = Cli::command()
            .get_subcommands()
            .filter(|c| !c.is_hide_set())
            .map(|c| c.get_name().to_string())
            .collect();
        for new in ["sagas", "dead-letters", "schedules", "queues"] {
            assert!(visible.iter().any(|v| v == new), "{new}: {visible:?}");
        }
        for old in [
            "start", "status", "signal", "cancel", "saga", "dlq", "schedule",
        ] {
            assert!(!visible.iter().any(|v| v == old), "{old}: {visible:?}");
        }
    }
}
