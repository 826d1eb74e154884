//! `sagaflow demo`: starts a coordinator, a demo worker and the dashboard (`sagaflow
//! serve`) as child processes, runs a mix of order sagas (completing, retrying,
//! compensating, failing) and two deferred group newsletters (a durable sleep until
//! `send_at`, a delayed start), and shows live progress until every saga has ended.
//! Then it keeps the dashboard up until SIGINT/SIGTERM, or ends (`--exit`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use sqlx::PgPool;

use tokio_util::sync::CancellationToken;

use super::dashboard::Dashboard;
use super::progress::{Display, Tally};
use crate::client::{Client, StartOptions};
use crate::config::Settings;
use crate::store::sagas;
use crate::tools::launch;

/// The example mix: (label, saga input); the label says which path it shows.
fn scenarios(n: usize) -> Vec<(String, Value)> {
    let kinds = [
        ("completes", json!({})),
        (
            "retries then completes",
            json!({"fail": {"payments.charge": {"code": "gateway_timeout", "times": 2}}}),
        ),
        (
            "card declined -> compensated",
            json!({"fail": {"payments.charge": {"code": "card_declined", "retryable": false}}}),
        ),
        (
            "shipping down -> compensated",
            json!({"fail": {"shipping.ship": {"code": "carrier_down", "retryable": false}}}),
        ),
        (
            "refund fails -> failed (operator)",
            json!({"fail": {"shipping.ship": {"retryable": false}, "payments.refund": {"retryable": false}}}),
        ),
    ];
    (0..n)
        .map(|i| {
            let (label, mut input) = kinds[i % kinds.len()].clone();
            input["order_id"] = json!(i + 1);
            (label.to_string(), input)
        })
        .collect()
}

/// Two deferred newsletters: one sleeps in the saga until `send_at`, one whose whole
/// run is deferred with a delayed start.
fn newsletters(run_id: &str) -> Vec<(&'static str, String, Value, Option<String>)> {
    let send_at = (chrono::Utc::now() + chrono::Duration::seconds(3)).to_rfc3339();
    let input = json!({"group": "climbers", "recipients": ["ann@example.org", "bob@example.org", "eve@example.org"], "send_at": send_at});
    vec![
        (
            "newsletter: sleeps until send_at (3 s)",
            format!("news-{run_id}-1"),
            input.clone(),
            None,
        ),
        (
            "newsletter: delayed start (2 s)",
            format!("news-{run_id}-2"),
            input,
            Some("2s".to_string()),
        ),
    ]
}

/// What `sagaflow demo` was asked for.
#[derive(Debug, Clone)]
pub struct Options {
    /// How many order sagas.
    pub sagas: usize,
    /// End once the sagas have ended (for scripts and CI) instead of keeping the
    /// dashboard up until SIGINT/SIGTERM.
    pub exit: bool,
    /// Progress as `indicatif` bars (a terminal) rather than plain lines.
    pub bars: bool,
}

/// How long the sagas get to end before the demo stops waiting for them.
const SAGAS_WITHIN: Duration = Duration::from_secs(120);
/// How long each child process gets to stop after SIGTERM.
const GRACE: Duration = Duration::from_secs(10);

/// Runs the demo. Every process it started is stopped before it returns, whether the
/// sagas ended, a signal came or something failed.
pub async fn run(settings: &Settings, pool: &PgPool, opts: &Options) -> anyhow::Result<()> {
    let shutdown = crate::runtime::shutdown_on_signals();
    std::fs::create_dir_all(".demo")?;
    let env: launch::Env = vec![];
    let mut coordinator = launch::spawn(&["coordinator"], &env, ".demo/coordinator.log".as_ref())?;
    let mut worker = launch::spawn(&["worker", "--demo"], &env, ".demo/worker.log".as_ref())?;
    println!(
        "coordinator pid {:?}, worker pid {:?} (logs in .demo/)",
        coordinator.id(),
        worker.id()
    );
    let outcome = match Dashboard::start(settings, ".demo/serve.log".as_ref()).await {
        Ok(dashboard) => {
            println!(
                "dashboard: {} (sagaflow serve, log in .demo/serve.log)",
                dashboard.url
            );
            let outcome = drive(settings, pool, opts, &dashboard.url, &shutdown).await;
            dashboard.stop(GRACE).await;
            outcome
        }
        Err(e) => Err(e),
    };
    launch::stop(&mut worker, GRACE).await;
    launch::stop(&mut coordinator, GRACE).await;
    outcome
}

