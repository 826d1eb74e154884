//! `for_each` end to end on the real RabbitMQ and Postgres, with the demo's
//! newsletter activities: one task per recipient, the recipient as the task's `item`;
//! the step's output is every send's output in recipient order; a send that fails
//! for good stops the fan-out and every e-mail sent is recalled, once.

mod common;

use std::time::Duration;

use common::{id, TestEnv};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(60);

const NEWS: &str = r#"
name = "news"
version = 1

[[steps]]
name = "send_each"
for_each = "input.recipients"
max_concurrency = 4
activity = "newsletter.send"
compensate = "newsletter.recall"
retry = { max_attempts = 2, initial_interval = "100ms" }

[[steps]]
name = "record"
activity = "newsletter.record"
"#;

/// (idempotency key, calls) of one saga's demo effects, by key.
async fn effects_by_key(env: &TestEnv, saga: &str) -> Vec<(String, i32)> {
    sqlx::query_as(
        "SELECT idempotency_key, calls FROM demo_effects WHERE saga_id = $1 ORDER BY idempotency_key",
    )
    .bind(saga)
    .fetch_all(&env.pool)
    .await
    .unwrap()
}

/// (status, rows) of one saga's element rows.
async fn element_rows(env: &TestEnv, saga: &str) -> Vec<(String, i64)> {
    sqlx::query_as(
        "SELECT status, count(*) FROM saga_elements WHERE saga_id = $1 GROUP BY status ORDER BY status",
    )
    .bind(saga)
    .fetch_all(&env.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn every_recipient_gets_one_task_and_the_output_keeps_their_order() {
    let env = TestEnv::running(&[("news.toml", NEWS)]).await;
    let recipients: Vec<String> = (0..30).map(|i| format!("r{i:02}@example.org")).collect();
    let input = json!({ "group": "climbers", "recipients": recipients });
    env.client()
        .await
        .start("news", input, id("n-ok"))
        .await
        .unwrap();
    env.wait_status("n-ok", "completed", T).await;
    let saga = sagaflow::store::sagas::get(&env.pool, "n-ok")
        .await
        .unwrap()
        .unwrap()
        .state;
    let out = saga.steps[0].output.clone().unwrap();
    let to: Vec<&str> = out
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["to"].as_str().unwrap())
        .collect();
    assert_eq!(to, recipients);
    assert_eq!(saga.steps[1].output.as_ref().unwrap()["delivered"], 30);
    let p = saga.steps[0].fan_out.as_ref().unwrap();
    assert_eq!((p.total, p.completed, p.failed), (30, 30, 0));
    assert!(saga.steps[0].elements.is_empty());
    // One effect per element (keyed by the element's idempotency key), applied once.
    let effects = effects_by_key(&env, "n-ok").await;
    let sends: Vec<_> = effects
        .iter()
        .filter(|(k, _)| k.contains("send_each["))
        .collect();
    assert_eq!(sends.len(), 30, "{effects:?}");
    assert!(effects.iter().all(|(_, calls)| *calls == 1), "{effects:?}");
    assert!(effects
        .iter()
        .any(|(k, _)| k == "n-ok:send_each[29]:action"));
    assert_eq!(
        element_rows(&env, "n-ok").await,
        vec![("completed".into(), 30)]
    );
    let h = env.history("n-ok").await;
    assert!(h.contains(&"for_each_started".to_string()), "{h:?}");
    env.cleanup().await;
}

#[tokio::test]
async fn a_send_that_fails_for_good_stops_the_fan_out_and_recalls_every_sent_email() {
    let env = TestEnv::running(&[("news.toml", NEWS)]).await;
    // Element 9 is in the reserved `.invalid` domain: the demo's send refuses it for
    // good (`bad_recipient`).
    let mut recipients: Vec<Value> = (0..20).map(|i| json!(format!("r{i}@x"))).collect();
    recipients[9] = json!("nobody@example.invalid");
    let input = json!({ "group": "climbers", "recipients": recipients });
    env.client()
        .await
        .start("news", input, id("n-bad"))
        .await
        .unwrap();
    env.wait_status("n-bad", "compensated", T).await;
    let saga = sagaflow::store::sagas::get(&env.pool, "n-bad")
        .await
        .unwrap()
        .unwrap()
        .state;
    let p = saga.steps[0].fan_out.clone().unwrap();
    assert_eq!(p.failed, 1, "{p:?}");
    assert!(p.started < 20, "no element starts after the failure: {p:?}");
    assert_eq!(p.compensated, p.completed, "{p:?}");
    assert_eq!(saga.error.as_ref().unwrap().code, "bad_recipient");
    let effects = effects_by_key(&env, "n-bad").await;
    assert!(effects.iter().all(|(_, calls)| *calls == 1), "{effects:?}");
    let sent: Vec<&str> = effects
        .iter()
        .filter_map(|(k, _)| k.strip_suffix(":action"))
        .collect();
    let recalled: Vec<&str> = effects
        .iter()
        .filter_map(|(k, _)| k.strip_suffix(":compensation"))
        .collect();
    assert_eq!(sent, recalled, "every sent e-mail recalled, none other");
    assert_eq!(sent.len() as u32, p.completed);
    assert!(!sent.contains(&"n-bad:send_each[9]"));
    assert_eq!(
        element_rows(&env, "n-bad").await,
        vec![("compensated".into(), i64::from(p.completed))]
    );
    env.cleanup().await;
}
