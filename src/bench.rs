//! `sagaflow bench`: N sagas of K no-op steps through the real stack — a coordinator
//! and a worker process started exactly as a user would — timed from the first start
//! event to the last completion event. Prints one JSON line.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde_json::json;

use crate::broker::Names;
use crate::client::{Client, StartOptions};
use crate::config::Settings;
use crate::demo::NOOP_ACTIVITY;
use crate::launch;
use crate::messages::SagaEvent;

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
    let tag = format!("bench{}", std::process::id());
    let namespace = format!("{}_{tag}", settings.namespace);
    let db_url = with_database(&settings.database.url, &format!("sagaflow_{tag}"))?;
    let dir = std::env::temp_dir().join(format!("sagaflow-{tag}"));
    std::fs::create_dir_all(&dir)?;
    let saga = format!("bench_{}", args.steps);
    std::fs::write(dir.join(format!("{saga}.toml")), definition(args.steps))?;
    crate::store::connect(&db_url, 2).await?.close().await;
    let env: launch::Env = vec![
        ("SAGAFLOW__NAMESPACE".into(), namespace.clone()),
        ("SAGAFLOW__SAGAS_DIR".into(), dir.display().to_string()),
        ("SAGAFLOW__DATABASE__URL".into(), db_url.clone()),
    ];
    let mut coordinator = launch::spawn(&["coordinator"], &env, &dir.join("coordinator.log"))?;
    let mut worker = launch::spawn(&["worker", "--demo"], &env, &dir.join("worker.log"))?;
    let result = measure(settings, &namespace, &saga, args).await;
    launch::stop(&mut worker, Duration::from_secs(10)).await;
    launch::stop(&mut coordinator, Duration::from_secs(10)).await;
    let _ = crate::store::drop_database(&db_url).await;
    let conn = crate::broker::connect(&settings.amqp.url, "sagaflow-bench-cleanup").await?;
    crate::broker::topology::delete_namespace(
        &conn,
        &Names::new(&namespace),
        &[NOOP_ACTIVITY.to_string()],
    )
    .await?;
    let _ = std::fs::remove_dir_all(&dir);
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
    let ch = conn.create_channel().await?;
    let q = format!("{namespace}.bench.events");
    let opts = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..Default::default()
    };
    ch.queue_declare(q.as_str().into(), opts, FieldTable::default())
        .await?;
    ch.queue_bind(
        q.as_str().into(),
        names.events().as_str().into(),
        format!("saga.{saga}.*").as_str().into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    let mut events = ch
        .basic_consume(
            q.as_str().into(),
            "bench".into(),
            BasicConsumeOptions {
                no_ack: false,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
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
    let collector = async {
        let deadline = tokio::time::Instant::now() + args.timeout;
        while finished.len() < args.sagas {
            let next = tokio::time::timeout_at(deadline, events.next()).await;
            let Ok(Some(Ok(d))) = next else { break };
            if let Ok(e) = serde_json::from_slice::<SagaEvent>(&d.data) {
                *statuses.entry(e.status.clone()).or_default() += 1;
                finished.insert(e.saga_id, Instant::now());
            }
            d.ack(BasicAckOptions::default()).await?;
        }
        Ok::<_, anyhow::Error>(())
    };
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
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
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
        "latency_p50_ms": pct(0.50).round(),
        "latency_p99_ms": pct(0.99).round(),
    }))
}

/// `url` with its database name replaced.
pub fn with_database(url: &str, db: &str) -> anyhow::Result<String> {
    let (base, _) = url
        .rsplit_once('/')
        .ok_or_else(|| anyhow::anyhow!("database.url has no database name: {url}"))?;
    let query = url
        .split_once('?')
        .map(|(_, q)| format!("?{q}"))
        .unwrap_or_default();
    Ok(format!("{base}/{db}{query}"))
}