async fn drive(
    settings: &Settings,
    pool: &PgPool,
    opts: &Options,
    url: &str,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let client = Client::connect(&settings.amqp.url, &settings.namespace).await?;
    let names = crate::broker::Names::new(&settings.namespace);
    let conn = crate::broker::connect(&settings.amqp.url, "sagaflow-demo").await?;
    let queue = names.coordinator_queue();
    let ready = launch::wait_for_consumer(&conn, &queue, Duration::from_secs(60));
    tokio::select! {
        r = ready => r.map_err(anyhow::Error::msg)?,
        _ = shutdown.cancelled() => {
            conn.close("demo stopped").await;
            client.close().await;
            return interrupted(opts);
        }
    }
    conn.close("ready").await;
    let n = opts.sagas;
    let run_id = chrono::Utc::now().format("%H%M%S").to_string();
    let mut ids = BTreeMap::new();
    let mut groups: Vec<(String, Vec<String>)> = vec![
        ("order_fulfillment".into(), vec![]),
        ("group_newsletter".into(), vec![]),
    ];
    let mut starts = Vec::new();
    for (i, (label, input)) in scenarios(n).into_iter().enumerate() {
        let id = format!("order-{run_id}-{}", i + 1);
        ids.insert(id.clone(), label);
        groups[0].1.push(id.clone());
        starts.push((
            "order_fulfillment".to_string(),
            input,
            StartOptions {
                id: Some(id),
                ..Default::default()
            },
        ));
    }
    for (label, id, input, delay) in newsletters(&run_id) {
        ids.insert(id.clone(), label.to_string());
        groups[1].1.push(id.clone());
        starts.push((
            "group_newsletter".to_string(),
            input,
            StartOptions {
                id: Some(id),
                delay,
                ..Default::default()
            },
        ));
    }
    client.start_many(&starts).await?;
    client.close().await;
    println!("started {n} order_fulfillment and 2 group_newsletter sagas (run {run_id})");
    let sizes: Vec<(String, u64)> = groups
        .iter()
        .map(|(name, ids)| (name.clone(), ids.len() as u64))
        .collect();
    let mut display = Display::new(&sizes, opts.bars);
    let deadline = tokio::time::Instant::now() + SAGAS_WITHIN;
    let ended = loop {
        let mut tallies = Vec::with_capacity(groups.len());
        for (name, ids) in &groups {
            let rows = crate::store::stats::statuses_of(pool, ids).await?;
            tallies.push((name.clone(), Tally::of(ids.len() as u64, &rows)));
        }
        display.update(&tallies);
        if tallies.iter().all(|(_, t)| t.done()) {
            break Some(true);
        }
        if tokio::time::Instant::now() > deadline {
            break Some(false);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = shutdown.cancelled() => break None,
        }
    };
    display.finish();
    let Some(all_ended) = ended else {
        return interrupted(opts);
    };
    if !all_ended {
        println!("\nnot every saga ended within {SAGAS_WITHIN:?}");
    }
    println!("\none saga of each kind (sagaflow sagas show <id> shows any of them):");
    let mut shown = std::collections::BTreeSet::new();
    for (id, label) in &ids {
        if shown.insert(label.clone()) {
            let st = sagas::get(pool, id)
                .await?
                .map(|s| s.state.status.to_string())
                .unwrap_or_else(|| "pending".into());
            println!("  {id:<24} {st:<12} {label}");
        }
    }
    if opts.exit {
        if !all_ended {
            anyhow::bail!("not every saga ended within {SAGAS_WITHIN:?}");
        }
        println!("\ndone (--exit): stopping the dashboard, the worker and the coordinator");
        return Ok(());
    }
    println!("\nthe dashboard stays up at {url}; Ctrl-C stops the demo");
    shutdown.cancelled().await;
    println!("stopping the dashboard, the worker and the coordinator");
    Ok(())
}

/// A signal before the sagas ended: a normal end of an interactive demo, a failure
/// of one that promised to run them to the end (`--exit`).
fn interrupted(opts: &Options) -> anyhow::Result<()> {
    println!("interrupted: stopping the dashboard, the worker and the coordinator");
    if opts.exit {
        anyhow::bail!("interrupted before the sagas ended");
    }
    Ok(())
}
