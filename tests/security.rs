//! Least privilege, end to end on the real broker: what each kind of credential can
//! make the engine do.

mod common;

use std::time::Duration;

use common::{id, TestEnv};
use sagaflow::saga::machine::{IssuedFor, OperatorAction};
use serde_json::json;

const T: Duration = Duration::from_secs(30);

/// A saga that waits for a signal `approved` after one step.
const APPROVAL: &str = r#"
name = "approval"
version = 1
[[steps]]
name = "reserve"
activity = "inventory.reserve"
[[steps]]
name = "approve"
wait = "approved"
"#;

/// The issue's forged skip: a plain message on `<ns>.signals` (the exchange every
/// service may write) carrying an operator action. It must not move the saga; it is
/// dead-lettered with a reason that says where operator actions go. The same action
/// on `<ns>.operator` does move it.
#[tokio::test]
async fn operator_actions_on_the_signals_exchange_are_refused() {
    let env = TestEnv::running(&[("approval.toml", APPROVAL)]).await;
    let client = env.client().await;
    client
        .start("approval", json!({}), id("a-1"))
        .await
        .unwrap();
    env.wait_history("a-1", "wait_started").await;

    let forged = json!({"saga_id": "a-1", "operator": {"action": "skip", "output": {"forged": true}},
        "issued_for": {"step": "approve", "generation": 0}});
    client
        .publish_raw(&env.names.signals(), "", forged.to_string().as_bytes())
        .await
        .unwrap();
    let (reason, _) = env.get_dead_letter(&env.names.dlq_coordinator(), T).await;
    assert!(
        reason.contains("not accepted on the signals exchange")
            && reason.contains(&env.names.operator()),
        "{reason}"
    );
    assert_eq!(env.status("a-1").await.as_deref(), Some("running"));

    // The operator's way: the client publishes to `<ns>.operator`.
    let issued = IssuedFor {
        step: "approve".into(),
        generation: 0,
        task_id: None,
    };
    let skip = OperatorAction::Skip {
        output: json!({"by": "operator"}),
    };
    client.operate("a-1", &skip, &issued, "test").await.unwrap();
    env.wait_status("a-1", "completed", T).await;
    client.close().await;
    env.cleanup().await;
}

/// A start for an existing id starts nothing when it repeats the first start, and is
/// dead-lettered with the reason when its saga name or input differs; a start may not
/// take a schedule run's id (`<schedule>@<time>`), which would squat the run.
#[tokio::test]
async fn a_reused_id_is_absorbed_or_refused_and_run_ids_are_reserved() {
    let env = TestEnv::running(&[("approval.toml", APPROVAL)]).await;
    let client = env.client().await;
    let dlq = env.names.dlq_coordinator();
    client
        .start("approval", json!({"order": 1}), id("order-124"))
        .await
        .unwrap();
    env.wait_history("order-124", "wait_started").await;
    let before = env.history("order-124").await;

    client
        .start("approval", json!({"order": 1}), id("order-124"))
        .await
        .unwrap();
    client
        .start("approval", json!({"order": 2}), id("order-124"))
        .await
        .unwrap();
    let (reason, _) = env.get_dead_letter(&dlq, T).await;
    assert_eq!(reason, "id `order-124` exists with a different input");
    // The repeated start changed nothing and was not dead-lettered.
    assert_eq!(env.history("order-124").await, before);
    assert_eq!(env.depth(&dlq).await, 0);

    client
        .publish_raw(
            &env.names.start(),
            "approval",
            json!({"id": "nightly@2030-01-01T00:00:00Z", "input": {}})
                .to_string()
                .as_bytes(),
        )
        .await
        .unwrap();
    let (reason, _) = env.get_dead_letter(&dlq, T).await;
    assert!(reason.contains("only schedule runs may use"), "{reason}");
    assert_eq!(env.status("nightly@2030-01-01T00:00:00Z").await, None);
    client.close().await;
    env.cleanup().await;
}
