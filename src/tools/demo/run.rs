//! `sagaflow demo`: starts a coordinator and a demo worker as child processes, runs a
//! mix of order sagas (completing, retrying, compensating, failing) and two deferred
//! group newsletters (a durable sleep until `send_at`, a delayed start), and prints
//! live progress until every saga has ended.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use sqlx::PgPool;

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

/// Runs the demo with `n` sagas.
pub async fn run(settings: &Settings, pool: &PgPool, n: usize) -> anyhow::Result<()> {
    std::fs::create_dir_all(".demo")?;
    let env: launch::Env = vec![];
    let mut coordinator = launch::spawn(&["coordinator"], &env, ".demo/coordinator.log".as_ref())?;
    let mut worker = launch::spawn(&["worker", "--demo"], &env, ".demo/worker.log".as_ref())?;
    println!(
        "coordinator pid {:?}, worker pid {:?} (logs in .demo/)",
        coordinator.id(),
        worker.id()
    );
    let outcome = drive(settings, pool, n).await;
    launch::stop(&mut worker, Duration::from_secs(10)).await;
    launch::stop(&mut coordinator, Duration::from_secs(10)).await;
    outcome
}

async fn drive(settings: &Settings, pool: &PgPool, n: usize) -> anyhow::Result<()> {
    let client = Client::connect(&settings.amqp.url, &settings.namespace).await?;
    let names = crate::broker::Names::new(&settings.namespace);
    let conn = crate::broker::connect(&settings.amqp.url, "sagaflow-demo").await?;
    launch::wait_for_consumer(&conn, &names.coordinator_queue(), Duration::from_secs(60))
        .await
        .map_err(anyhow::Error::msg)?;
    let run_id = chrono::Utc::now().format("%H%M%S").to_string();
    let mut ids = BTreeMap::new();
    let mut starts = Vec::new();
    for (i, (label, input)) in scenarios(n).into_iter().enumerate() {
        let id = format!("order-{run_id}-{}", i + 1);
        ids.insert(id.clone(), label);
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
    println!("started {n} order_fulfillment and 2 group_newsletter sagas (run {run_id})");
    let all: Vec<String> = ids.keys().cloned().collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let counts = status_counts(pool, &all).await?;
        let line: Vec<String> = counts.iter().map(|(s, c)| format!("{s} {c}")).collect();
        println!("  progress: {}", line.join(" | "));
        let open: i64 = counts
            .iter()
            .filter(|(s, _)| {
                matches!(
                    s.as_str(),
                    "running" | "compensating" | "scheduled" | "pending"
                )
            })
            .map(|(_, c)| c)
            .sum();
        if open == 0 || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
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
    println!("\nto browse them in the web dashboard: run `sagaflow serve`, then open http://127.0.0.1:8080/");
    client.close().await;
    Ok(())
}

async fn status_counts(pool: &PgPool, ids: &[String]) -> anyhow::Result<Vec<(String, i64)>> {
    let rows = crate::store::stats::statuses_of(pool, ids).await?;
    let seen: i64 = rows.iter().map(|(_, c)| c).sum();
    let mut rows = rows;
    if (seen as usize) < ids.len() {
        rows.push(("pending".into(), ids.len() as i64 - seen));
    }
    Ok(rows)
}
