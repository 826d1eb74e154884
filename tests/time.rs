//! Time and events end to end: signals, waits, cancellation, activity timeouts, and a
//! coordinator restart while sleeps and waits are pending.

mod common;

use std::time::Duration;

use common::{id, TestEnv, ORDER};
use sagaflow::client::StartOptions;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);

const APPROVAL: &str = r#"
name = "approval"
version = 1
[defaults]
retry = { initial_interval = "100ms", max_attempts = 3 }
[[steps]]
name = "reserve"
activity = "inventory.reserve"
compensate = "inventory.release"
[[steps]]
name = "approve"
wait = "approved"
timeout = "30s"
[[steps]]
name = "ship"
activity = "shipping.ship"
"#;

fn short_wait(on_timeout: &str) -> String {
    APPROVAL.replace(
        "timeout = \"30s\"",
        &format!("timeout = \"500ms\"\non_timeout = \"{on_timeout}\""),
    )
}

async fn step_output(env: &TestEnv, saga: &str, step: usize) -> Option<Value> {
    sagaflow::store::sagas::get(&env.pool, saga)
        .await
        .unwrap()
        .unwrap()
        .state
        .steps[step]
        .output
        .clone()
}

#[tokio::test]
async fn signals_before_and_during_a_wait_are_delivered_with_their_payload() {
    let mut env = TestEnv::new(&[("approval.toml", APPROVAL)]).await;
    env.start_coordinator().await;
    let client = env.client().await;
    // Early: the signal arrives before the saga reaches its wait step.
    client
        .start("approval", json!({}), id("early"))
        .await
        .unwrap();
    client
        .signal("early", "approved", json!({"by": "ann"}))
        .await
        .unwrap();
    // Without a worker the saga is still on its first step, so the signal is buffered.
    env.start_worker().await;
    env.wait_status("early", "completed", T).await;
    assert_eq!(
        step_output(&env, "early", 1).await,
        Some(json!({"by": "ann"}))
    );
    assert!(env
        .history("early")
        .await
        .contains(&"signal_buffered".to_string()));

    client
        .start("approval", json!({}), id("late"))
        .await
        .unwrap();
    env.wait_history("late", "wait_started").await;
    client
        .signal("late", "approved", json!({"by": "bob"}))
        .await
        .unwrap();
    env.wait_status("late", "completed", T).await;
    assert_eq!(
        step_output(&env, "late", 1).await,
        Some(json!({"by": "bob"}))
    );
    env.cleanup().await;
}

#[tokio::test]
async fn wait_timeouts_fail_or_continue() {
    let fail = short_wait("fail");
    let cont = short_wait("continue").replace("name = \"approval\"", "name = \"approval_lenient\"");
    let env = TestEnv::running(&[("a.toml", fail.as_str()), ("b.toml", cont.as_str())]).await;
    let client = env.client().await;
    client
        .start("approval", json!({}), id("strict"))
        .await
        .unwrap();
    client
        .start("approval_lenient", json!({}), id("lenient"))
        .await
        .unwrap();
    env.wait_status("strict", "compensated", T).await;
    env.wait_status("lenient", "completed", T).await;
    let names: Vec<String> = env.effect_activities("strict").await;
    assert_eq!(names, vec!["inventory.release", "inventory.reserve"]);
    assert!(env
        .history("lenient")
        .await
        .contains(&"wait_timed_out".to_string()));
    env.cleanup().await;
}

const NAPPING: &str = r#"
name = "napping"
version = 1
[[steps]]
name = "reserve"
activity = "inventory.reserve"
compensate = "inventory.release"
[[steps]]
name = "nap"
sleep = "1h"
[[steps]]
name = "ship"
activity = "shipping.ship"
"#;

#[tokio::test]
async fn cancel_stops_sleeping_waiting_and_scheduled_sagas_and_undoes_their_steps() {
    let env = TestEnv::running(&[("napping.toml", NAPPING), ("approval.toml", APPROVAL)]).await;
    let client = env.client().await;
    client
        .start("napping", json!({}), id("asleep"))
        .await
        .unwrap();
    client
        .start("approval", json!({}), id("waiting"))
        .await
        .unwrap();
    let later = StartOptions {
        id: Some("not-yet".into()),
        delay: Some("1h".into()),
        ..Default::default()
    };
    client.start("napping", json!({}), later).await.unwrap();
    for (saga, event) in [
        ("asleep", "sleep_started"),
        ("waiting", "wait_started"),
        ("not-yet", "saga_scheduled"),
    ] {
        env.wait_history(saga, event).await;
        client.cancel(saga, "test").await.unwrap();
    }
    for saga in ["asleep", "waiting", "not-yet"] {
        env.wait_status(saga, "cancelled", T).await;
    }
    for saga in ["asleep", "waiting"] {
        let names: Vec<String> = env.effect_activities(saga).await;
        assert_eq!(
            names,
            vec!["inventory.release", "inventory.reserve"],
            "{saga}"
        );
    }
    assert!(env.effects("not-yet").await.is_empty());
    env.cleanup().await;
}

fn order_with(extra: &str) -> String {
    ORDER.replace(
        "[[steps]]\nname = \"ship_order\"\nactivity = \"shipping.ship\"",
        &format!("[[steps]]\nname = \"ship_order\"\nactivity = \"shipping.ship\"\n{extra}"),
    )
}

