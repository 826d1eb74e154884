//! Least privilege, end to end on the real broker: what each kind of credential can
//! make the engine do.

mod common;

use std::time::Duration;

use common::{id, TestEnv, APPROVAL};
use sagaflow::saga::machine::{IssuedFor, OperatorAction};
use serde_json::json;

const T: Duration = Duration::from_secs(30);

/// The forged skip: a plain message on `<ns>.signals` (the exchange every
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

/// The same rules over HTTP: `POST /api/sagas` answers 200 (nothing started) for a
/// repeated start, `409 id_conflict` for a different input, `400` for a run id.
#[tokio::test]
async fn http_starts_answer_a_reused_id_with_200_or_409() {
    let env = TestEnv::running(&[("approval.toml", APPROVAL)]).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let base = format!(
        "{}/api/sagas",
        common::serve_api(&env, &env.settings, &stop).await
    );
    let http = reqwest::Client::new();
    let post = |body: serde_json::Value| {
        http.post(&base)
            .header("x-sagaflow-request", "1")
            .json(&body)
            .send()
    };
    let first = json!({"saga": "approval", "id": "h-1", "input": {"order": 1}});
    assert_eq!(post(first.clone()).await.unwrap().status(), 202);
    env.wait_history("h-1", "wait_started").await;
    assert_eq!(post(first).await.unwrap().status(), 200);
    let r = post(json!({"saga": "approval", "id": "h-1", "input": {"order": 2}}))
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "id_conflict", "{body}");
    let r = post(json!({"saga": "approval", "id": "nightly@2030-01-01T00:00:00Z"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    stop.cancel();
    env.cleanup().await;
}
