//! No saga waits for ever on a message nobody will answer: a task the broker
//! dead-letters comes back to the coordinator as a failed attempt, and settling a
//! batch never breaks the coordinator's channel.

mod common;

use std::time::Duration;

use common::{id, TestEnv, ORDER};
use sagaflow::saga::state::StepStatus;
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
    let saga = sagaflow::store::history::all(&env.pool, "f-1")
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

const PATIENT: &str = r#"
name = "patient"
version = 1

[[steps]]
name = "approval"
wait = "approved"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciler_flags_sagas_nothing_will_move_and_repairs_what_it_can() {
    let mut env = TestEnv::new(&[("order.toml", ORDER), ("patient.toml", PATIENT)]).await;
    env.settings.coordinator.reconcile_interval_ms = 100;
    env.settings.coordinator.stuck_after_ms = 1_000;
    let an_hour_ago = chrono::Utc::now() - chrono::Duration::hours(1);
    // 1. Written by an older version: a task in flight with no deadline, dispatched an
    //    hour ago and never answered. Repairable: the wake-up arms its deadline, which
    //    has passed, so the attempt times out and is retried.
    env.saga("lost-task")
        .definition("order_fulfillment")
        .at(an_hour_ago)
        .edit(|s| {
            if let Some(a) = s.tasks.first_mut() {
                a.timeout_at = None;
            }
        })
        .insert()
        .await;
    // 2. Nothing the machine can do: running, nothing in flight, no timer.
    env.saga("wedged")
        .definition("order_fulfillment")
        .at(an_hour_ago)
        .edit(|s| {
            s.tasks.clear();
            s.steps[0].status = StepStatus::Pending;
        })
        .insert()
        .await;
    // 3. Waiting for a signal without a timeout: legitimately idle, not stuck.
    env.saga("waiting")
        .definition("patient")
        .at(an_hour_ago)
        .insert()
        .await;

    env.start_coordinator().await;
    env.wait_history("lost-task", "attempt_timed_out").await;
    let lost_history = env.history("lost-task").await;
    assert!(
        lost_history.contains(&"stuck_detected".to_string()),
        "{lost_history:?}"
    );
    assert!(
        lost_history.contains(&"retry_scheduled".to_string()),
        "{lost_history:?}"
    );
    env.wait_history("wedged", "stuck_detected").await;

    let stuck = |filter: sagaflow::store::sagas::ListFilter| {
        let pool = env.pool.clone();
        async move {
            sagaflow::store::sagas::list(&pool, &filter, 10)
                .await
                .unwrap()
                .into_iter()
                .map(|s| s.id)
                .collect::<Vec<_>>()
        }
    };
    let flagged = stuck(sagaflow::store::sagas::ListFilter {
        stuck: true,
        ..Default::default()
    })
    .await;
    assert_eq!(
        flagged,
        vec!["wedged".to_string()],
        "repaired sagas are cleared"
    );
    assert_eq!(sagaflow::store::stuck::count(&env.pool).await.unwrap(), 1);
    // Flagged once, not on every pass.
    let again = env.history("wedged").await;
    assert_eq!(
        again.iter().filter(|e| *e == "stuck_detected").count(),
        1,
        "{again:?}"
    );
    assert!(!env
        .history("waiting")
        .await
        .contains(&"stuck_detected".to_string()));
    // The CLI lists it.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sagaflow"))
        .args(["sagas", "list", "--stuck"])
        .envs(env.child_env())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("wedged") && !text.contains("lost-task"),
        "{text}"
    );
    env.cleanup().await;
}
