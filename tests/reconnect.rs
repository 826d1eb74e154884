//! Broker connections dropped under load (what a RabbitMQ restart does to clients):
//! the coordinator and the worker reconnect, redeclare and finish every saga.

mod common;

use std::time::Duration;

use common::{TestEnv, ORDER};
use sagaflow::client::StartOptions;
use serde_json::json;

/// Force-closes this namespace's coordinator and worker connections; returns how many.
fn close_connections(namespace: &str) -> usize {
    let out = std::process::Command::new("rabbitmqctl")
        .args(["list_connections", "-q", "pid", "client_properties"])
        .output()
        .expect("rabbitmqctl runs (the tests need a local RabbitMQ)");
    let text = String::from_utf8_lossy(&out.stdout);
    let marker = format!("@{namespace}\"");
    let mut closed = 0;
    for line in text.lines().filter(|l| l.contains(&marker)) {
        let pid = line.split('\t').next().expect("pid column");
        let status = std::process::Command::new("rabbitmqctl")
            .args(["close_connection", pid, "test: simulated broker restart"])
            .status()
            .unwrap();
        assert!(status.success(), "close {pid}");
        closed += 1;
    }
    closed
}

#[tokio::test]
async fn coordinator_and_worker_reconnect_after_their_connections_drop() {
    let env = TestEnv::running(&[("order.toml", ORDER)]).await;
    let client = env.client().await;
    let ids: Vec<String> = (0..200).map(|i| format!("rc-{i}")).collect();
    let starts: Vec<_> = ids
        .iter()
        .map(|id| {
            (
                "order_fulfillment".to_string(),
                json!({"fail": {"payments.charge": {"times": 1}}}),
                StartOptions {
                    id: Some(id.clone()),
                    ..Default::default()
                },
            )
        })
        .collect();
    client.start_many(&starts[..100]).await.unwrap();
    assert_eq!(
        close_connections(env.names.namespace()),
        2,
        "one coordinator and one worker connection"
    );
    client.start_many(&starts[100..]).await.unwrap();
    // Both must be back (consuming again) before the sagas can finish.
    env.wait_consumer(&env.names.coordinator_queue()).await;
    env.wait_consumer(&env.names.task_queue("payments.charge"))
        .await;
    let done = env.wait_terminal(&ids, Duration::from_secs(120)).await;
    assert!(done.values().all(|s| s == "completed"), "{done:?}");
    let effects: i64 = sqlx::query_scalar("SELECT count(*) FROM demo_effects")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(
        effects, 600,
        "three effects per saga, none lost, none doubled"
    );
    env.cleanup().await;
}
