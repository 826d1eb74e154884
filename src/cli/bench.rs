//! `sagaflow demo` and the benchmarks (`bench`, `bench-broker`, `bench-timers`): each
//! runs child processes in a throwaway namespace and database and prints its result.

use std::time::Duration;

use super::database::pool;
use crate::config::Settings;
use crate::tools::bench::{Mode, Workload};

#[derive(Debug, clap::Args)]
pub struct ThroughputArgs {
    /// Sagas in all (every mode runs until this many ended, or --timeout).
    #[arg(long, default_value_t = 5000)]
    pub sagas: usize,
    /// Steps per saga (happy workload; compensate has 3).
    #[arg(long, default_value_t = 3)]
    pub steps: usize,
    /// Closed loop: keep this many sagas in flight, starting one as each ends.
    #[arg(long, conflicts_with = "rate")]
    pub concurrency: Option<usize>,
    /// Open loop: start this many sagas per second, on schedule.
    #[arg(long)]
    pub rate: Option<f64>,
    /// happy: no-op steps that complete; compensate: a last step that fails 3
    /// attempts, then two compensations.
    #[arg(long, value_enum, default_value_t = Workload::Happy)]
    pub workload: Workload,
    /// Store this many finished sagas (with history) before the timed run.
    #[arg(long, default_value_t = 0)]
    pub preload: usize,
    /// Let the coordinator purge the preloaded sagas while the load runs (retention
    /// 1 s; without it, retention 0 keeps them): the figure for retention's cost.
    #[arg(long, requires = "preload")]
    pub purge: bool,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

#[derive(Debug, clap::Args)]
pub struct BrokerArgs {
    #[arg(long, default_value_t = 100_000)]
    pub messages: usize,
    /// Messages per confirmed batch.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

#[derive(Debug, clap::Args)]
pub struct TimerArgs {
    #[arg(long, default_value_t = 100_000)]
    pub sagas: usize,
    /// Spread the due instants evenly over this many milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub window_ms: u64,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

#[derive(Debug, clap::Args)]
pub struct FanOutArgs {
    /// Elements of the array the for_each step runs over.
    #[arg(long, default_value_t = 10_000)]
    pub elements: usize,
    /// Elements in flight at once (the step's max_concurrency, 1..=1000).
    #[arg(long, default_value_t = 500)]
    pub max_concurrency: u32,
    /// Leave out the step's `input = {}` map, so each task carries the whole saga
    /// input (the array included: a task of O(elements) bytes).
    #[arg(long)]
    pub whole_input: bool,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Order sagas to run (besides the two newsletters).
    #[arg(long, default_value_t = 20)]
    pub sagas: usize,
    /// End once every saga has ended (exit 0; 1 when they did not end in time) instead
    /// of keeping the dashboard up until Ctrl-C: for scripts and CI.
    #[arg(long)]
    pub exit: bool,
    /// Plain progress lines even on a terminal (they are plain anyway when stdout is
    /// not a terminal).
    #[arg(long)]
    pub plain: bool,
}

/// `sagaflow demo`.
pub async fn demo(settings: &Settings, a: DemoArgs) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let pool = pool(settings).await?;
    let opts = crate::tools::demo::run::Options {
        sagas: a.sagas,
        exit: a.exit,
        bars: !a.plain && std::io::stdout().is_terminal(),
    };
    crate::tools::demo::run::run(settings, &pool, &opts).await?;
    Ok(())
}

/// `sagaflow bench`: N sagas of a workload, offered in one of three modes; prints
/// one JSON line.
pub async fn throughput(settings: &Settings, a: ThroughputArgs) -> anyhow::Result<()> {
    let mode = match (a.concurrency, a.rate) {
        (Some(concurrency), _) => Mode::Closed { concurrency },
        (None, Some(rate)) => Mode::Open { rate },
        (None, None) => Mode::Burst,
    };
    let args = crate::tools::bench::BenchArgs {
        sagas: a.sagas,
        steps: a.steps,
        timeout: Duration::from_secs(a.timeout),
        mode,
        workload: a.workload,
        preload: a.preload,
        purge: a.purge,
    };
    args.check().map_err(anyhow::Error::msg)?;
    println!("{}", crate::tools::bench::run(settings, &args).await?);
    Ok(())
}

/// `sagaflow bench-broker`: the broker's confirmed-publish ceiling; one JSON line.
pub async fn broker(settings: &Settings, a: BrokerArgs) -> anyhow::Result<()> {
    if a.messages == 0 || a.batch == 0 {
        anyhow::bail!("--messages and --batch must be at least 1");
    }
    let args = crate::tools::bench::broker::BrokerArgs {
        messages: a.messages,
        batch: a.batch,
        timeout: Duration::from_secs(a.timeout),
    };
    println!(
        "{}",
        crate::tools::bench::broker::run(settings, &args).await?
    );
    Ok(())
}

/// `sagaflow bench-timers`: N sleeping sagas due within one window; one JSON line.
pub async fn timers(settings: &Settings, a: TimerArgs) -> anyhow::Result<()> {
    if a.sagas == 0 || a.window_ms == 0 {
        anyhow::bail!("--sagas and --window-ms must be at least 1");
    }
    let args = crate::tools::bench::timers::TimerArgs {
        sagas: a.sagas,
        window: Duration::from_millis(a.window_ms),
        timeout: Duration::from_secs(a.timeout),
    };
    println!(
        "{}",
        crate::tools::bench::timers::run(settings, &args).await?
    );
    Ok(())
}

/// `sagaflow bench-fan-out`: a for_each over `--elements`; one JSON line.
pub async fn fan_out(settings: &Settings, a: FanOutArgs) -> anyhow::Result<()> {
    if a.elements == 0 {
        anyhow::bail!("--elements must be at least 1");
    }
    let args = crate::tools::bench::fan_out::FanOutArgs {
        elements: a.elements,
        max_concurrency: a.max_concurrency,
        whole_input: a.whole_input,
        timeout: Duration::from_secs(a.timeout),
    };
    println!(
        "{}",
        crate::tools::bench::fan_out::run(settings, &args).await?
    );
    Ok(())
}
