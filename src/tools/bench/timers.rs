//! `sagaflow bench-timers`: N sagas asleep at once, all due within one window (one
//! second unless `--window-ms` says otherwise); one coordinator process wakes them.
//! Reports the timer-firing lag (from a saga's due instant to its completion event
//! on `<ns>.events`, so it includes the commit and the confirmed publish) and what a
//! sleeping saga costs in Postgres.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::json;
use sqlx::PgPool;

use super::{collect, quantile, subscribe, Sandbox};
use crate::broker::Names;
use crate::config::Settings;
use crate::saga::definition::parse;
use crate::saga::machine;
use crate::store::sagas::SagaWrite;
use crate::tools::launch;

const SAGA: &str = "timer_bench";
const DEFINITION: &str =
    "name = \"timer_bench\"\nversion = 1\n\n[[steps]]\nname = \"nap\"\nsleep = \"1h\"\n";

/// What to run.
#[derive(Debug, Clone)]
pub struct TimerArgs {
    pub sagas: usize,
    /// The due instants are spread evenly over this window.
    pub window: Duration,
    pub timeout: Duration,
}

/// How far ahead of the first due instant the wake-up times are written: enough for
/// the statement that writes 100,000 of them to commit before the first falls due.
const LEAD: Duration = Duration::from_secs(6);

/// Runs the timer benchmark; returns the JSON line.
pub async fn run(settings: &Settings, args: &TimerArgs) -> anyhow::Result<serde_json::Value> {
    let mut sandbox = Sandbox::new(
        settings,
        "timers",
        &[(format!("{SAGA}.toml"), DEFINITION.to_string())],
    )
    .await?;
    let pool = crate::store::connect(&sandbox.db_url, 4).await?;
    let seeding = Instant::now();
    seed(&pool, args.sagas).await?;
    let seed_s = seeding.elapsed().as_secs_f64();
    let cost = storage_cost(&pool, args.sagas).await?;
    sandbox.spawn(&["coordinator"], &[])?;
    let result = fire(settings, &sandbox, &pool, args).await;
    pool.close().await;
    sandbox.teardown(settings, &[]).await?;
    let mut out = result?;
    out["seed_seconds"] = json!((seed_s * 10.0).round() / 10.0);
    out["postgres"] = cost;
    Ok(out)
}

/// Creates `n` sagas asleep on their one-hour nap, through the machine like real starts.
async fn seed(pool: &PgPool, n: usize) -> anyhow::Result<()> {
    let def = parse("<bench>", DEFINITION)?;
    let now = Utc::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(5000) {
        let decisions: Vec<machine::Decision> = chunk
            .iter()
            .map(|i| machine::start(&def, &format!("t-{i}"), json!({}), None, now))
            .collect();
        let writes: Vec<SagaWrite> = decisions
            .iter()
            .map(|d| SagaWrite {
                state: &d.state,
                fence: None,
            })
            .collect();
        let history: Vec<(&str, &machine::HistoryEntry)> = decisions
            .iter()
            .flat_map(|d| d.history.iter().map(move |h| (d.state.id.as_str(), h)))
            .collect();
        let mut tx = crate::store::begin(pool).await?;
        let batch = crate::store::batch::BatchWrite {
            new: writes,
            history,
            ..Default::default()
        };
        crate::store::batch::write(&mut tx, batch).await?;
        tx.commit().await?;
    }
    Ok(())
}

/// Rows and bytes per sleeping saga (table + indexes + TOAST).
async fn storage_cost(pool: &PgPool, n: usize) -> anyhow::Result<serde_json::Value> {
    let (sagas_bytes, history_bytes, history_rows) = crate::store::bench::storage(pool).await?;
    let n = n.max(1) as f64;
    Ok(json!({
        "saga_rows_per_saga": 1,
        "history_rows_per_saga": history_rows as f64 / n,
        "saga_bytes_per_saga": (sagas_bytes as f64 / n).round(),
        "history_bytes_per_saga": (history_bytes as f64 / n).round(),
        "queue_messages_per_saga": 0,
    }))
}

async fn fire(
    settings: &Settings,
    sandbox: &Sandbox,
    pool: &PgPool,
    args: &TimerArgs,
) -> anyhow::Result<serde_json::Value> {
    let names = Names::new(&sandbox.namespace);
    let conn = crate::broker::connect(&settings.amqp.url, "sagaflow-bench").await?;
    let mut events = subscribe(&conn, &names, SAGA).await?;
    launch::wait_for_consumer(&conn, &names.coordinator_queue(), Duration::from_secs(60))
        .await
        .map_err(anyhow::Error::msg)?;
    // Every saga falls due within the window, starting `LEAD` from now.
    let due = Utc::now() + chrono::Duration::from_std(LEAD)?;
    let spread_us = args.window.as_micros() as i64 / args.sagas.max(1) as i64;
    crate::store::bench::spread_wakeups(pool, due, spread_us).await?;
    // A lag is only meaningful if the timers were in place before they fell due.
    let lead_left_ms = (due - Utc::now()).num_milliseconds();
    anyhow::ensure!(
        lead_left_ms > 0,
        "writing the wake-up times took longer than the {LEAD:?} lead; the lags would be wrong"
    );
    let due_of = |id: &str| -> Option<chrono::DateTime<Utc>> {
        let i: i64 = id.strip_prefix("t-")?.parse().ok()?;
        Some(due + chrono::Duration::microseconds(i * spread_us))
    };
    let mut lags: Vec<f64> = Vec::with_capacity(args.sagas);
    let mut fired: HashMap<String, usize> = HashMap::new();
    let got = collect(&mut events, args.sagas, args.timeout, |e| {
        if let Some(d) = due_of(&e.saga_id) {
            lags.push((Utc::now() - d).num_microseconds().unwrap_or(0) as f64 / 1000.0);
        }
        *fired.entry(e.status).or_default() += 1;
    })
    .await?;
    let last = Utc::now();
    lags.sort_by(|a, b| a.total_cmp(b));
    // The same lag measured at the wake-up transaction (its start), without the
    // event publish: tells the database's share from the broker's.
    let (tx_p50, tx_p99) = crate::store::bench::wakeup_lags(pool, due, spread_us).await?;
    Ok(json!({
        "sagas": args.sagas,
        "fired": got,
        "statuses": fired,
        "fire_window_ms": args.window.as_millis() as u64,
        "wakeups_per_s_due": (args.sagas as f64 / args.window.as_secs_f64()).round(),
        "timers_written_ms_before_first_due": lead_left_ms,
        "all_fired_after_first_due_ms": (last - due).num_milliseconds(),
        "lag_p50_ms": quantile(&lags, 0.50).round(),
        "lag_p99_ms": quantile(&lags, 0.99).round(),
        "lag_max_ms": lags.last().copied().unwrap_or(f64::NAN).round(),
        "wakeup_tx_lag_p50_ms": tx_p50.map(f64::round),
        "wakeup_tx_lag_p99_ms": tx_p99.map(f64::round),
    }))
}