#[tokio::test]
async fn start_to_close_is_enforced_by_the_worker_and_the_step_retried() {
    let def = order_with("start_to_close = \"300ms\"");
    let env = TestEnv::running(&[("order.toml", def.as_str())]).await;
    let input = json!({"slow": {"shipping.ship": {"ms": 5000, "times": 1}}});
    env.client()
        .await
        .start("order_fulfillment", input, id("stc"))
        .await
        .unwrap();
    env.wait_status("stc", "completed", T).await;
    let rows = sagaflow::store::history::all(&env.pool, "stc")
        .await
        .unwrap();
    let failed = rows
        .iter()
        .find(|h| h.event == "attempt_failed")
        .expect("attempt 1 failed");
    assert_eq!(failed.detail["error"]["code"], "timeout.start_to_close");
    env.cleanup().await;
}

#[tokio::test]
async fn heartbeat_timeout_is_enforced_by_the_coordinator_and_heartbeats_keep_attempts_alive() {
    let def = order_with("start_to_close = \"20s\"\nheartbeat = \"500ms\"");
    let env = TestEnv::running(&[("order.toml", def.as_str())]).await;
    let client = env.client().await;
    // Silent for 3 s on attempt 1: the coordinator times it out after 500 ms.
    client
        .start(
            "order_fulfillment",
            json!({"slow": {"shipping.ship": {"ms": 3000, "times": 1}}}),
            id("silent"),
        )
        .await
        .unwrap();
    // Busy for 1.5 s but heartbeating: no timeout.
    client
        .start(
            "order_fulfillment",
            json!({"slow": {"shipping.ship": {"ms": 1500, "times": 1, "heartbeat": true}}}),
            id("alive"),
        )
        .await
        .unwrap();
    env.wait_status("silent", "completed", T).await;
    env.wait_status("alive", "completed", T).await;
    let rows = sagaflow::store::history::all(&env.pool, "silent")
        .await
        .unwrap();
    let timed_out = rows
        .iter()
        .find(|h| h.event == "attempt_timed_out")
        .expect("timed out");
    assert_eq!(timed_out.detail["timeout"], "heartbeat");
    assert_eq!(timed_out.attempt, Some(1));
    let alive = env.history("alive").await;
    assert!(
        !alive.contains(&"attempt_timed_out".to_string()),
        "{alive:?}"
    );
    assert!(alive.contains(&"attempt_started".to_string()));
    env.cleanup().await;
}

const GHOST: &str = r#"
name = "ghost"
version = 1
[[steps]]
name = "reserve"
activity = "inventory.reserve"
compensate = "inventory.release"
[[steps]]
name = "haunt"
activity = "ghost.work"
schedule_to_start = "300ms"
retry = { initial_interval = "100ms", max_attempts = 2 }
"#;

#[tokio::test]
async fn schedule_to_start_holds_when_no_worker_takes_the_task() {
    let mut env = TestEnv::new(&[("ghost.toml", GHOST)]).await;
    env.start_coordinator().await;
    env.start_worker().await; // hosts inventory.*, not ghost.work
    env.client()
        .await
        .start("ghost", json!({}), id("boo"))
        .await
        .unwrap();
    env.wait_status("boo", "compensated", T).await;
    let rows = sagaflow::store::history::all(&env.pool, "boo")
        .await
        .unwrap();
    let timeouts: Vec<&Value> = rows
        .iter()
        .filter(|h| h.event == "attempt_timed_out")
        .map(|h| &h.detail["timeout"])
        .collect();
    assert_eq!(
        timeouts,
        vec![&json!("schedule_to_start"), &json!("schedule_to_start")]
    );
    env.cleanup().await;
}

const SHORT_NAP: &str = r#"
name = "short_nap"
version = 1
[[steps]]
name = "reserve"
activity = "inventory.reserve"
[[steps]]
name = "nap"
sleep = "1s"
[[steps]]
name = "ship"
activity = "shipping.ship"
"#;

#[tokio::test]
async fn pending_sleeps_waits_and_signals_survive_a_coordinator_restart() {
    let mut env = TestEnv::running(&[("nap.toml", SHORT_NAP), ("approval.toml", APPROVAL)]).await;
    let client = env.client().await;
    client
        .start("short_nap", json!({}), id("nap"))
        .await
        .unwrap();
    client
        .start("approval", json!({}), id("wait"))
        .await
        .unwrap();
    let delayed = StartOptions {
        id: Some("delayed".into()),
        delay: Some("1s".into()),
        ..Default::default()
    };
    client.start("short_nap", json!({}), delayed).await.unwrap();
    for (saga, event) in [
        ("nap", "sleep_started"),
        ("wait", "wait_started"),
        ("delayed", "saga_scheduled"),
    ] {
        env.wait_history(saga, event).await;
    }
    env.stop("coordinator").await;
    // While no coordinator runs: the sleep and the delayed start fall due, a signal arrives.
    client
        .signal("wait", "approved", json!({"by": "night shift"}))
        .await
        .unwrap();
    env.start_coordinator().await;
    for saga in ["nap", "wait", "delayed"] {
        env.wait_status(saga, "completed", T).await;
    }
    assert_eq!(
        step_output(&env, "wait", 1).await,
        Some(json!({"by": "night shift"}))
    );
    env.cleanup().await;
}
