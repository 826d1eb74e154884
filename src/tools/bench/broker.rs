//! `sagaflow bench-broker`: the broker's ceiling on this machine. N messages shaped
//! like a saga's `completed` event go through sagaflow's own publisher (persistent,
//! confirmed, pipelined in batches, as the outbox relay sends them) to `<ns>.events`,
//! and one no-ack consumer takes them, as in the timer benchmark. Every saga that
//! wakes publishes at least one message (its next task or its terminal event), so
//! this rate bounds how many sagas per second can wake, whatever the database does.

use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::json;

use super::{collect, subscribe};
use crate::broker::{Names, Outgoing, Publisher};
use crate::config::Settings;
use crate::messages::SagaEvent;

const SAGA: &str = "broker_bench";

/// What to run.
#[derive(Debug, Clone)]
pub struct BrokerArgs {
    pub messages: usize,
    /// Messages per confirmed batch (the outbox relay coalesces up to 4,096).
    pub batch: usize,
    pub timeout: Duration,
}

/// Runs the broker benchmark; returns the JSON line.
pub async fn run(settings: &Settings, args: &BrokerArgs) -> anyhow::Result<serde_json::Value> {
    let names = Names::new(&format!(
        "{}_broker{}",
        settings.namespace,
        std::process::id()
    ));
    let conn = crate::broker::connect(&settings.amqp.url, "sagaflow-bench-broker").await?;
    let mut events = subscribe(&conn, &names, SAGA).await?;
    let publisher = Publisher::open(&conn).await?;
    let bodies: Vec<Vec<u8>> = (0..args.messages)
        .map(event_body)
        .collect::<Result<_, _>>()?;
    let exchange = names.events();
    let key = format!("saga.{SAGA}.completed");
    let started = Instant::now();
    let receiver = async {
        let got = collect(&mut events, args.messages, args.timeout, |_| {}).await;
        (got, started.elapsed())
    };
    let sender = async {
        for chunk in bodies.chunks(args.batch.max(1)) {
            let batch: Vec<Outgoing> = chunk
                .iter()
                .map(|b| Outgoing {
                    exchange: &exchange,
                    routing_key: &key,
                    body: b,
                    mandatory: false,
                    headers: None,
                })
                .collect();
            publisher.publish_all_or_fail(&batch).await?;
        }
        anyhow::Ok(started.elapsed())
    };
    let ((got, received), published) = tokio::join!(receiver, sender);
    let (got, published) = (got?, published?);
    // The exchanges `subscribe` declared (the queue is exclusive and goes by itself).
    crate::broker::topology::delete_namespace(&conn, &names, &[]).await?;
    conn.close("done").await;
    Ok(json!({
        "messages": args.messages,
        "received": got,
        "batch": args.batch,
        "body_bytes": bodies.first().map(Vec::len),
        "published_confirmed_s": round2(published.as_secs_f64()),
        "all_received_s": round2(received.as_secs_f64()),
        "messages_per_s": (got as f64 / received.as_secs_f64()).round(),
    }))
}

fn event_body(i: usize) -> serde_json::Result<Vec<u8>> {
    serde_json::to_vec(&SagaEvent {
        saga_id: format!("t-{i}"),
        saga: SAGA.into(),
        version: 1,
        status: "completed".into(),
        at: Utc::now(),
        error: None,
    })
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
