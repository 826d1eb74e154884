//! Flow constructs end to end on the real RabbitMQ and Postgres: a parallel step
//! whose branches run at once, a `when` that skips a step, an `input` map, and a
//! failing branch that undoes what the others did.

mod common;

use std::time::Duration;

use common::{id, TestEnv};
use serde_json::json;

const T: Duration = Duration::from_secs(30);

const CHECKOUT: &str = r#"
name = "checkout"
version = 1

[[steps]]
name = "prepare"
parallel = [
  { name = "reserve", activity = "inventory.reserve", compensate = "inventory.release" },
  { name = "charge", activity = "payments.charge", compensate = "payments.refund", retry = { max_attempts = 2, initial_interval = "100ms" } },
  { name = "approval", wait = "approved", timeout = "1m" },
]

[[steps]]
name = "ship"
activity = "shipping.ship"
when = "!input.digital"
input = { order = "input.order_id", charged = "steps.prepare.charge.ref" }
"#;

#[tokio::test]
async fn branches_run_together_and_a_false_when_skips_the_step() {
    let env = TestEnv::running(&[("checkout.toml", CHECKOUT)]).await;
    let client = env.client().await;
    for (saga, digital) in [("c-physical", false), ("c-digital", true)] {
        let input = json!({"order_id": 1, "digital": digital});
        client.start("checkout", input, id(saga)).await.unwrap();
        // Both activity branches run before the signal arrives: they are not in line.
        env.wait_history(saga, "wait_started").await;
        common::eventually("both branch effects", T, || async {
            let n = env.effects(saga).await.len();
            (n == 2).then_some(()).ok_or(n)
        })
        .await;
        client
            .signal(saga, "approved", json!({"by": "ops"}))
            .await
            .unwrap();
    }
    env.wait_status("c-physical", "completed", T).await;
    env.wait_status("c-digital", "completed", T).await;
    assert_eq!(
        env.effect_activities("c-physical").await,
        vec!["inventory.reserve", "payments.charge", "shipping.ship"]
    );
    assert_eq!(
        env.effect_activities("c-digital").await,
        vec!["inventory.reserve", "payments.charge"]
    );
    let h = env.history("c-digital").await;
    assert!(h.contains(&"parallel_started".to_string()), "{h:?}");
    assert!(h.contains(&"step_skipped".to_string()), "{h:?}");
    env.cleanup().await;
}

#[tokio::test]
async fn a_branch_that_fails_for_good_undoes_the_branches_that_completed() {
    let env = TestEnv::running(&[("checkout.toml", CHECKOUT)]).await;
    let input = json!({
        "order_id": 2,
        "fail": {"payments.charge": {"code": "card_declined", "retryable": false}}
    });
    let client = env.client().await;
    client
        .start("checkout", input, id("c-declined"))
        .await
        .unwrap();
    env.wait_status("c-declined", "compensated", T).await;
    // reserve ran and was released once; the failed charge is not refunded; the
    // wait branch was left; ship never ran.
    assert_eq!(
        env.effects("c-declined").await,
        vec![
            ("inventory.release".into(), 1),
            ("inventory.reserve".into(), 1)
        ]
    );
    let h = env.history("c-declined").await;
    assert_eq!(
        h.iter().filter(|e| *e == "compensation_completed").count(),
        1
    );
    assert!(!h.contains(&"signal_received".to_string()));
    env.cleanup().await;
}

const PARENT: &str = r#"
name = "parent"
version = 1

[[steps]]
name = "review"
saga = "review_child"

[[steps]]
name = "charge"
activity = "payments.charge"
"#;

const CHILD: &str = r#"
name = "review_child"
version = 1

[[steps]]
name = "check"
activity = "inventory.reserve"
compensate = "inventory.release"

[[steps]]
name = "approval"
wait = "go"
"#;

const SAGAS: &[(&str, &str)] = &[("parent.toml", PARENT), ("child.toml", CHILD)];

#[tokio::test]
async fn a_child_saga_runs_as_a_step_and_is_undone_when_the_parent_compensates() {
    let env = TestEnv::running(SAGAS).await;
    let client = env.client().await;
    let declined = json!({"fail": {"payments.charge": {"code": "declined", "retryable": false}}});
    for (parent, input) in [("p-ok", json!({})), ("p-declined", declined)] {
        client.start("parent", input, id(parent)).await.unwrap();
        let child = format!("{parent}/review");
        env.wait_history(&child, "wait_started").await;
        client.signal(&child, "go", json!({})).await.unwrap();
    }
    env.wait_status("p-ok", "completed", T).await;
    assert_eq!(
        env.status("p-ok/review").await.as_deref(),
        Some("completed")
    );
    assert_eq!(
        env.effect_activities("p-ok/review").await,
        vec!["inventory.reserve"]
    );
    // The parent's charge failed: the completed child was undone, once.
    env.wait_status("p-declined", "compensated", T).await;
    env.wait_status("p-declined/review", "compensated", T).await;
    assert_eq!(
        env.effects("p-declined/review").await,
        vec![
            ("inventory.release".into(), 1),
            ("inventory.reserve".into(), 1)
        ]
    );
    env.cleanup().await;
}

#[tokio::test]
async fn cancelling_a_parent_cancels_its_running_child() {
    let env = TestEnv::running(SAGAS).await;
    let client = env.client().await;
    client.start("parent", json!({}), id("p-c")).await.unwrap();
    env.wait_history("p-c/review", "wait_started").await;
    client
        .cancel("p-c", "customer changed their mind")
        .await
        .unwrap();
    env.wait_status("p-c", "cancelled", T).await;
    assert_eq!(env.status("p-c/review").await.as_deref(), Some("cancelled"));
    assert_eq!(
        env.effects("p-c/review").await,
        vec![
            ("inventory.release".into(), 1),
            ("inventory.reserve".into(), 1)
        ]
    );
    env.cleanup().await;
}
