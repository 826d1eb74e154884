//! `sagaflow bench`: N sagas of K no-op steps through the real stack — a coordinator
//! and a worker process started exactly as a user would — timed from the first start
//! event to the last completion event. Prints one JSON line.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{collect, quantile, subscribe, Sandbox};
use crate::broker::Names;
use crate::client::{Client, StartOptions};
use crate::config::Settings;
use crate::tools::demo::NOOP_ACTIVITY;
use crate::tools::launch;

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchArgs {
    pub sagas: usize,
    pub steps: usize,
    pub timeout: Duration,
}

fn definition(steps: usize) -> String {
    let mut s =
        format!("name = \"bench_{steps}\"\nversion = 1\n\n[defaults]\nstart_to_close = \"30s\"\n");
    for i in 0..steps {
        s.push_str(&format!(
            "\n[[steps]]\nname = \"s{i}\"\nactivity = \"{NOOP_ACTIVITY}\"\n"
        ));
    }
    s
}

/// Runs the benchmark in a fresh namespace and database; returns the JSON line.
pub async fn run(settings: &Settings, args: &BenchArgs) -> anyhow::Result<serde_json::Value> {
    let saga = format!("bench_{}", args.steps);
    let mut sandbox = Sandbox::new(
        settings,
        "bench",
        &[(format!("{saga}.toml"), definition(args.steps))],
    )
    .await?;
    sandbox.spawn(&["coordinator"], &[])?;
    sandbox.spawn(&["worker", "--demo"], &[])?;
    let result = measure(settings, &sandbox.namespace, &saga, args).await;
    // The demo worker declares a queue for every demo activity: delete them all.
    sandbox
        .teardown(settings, &crate::tools::demo::activity_names())
        .await?;
    result
}

async fn measure(
    settings: &Settings,
    namespace: &str,
    saga: &str,
    args: &BenchArgs,
) -> anyhow::Result<serde_json::Value> {
    let names = Names::new(namespace);
    let conn = crate::broker::connect(&settings.amqp.url, "sagaflow-bench").await?;
    let client = Client::connect(&settings.amqp.url, namespace).await?;
    let mut events = subscribe(&conn, &names, saga).await?;
    launch::wait_for_consumer(&conn, &names.coordinator_queue(), Duration::from_secs(60))
        .await
        .map_err(anyhow::Error::msg)?;
    launch::wait_for_consumer(
        &conn,
        &names.task_queue(NOOP_ACTIVITY),
        Duration::from_secs(60),
    )
    .await
    .map_err(anyhow::Error::msg)?;

    let began = Instant::now();
    let mut started_at: HashMap<String, Instant> = HashMap::with_capacity(args.sagas);
    let publisher = async {
        for chunk in (0..args.sagas).collect::<Vec<_>>().chunks(500) {
            let starts: Vec<_> = chunk
                .iter()
                .map(|i| {
                    (
                        saga.to_string(),
                        json!({}),
                        StartOptions {
                            id: Some(format!("b-{i}")),
                            ..Default::default()
                        },
                    )
                })
                .collect();
            let now = Instant::now();
            client.start_many(&starts).await?;
            for (_, _, o) in &starts {
                started_at.insert(o.id.clone().unwrap_or_default(), now);
            }
        }
        Ok::<_, anyhow::Error>(())
    };
    let mut finished: HashMap<String, Instant> = HashMap::with_capacity(args.sagas);
    let mut statuses: HashMap<String, usize> = HashMap::new();
    let collector = collect(&mut events, args.sagas, args.timeout, |e| {
        *statuses.entry(e.status.clone()).or_default() += 1;
        finished.insert(e.saga_id, Instant::now());
    });
    let (p, c) = tokio::join!(publisher, collector);
    p?;
    c?;
    let elapsed = began.elapsed().as_secs_f64();
    let mut latencies: Vec<f64> = finished
        .iter()
        .filter_map(|(id, end)| {
            started_at
                .get(id)
                .map(|s| end.duration_since(*s).as_secs_f64() * 1000.0)
        })
        .collect();
    latencies.sort_by(|a, b| a.total_cmp(b));
    let done = finished.len();
    client.close().await;
    Ok(json!({
        "sagas": args.sagas,
        "steps": args.steps,
        "finished": done,
        "statuses": statuses,
        "seconds": (elapsed * 1000.0).round() / 1000.0,
        "sagas_per_s": (done as f64 / elapsed).round(),
        "steps_per_s": ((done * args.steps) as f64 / elapsed).round(),
        "latency_p50_ms": quantile(&latencies, 0.50).round(),
        "latency_p99_ms": quantile(&latencies, 0.99).round(),
    }))
}
