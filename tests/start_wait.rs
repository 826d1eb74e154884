//! `sagaflow sagas start --wait`: the outcome of a saga as a command's output and
//! exit code.

mod common;

use common::{TestEnv, ORDER};
use serde_json::json;
use serde_json::Value;

const APPROVAL: &str = r#"
name = "approval"
version = 1
[[steps]]
name = "approve"
wait = "approved"
"#;

/// Runs `sagaflow sagas start --wait …`; returns the exit code and the JSON printed.
/// Asynchronously: the coordinator and worker run on this test's runtime, and a
/// blocking wait for the child would stop them.
async fn start_wait(env: &TestEnv, args: &[&str]) -> (i32, Value) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sagaflow"))
        .args(["sagas", "start", "--wait"])
        .args(args)
        .envs(env.child_env())
        .output()
        .await
        .expect("sagaflow runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?}: not JSON ({e}): {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), json)
}

#[tokio::test]
async fn the_outcome_is_printed_with_an_exit_code_per_status() {
    let env = TestEnv::running(&[
        ("order_fulfillment.toml", ORDER),
        ("approval.toml", APPROVAL),
    ])
    .await;
    let (code, v) = start_wait(
        &env,
        &["order_fulfillment", "--id", "w-ok", "--input", "{}"],
    )
    .await;
    assert_eq!((code, v["status"].as_str()), (0, Some("completed")), "{v}");
    assert!(!v["output"].is_null(), "the last step's output: {v}");

    let declined = r#"{"fail": {"payments.charge": {"code": "card_declined"}}}"#;
    let (code, v) = start_wait(
        &env,
        &["order_fulfillment", "--id", "w-no", "--input", declined],
    )
    .await;
    assert_eq!(
        (code, v["status"].as_str()),
        (4, Some("compensated")),
        "{v}"
    );
    assert_eq!(v["error"]["code"], "card_declined", "{v}");

    // Still waiting for its signal when the wait runs out: exit 7, the saga goes on.
    let (code, v) = start_wait(&env, &["approval", "--id", "w-wait", "--timeout", "300ms"]).await;
    assert_eq!((code, v["status"].as_str()), (7, Some("running")), "{v}");
    assert_eq!(env.status("w-wait").await.as_deref(), Some("running"));

    // A repeated start of a saga that already ended answers at once with its outcome.
    let (code, v) = start_wait(
        &env,
        &[
            "order_fulfillment",
            "--id",
            "w-ok",
            "--input",
            "{}",
            "--timeout",
            "1ms",
        ],
    )
    .await;
    assert_eq!((code, v["status"].as_str()), (0, Some("completed")), "{v}");
    env.cleanup().await;
}

/// `POST /api/sagas?wait=…`: 200 with the outcome once the saga ended, 202 with the id
/// when it had not within the wait.
#[tokio::test]
async fn the_api_answers_with_the_outcome_or_202() {
    let env = TestEnv::running(&[
        ("order_fulfillment.toml", ORDER),
        ("approval.toml", APPROVAL),
    ])
    .await;
    let stop = tokio_util::sync::CancellationToken::new();
    let base = format!(
        "{}/api/sagas",
        common::serve_api(&env, &env.settings, &stop).await
    );
    let http = reqwest::Client::new();
    let post = |wait: &str, body: Value| {
        http.post(format!("{base}?wait={wait}"))
            .header("x-sagaflow-request", "1")
            .json(&body)
            .send()
    };
    let r = post("30s", json!({"saga": "order_fulfillment", "id": "h-ok"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "completed", "{v}");
    assert!(!v["output"].is_null(), "{v}");
    let declined = json!({"fail": {"payments.charge": {"code": "card_declined"}}});
    let r = post(
        "30s",
        json!({"saga": "order_fulfillment", "id": "h-no", "input": declined}),
    )
    .await
    .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "compensated", "{v}");
    assert_eq!(v["error"]["code"], "card_declined", "{v}");
    let r = post("300ms", json!({"saga": "approval", "id": "h-wait"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v, json!({"id": "h-wait"}));
    stop.cancel();
    env.cleanup().await;
}

/// Signal-with-start on the broker: the first call starts the saga and delivers the
/// signal its wait step needs, so it completes; a second call for the same id only
/// signals (no second saga, no refusal for its other input).
#[tokio::test]
async fn a_signal_with_start_starts_and_signals_in_one_go() {
    let env = TestEnv::running(&[("approval.toml", common::APPROVAL)]).await;
    let client = env.client().await;
    client
        .signal_with_start(
            "approval",
            json!({"n": 1}),
            common::id("sws-1"),
            "approved",
            json!({"by": "ann"}),
        )
        .await
        .unwrap();
    env.wait_status("sws-1", "completed", std::time::Duration::from_secs(30))
        .await;
    client
        .signal_with_start(
            "approval",
            json!({"n": 2}),
            common::id("sws-1"),
            "approved",
            json!({}),
        )
        .await
        .unwrap();
    env.wait_history("sws-1", "signal_buffered").await;
    assert_eq!(env.depth(&env.names.dlq_coordinator()).await, 0);
    client.close().await;
    env.cleanup().await;
}
