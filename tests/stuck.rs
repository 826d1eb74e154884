//! No saga waits for ever on a message nobody will answer: a task the broker
//! dead-letters comes back to the coordinator as a failed attempt, and settling a
//! batch never breaks the coordinator's channel.

mod common;

use std::time::Duration;

use common::{id, TestEnv};
use serde_json::json;

const T: Duration = Duration::from_secs(60);

const FRAGILE: &str = r#"
name = "fragile"
version = 1

[[steps]]
name = "charge"
activity = "payments.charge"
retry = { initial_interval = "100ms", max_attempts = 2 }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_lettered_task_fails_its_attempt_then_the_saga_gives_up() {
    let mut env = TestEnv::new(&[("fragile.toml", FRAGILE)]).await;
    env.start_coordinator().await; // no worker: the test plays a broken one
    let client = env.client().await;
    client.start("fragile", json!({}), id("f-1")).await.unwrap();
    let queue = env.names.task_queue("payments.charge");
    for attempt in 1..=2 {
        env.poison_next(&queue).await;
        let (reason, _) = env
            .get_dead_letter(&env.names.dlq("payments.charge"), T)
            .await;
        assert!(
            reason.contains("delivery_limit"),
            "attempt {attempt}: {reason}"
        );
    }
    env.wait_status("f-1", "compensated", T).await;
    let saga = sagaflow::store::sagas::history(&env.pool, "f-1")
        .await
        .unwrap();
    let failed: Vec<_> = saga
        .iter()
        .filter(|h| h.event == "attempt_failed")
        .map(|h| h.detail["error"]["code"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(failed, vec!["dead_lettered", "dead_lettered"], "{saga:?}");
    env.cleanup().await;
}
