//! Worker drain on SIGTERM: a worker process told to stop while `shipping.ship`
//! handlers are running finishes them, publishes and acks their results, returns what
//! it had not started, and exits 0 within `worker.drain_grace_ms`. A fresh worker then
//! finishes the rest; nothing runs twice and nothing is dead-lettered.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{eventually, TestEnv, ORDER};
use sagaflow::client::StartOptions;
use serde_json::json;
use tokio::process::{Child, Command};

const SAGAS: usize = 20;
const SLOW_SHIP_MS: u64 = 1500;
const DRAIN_GRACE_MS: u64 = 10_000;

fn spawn(env: &TestEnv, args: &[&str], log: &str) -> Child {
    let file = std::fs::File::create(env.dir.join(log)).unwrap();
    Command::new(env!("CARGO_BIN_EXE_sagaflow"))
        .args(args)
        .envs(env.child_env())
        .env(
            "SAGAFLOW__WORKER__DRAIN_GRACE_MS",
            DRAIN_GRACE_MS.to_string(),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::from(file.try_clone().unwrap()))
        .stderr(Stdio::from(file))
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Sagas whose `ship_order` task the coordinator has published.
async fn ship_started(env: &TestEnv) -> i64 {
    sqlx::query_scalar(
        "SELECT count(DISTINCT saga_id) FROM saga_history WHERE event = 'step_started' AND step = 'ship_order'",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap()
}

/// Sagas with a recorded `shipping.ship` effect (handlers that ran to the end).
async fn shipped(env: &TestEnv) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT saga_id FROM demo_effects WHERE activity = 'shipping.ship' ORDER BY saga_id",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_tasks_and_exits_zero() {
    let env = TestEnv::new(&[("order.toml", ORDER)]).await;
    let ship_queue = env.names.task_queue("shipping.ship");
    let mut coordinator = spawn(&env, &["coordinator"], "coordinator.log");
    env.wait_consumer(&env.names.coordinator_queue()).await;
    let mut worker = spawn(&env, &["worker", "--demo"], "worker-0.log");
    env.wait_consumer(&ship_queue).await;

    let client = env.client().await;
    let ids: Vec<String> = (0..SAGAS).map(|i| format!("drain-{i}")).collect();
    let input = json!({"slow": {"shipping.ship": {"ms": SLOW_SHIP_MS, "times": 1}}});
    let starts: Vec<_> = ids
        .iter()
        .map(|id| {
            (
                "order_fulfillment".to_string(),
                input.clone(),
                StartOptions {
                    id: Some(id.clone()),
                    ..Default::default()
                },
            )
        })
        .collect();
    client.start_many(&starts).await.unwrap();

    // Every ship task published (outbox empty) and none left ready in the queue: the
    // worker holds them (prefetch 64), and their handlers sleep for 1.5 s.
    eventually(
        "ship tasks in the worker",
        Duration::from_secs(60),
        || async {
            let seen = (
                ship_started(&env).await,
                sagaflow::store::outbox::backlog(&env.pool).await.unwrap(),
                env.depth(&ship_queue).await,
            );
            // (ship steps started, outbox rows, ship tasks ready)
            (seen == (SAGAS as i64, 0, 0)).then_some(()).ok_or(seen)
        },
    )
    .await;
    let before = shipped(&env).await.len();

    let pid = worker.id().expect("worker running");
    let term = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = tokio::time::timeout(Duration::from_millis(DRAIN_GRACE_MS), worker.wait())
        .await
        .expect("the worker exits by itself within the drain grace period")
        .unwrap();
    assert_eq!(status.code(), Some(0), "worker exit status: {status}");

    let log = std::fs::read_to_string(env.dir.join("worker-0.log")).unwrap();
    assert!(log.contains("worker draining"), "worker log:\n{log}");
    assert!(log.contains("worker drained"), "worker log:\n{log}");
    assert!(
        !log.contains("drain grace period over"),
        "worker log:\n{log}"
    );

    // The handlers that were running finished during the drain...
    let drained = shipped(&env).await;
    assert!(
        drained.len() > before,
        "no handler finished during the drain ({before} before SIGTERM)"
    );
    // ...and their results were published with confirms: the coordinator completes
    // those sagas while no worker runs at all.
    env.wait_terminal(&drained, Duration::from_secs(30)).await;
    for id in &drained {
        assert_eq!(env.status(id).await.as_deref(), Some("completed"), "{id}");
    }
    // ...and acked before the connection closed: only tasks the worker had not started
    // went back to the queue (an unacked finished task would be back as well).
    let returned = (SAGAS - drained.len()) as u32;
    eventually(
        "unstarted ship tasks back in the queue",
        Duration::from_secs(10),
        || async {
            let depth = env.depth(&ship_queue).await;
            (depth == returned).then_some(()).ok_or(depth)
        },
    )
    .await;

    // A fresh worker finishes the rest.
    let mut worker = spawn(&env, &["worker", "--demo"], "worker-1.log");
    let done = env.wait_terminal(&ids, Duration::from_secs(60)).await;
    for id in &ids {
        assert_eq!(done[id], "completed", "{id}");
    }
    // Nothing ran twice: the drained tasks were not redelivered to the fresh worker.
    let reruns: Vec<(String, String, i32)> =
        sqlx::query_as("SELECT saga_id, activity, calls FROM demo_effects WHERE calls > 1")
            .fetch_all(&env.pool)
            .await
            .unwrap();
    assert!(reruns.is_empty(), "handlers ran twice: {reruns:?}");
    // Nothing was dead-lettered.
    let mut dlqs = vec![env.names.dlq_coordinator()];
    dlqs.extend(env.activities().iter().map(|a| env.names.dlq(a)));
    for q in dlqs {
        assert_eq!(env.depth(&q).await, 0, "dead letters in {q}");
    }
    println!(
        "drain test: {} ship handlers finished during the drain, {returned} returned unstarted",
        drained.len()
    );

    sagaflow::tools::launch::stop(&mut worker, Duration::from_secs(15)).await;
    sagaflow::tools::launch::stop(&mut coordinator, Duration::from_secs(15)).await;
    client.close().await;
    env.cleanup().await;
}
