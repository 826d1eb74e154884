//! Operator actions end to end: dead letters that know their saga (replay, purge, dry
//! runs), and acting on stuck and failed sagas (skip, retry).

mod common;

use std::time::Duration;

use common::{id, TestEnv, ORDER};
use sagaflow::broker::Publisher;
use sagaflow::dead_letters::{self, DeadLetterAction, Selection};
use sagaflow::saga::machine::OperatorAction;
use sagaflow::tools::demo::activities::set_switch;
use serde_json::json;

const T: Duration = Duration::from_secs(30);

/// The demo switch that keeps `payments.refund` failing while it is on.
const REFUND_DOWN: &str = "refund_down";

/// Runs the `sagaflow` binary against `env`; returns its stdout, asserting success.
fn sagaflow_cli(env: &TestEnv, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sagaflow"))
        .args(args)
        .envs(env.child_env())
        .output()
        .expect("sagaflow runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

const HAUNTED: &str = r#"
name = "haunted"
version = 1
[[steps]]
name = "reserve"
activity = "inventory.reserve"
compensate = "inventory.release"
[[steps]]
name = "haunt"
activity = "ghost.work"
# A dead-lettered task is a failed attempt; the retry waits in Postgres, so the
# task queue holds only what the test puts there.
retry = { initial_interval = "2h", max_interval = "2h" }
[[steps]]
name = "ship"
activity = "shipping.ship"
"#;

#[tokio::test]
async fn dead_letters_know_their_saga_and_can_be_replayed_purged_and_skipped() {
    let env = TestEnv::running(&[("haunted.toml", HAUNTED)]).await;
    let client = env.client().await;
    client.start("haunted", json!({}), id("h-1")).await.unwrap();
    let task_q = env.names.task_queue("ghost.work");
    let dlq_q = env.names.dlq("ghost.work");
    env.wait_depth(&task_q, 1).await;
    env.poison_next(&task_q).await;
    env.wait_depth(&dlq_q, 1).await;

    let conn = env.connect().await;
    let publisher = Publisher::open(&conn).await.unwrap();
    let sel = |saga: &str, dry_run| Selection {
        saga_id: Some(saga.into()),
        limit: 10,
        dry_run,
    };
    // Dry run: lists the saga's dead letter, touches nothing.
    let seen = dead_letters::act(
        &conn,
        &publisher,
        &dlq_q,
        &sel("h-1", true),
        DeadLetterAction::Replay,
    )
    .await
    .unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].about.saga_id.as_deref(), Some("h-1"));
    assert_eq!(seen[0].about.step.as_deref(), Some("haunt"));
    assert!(
        seen[0].reason.contains("delivery_limit"),
        "{}",
        seen[0].reason
    );
    assert!(!seen[0].applied);
    assert_eq!(env.depth(&dlq_q).await, 1);
    // Another saga's filter touches nothing.
    assert!(dead_letters::act(
        &conn,
        &publisher,
        &dlq_q,
        &sel("other", false),
        DeadLetterAction::Purge
    )
    .await
    .unwrap()
    .is_empty());
    // Replay: back in the task queue, gone from the DLQ.
    let replayed = dead_letters::act(
        &conn,
        &publisher,
        &dlq_q,
        &sel("h-1", false),
        DeadLetterAction::Replay,
    )
    .await
    .unwrap();
    assert!(replayed[0].applied);
    env.wait_depth(&task_q, 1).await;
    assert_eq!(env.depth(&dlq_q).await, 0);
    // Dead-letter it again, then purge it.
    env.poison_next(&task_q).await;
    env.wait_depth(&dlq_q, 1).await;
    let purged = dead_letters::act(
        &conn,
        &publisher,
        &dlq_q,
        &sel("h-1", false),
        DeadLetterAction::Purge,
    )
    .await
    .unwrap();
    assert_eq!(purged.len(), 1);
    assert_eq!(env.depth(&dlq_q).await, 0);

    // The saga waits on `haunt` (its retry is two hours away): skip it with an
    // output; it goes on and completes.
    // The same skip arrives twice (a redelivery): the second is refused, because the
    // saga moved on to the next step, which must not be skipped too.
    let issued = env.issued_for("h-1").await;
    let skip = OperatorAction::Skip {
        output: json!({"manual": true}),
    };
    client.operate("h-1", &skip, &issued, "test").await.unwrap();
    client.operate("h-1", &skip, &issued, "test").await.unwrap();
    let (reason, _) = env.get_dead_letter(&env.names.dlq_coordinator(), T).await;
    assert!(reason.contains("moved on"), "{reason}");
    env.wait_status("h-1", "completed", T).await;
    let skipped = env.history("h-1").await;
    assert_eq!(
        skipped.iter().filter(|e| *e == "step_skipped").count(),
        1,
        "{skipped:?}"
    );
    let saga = sagaflow::store::sagas::get(&env.pool, "h-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(saga.state.steps[1].output, Some(json!({"manual": true})));
    assert!(env
        .history("h-1")
        .await
        .contains(&"step_skipped".to_string()));
    conn.close("ok").await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_failed_saga_is_retried_from_its_failed_compensation() {
    let env = TestEnv::running(&[("order.toml", ORDER)]).await;
    let client = env.client().await;
    // The refund fails for good while the switch is on; the operator retries once it
    // is off.
    set_switch(&env.pool, REFUND_DOWN, true).await.unwrap();
    let input = json!({"fail": {"shipping.ship": {"retryable": false}, "payments.refund": {"retryable": false, "while": REFUND_DOWN}}});
    client
        .start("order_fulfillment", input, id("f-1"))
        .await
        .unwrap();
    env.wait_status("f-1", "failed", T).await;
    // A bulk dry run lists what the action would do and sends nothing.
    let out = sagaflow_cli(
        &env,
        &[
            "sagas",
            "retry",
            "--status",
            "failed",
            "--id-prefix",
            "f-",
            "--dry-run",
        ],
    );
    assert!(
        out.contains("f-1") && out.contains("would retry") && out.contains("1 of 1"),
        "{out}"
    );
    // Refused actions come back as dead letters with the reason.
    let issued = env.issued_for("f-1").await;
    let skip = OperatorAction::Skip {
        output: json!(null),
    };
    client.operate("f-1", &skip, &issued, "test").await.unwrap();
    let (reason, _) = env.get_dead_letter(&env.names.dlq_coordinator(), T).await;
    assert!(
        reason.contains("operator action `skip` refused"),
        "{reason}"
    );
    // The outage ends: the retry's refund succeeds.
    set_switch(&env.pool, REFUND_DOWN, false).await.unwrap();
    sagaflow_cli(
        &env,
        &["saga", "retry", "--status", "failed", "--id-prefix", "f-"],
    );
    env.wait_status("f-1", "compensated", T).await;
    let names: Vec<String> = env.effect_activities("f-1").await;
    assert_eq!(
        names,
        vec![
            "inventory.release",
            "inventory.reserve",
            "payments.charge",
            "payments.refund"
        ]
    );
    assert!(env
        .history("f-1")
        .await
        .contains(&"operator_action".to_string()));
    env.cleanup().await;
}
