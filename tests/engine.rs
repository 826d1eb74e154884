//! End-to-end behaviour of the engine against the real RabbitMQ and Postgres.

mod common;

use std::time::Duration;

use common::{id, next_event, TestEnv, ORDER};
use sagaflow::client::StartOptions;
use serde_json::json;

const T: Duration = Duration::from_secs(30);

#[tokio::test]
async fn order_completes_and_announces_it() {
    let mut env = TestEnv::new(&[("order.toml", ORDER)]).await;
    let (_c, mut events) = env.subscribe_events().await;
    env.start_coordinator().await;
    env.start_worker().await;
    let client = env.client().await;
    client
        .start("order_fulfillment", json!({"order_id": 1}), id("o-1"))
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut events, T).await,
        ("o-1".to_string(), "completed".to_string())
    );
    let effects = env.effects("o-1").await;
    assert_eq!(
        effects,
        vec![
            ("inventory.reserve".into(), 1),
            ("payments.charge".into(), 1),
            ("shipping.ship".into(), 1)
        ]
    );
    let h = env.history("o-1").await;
    assert_eq!(h.first().map(String::as_str), Some("saga_started"));
    assert_eq!(h.last().map(String::as_str), Some("saga_completed"));
    assert_eq!(h.iter().filter(|e| *e == "step_completed").count(), 3);
    env.cleanup().await;
}

#[tokio::test]
async fn retries_then_completes_with_each_attempt_in_history() {
    let env = TestEnv::running(&[("order.toml", ORDER)]).await;
    let input = json!({"fail": {"payments.charge": {"code": "gateway_timeout", "times": 2}}});
    env.client()
        .await
        .start("order_fulfillment", input, id("o-r"))
        .await
        .unwrap();
    env.wait_status("o-r", "completed", T).await;
    let h = env.history("o-r").await;
    assert_eq!(
        h.iter().filter(|e| *e == "attempt_failed").count(),
        2,
        "{h:?}"
    );
    assert_eq!(
        h.iter().filter(|e| *e == "retry_scheduled").count(),
        2,
        "{h:?}"
    );
    let saga = sagaflow::store::sagas::get(&env.pool, "o-r")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(saga.state.steps[1].attempts, 3);
    env.cleanup().await;
}

/// The delay levels of the definitions' retry policies exist once the coordinator is
/// up, before any retry: a queue created under load could be caught by a broker
/// crash before its first Raft entry (docs/faults.md, `rabbitmq_kill9`).
#[tokio::test]
async fn coordinator_declares_its_retry_delay_levels_at_start() {
    let env = TestEnv::running(&[("order.toml", ORDER)]).await;
    let names = sagaflow::broker::Names::new(&env.settings.namespace);
    let conn = env.connect().await;
    // ORDER retries after 200, 400, 800 and 1600 ms (compensations longer): levels
    // 200, 450, 700 and 1500 among others; no wait of its rounds to 100 ms.
    for ms in [200, 450, 700, 1500] {
        assert_eq!(
            common::queue_depth(&conn, &names.delay(ms)).await,
            Some(0),
            "delay level {ms} declared at start"
        );
    }
    assert_eq!(common::queue_depth(&conn, &names.delay(100)).await, None);
    env.cleanup().await;
}

#[tokio::test]
async fn permanent_failure_compensates_in_reverse() {
    let env = TestEnv::running(&[("order.toml", ORDER)]).await;
    let input = json!({"fail": {"shipping.ship": {"code": "carrier_down", "retryable": false}}});
    env.client()
        .await
        .start("order_fulfillment", input, id("o-c"))
        .await
        .unwrap();
    env.wait_status("o-c", "compensated", T).await;
    let names: Vec<String> = env.effect_activities("o-c").await;
    assert_eq!(
        names,
        vec![
            "inventory.release",
            "inventory.reserve",
            "payments.charge",
            "payments.refund"
        ]
    );
    let h = env.history("o-c").await;
    let refund = h
        .iter()
        .position(|e| e == "compensation_completed")
        .unwrap();
    assert!(
        h[refund + 1..]
            .iter()
            .any(|e| e == "compensation_completed"),
        "two compensations in order: {h:?}"
    );
    // Reverse order: the refund's effect row was created before the release's.
    let order: Vec<String> = sqlx::query_scalar("SELECT activity FROM demo_effects WHERE saga_id = 'o-c' AND activity IN ('payments.refund','inventory.release') ORDER BY created_at")
        .fetch_all(&env.pool)
        .await
        .unwrap();
    assert_eq!(order, vec!["payments.refund", "inventory.release"]);
    env.cleanup().await;
}

#[tokio::test]
async fn non_retryable_code_and_failed_compensation_end_failed() {
    let env = TestEnv::running(&[("order.toml", ORDER)]).await;
    let client = env.client().await;
    let declined = json!({"fail": {"payments.charge": {"code": "card_declined"}}});
    client
        .start("order_fulfillment", declined, id("o-d"))
        .await
        .unwrap();
    let stuck = json!({"fail": {"shipping.ship": {"retryable": false}, "payments.refund": {"retryable": false}}});
    client
        .start("order_fulfillment", stuck, id("o-f"))
        .await
        .unwrap();
    env.wait_status("o-d", "compensated", T).await;
    env.wait_status("o-f", "failed", T).await;
    // card_declined is listed as non-retryable: one attempt only.
    let h = env.history("o-d").await;
    assert_eq!(
        h.iter().filter(|e| *e == "attempt_failed").count(),
        1,
        "{h:?}"
    );
    assert!(!h.contains(&"compensation_failed".to_string()));
    assert!(env
        .history("o-f")
        .await
        .contains(&"compensation_failed".to_string()));
    env.cleanup().await;
}

#[tokio::test]
async fn second_start_with_same_id_starts_nothing() {
    let env = TestEnv::running(&[("order.toml", ORDER)]).await;
    let client = env.client().await;
    client
        .start("order_fulfillment", json!({"n": 1}), id("dup"))
        .await
        .unwrap();
    env.wait_status("dup", "completed", T).await;
    client
        .start("order_fulfillment", json!({"n": 2}), id("dup"))
        .await
        .unwrap();
    // A later saga proves the duplicate start was consumed before we look.
    client
        .start("order_fulfillment", json!({}), id("after"))
        .await
        .unwrap();
    env.wait_status("after", "completed", T).await;
    let h = env.history("dup").await;
    assert_eq!(h.iter().filter(|e| *e == "saga_started").count(), 1);
    let saga = sagaflow::store::sagas::get(&env.pool, "dup")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(saga.state.input, json!({"n": 1}));
    env.cleanup().await;
}

#[tokio::test]
async fn malformed_and_unknown_starts_are_dead_lettered_with_a_reason() {
    let mut env = TestEnv::new(&[("order.toml", ORDER)]).await;
    let health = env.start_coordinator().await;
    let client = env.client().await;
    let dlq = env.names.dlq_coordinator();
    client
        .publish_raw(&env.names.start(), "order_fulfillment", b"{not json")
        .await
        .unwrap();
    let (reason, body) = env.get_dead_letter(&dlq, T).await;
    assert!(reason.contains("start body"), "{reason}");
    assert_eq!(body, b"{not json");
    client
        .start("no_such_saga", json!({}), id("x"))
        .await
        .unwrap();
    let (reason, _) = env.get_dead_letter(&dlq, T).await;
    assert!(reason.contains("unknown saga `no_such_saga`"), "{reason}");
    client
        .publish_raw(&env.names.results(), "coordinator", br#"{"task_id": 1}"#)
        .await
        .unwrap();
    let (reason, _) = env.get_dead_letter(&dlq, T).await;
    assert!(reason.contains("result body"), "{reason}");
    assert!(env.status("x").await.is_none());
    let unloaded = sagaflow::client::StartOptions {
        version: Some(7),
        ..id("v7")
    };
    client
        .start("order_fulfillment", json!({}), unloaded)
        .await
        .unwrap();
    let (reason, _) = env.get_dead_letter(&dlq, T).await;
    assert!(reason.contains("version 7"), "{reason}");
    // Handing an input back and acking the rest named every delivery tag once: the
    // channel was never closed for an unknown tag (each close would be a reconnect).
    assert_eq!(health.report().reconnects, 0, "{:?}", health.report());
    env.cleanup().await;
}

#[tokio::test]
async fn poison_task_is_dead_lettered_by_the_worker() {
    let env = TestEnv::running(&[("order.toml", ORDER)]).await;
    let client = env.client().await;
    client
        .publish_raw(&env.names.tasks(), "payments.charge", b"garbage")
        .await
        .unwrap();
    let (reason, body) = env
        .get_dead_letter(&env.names.dlq("payments.charge"), T)
        .await;
    assert!(reason.contains("task body"), "{reason}");
    assert_eq!(body, b"garbage");
    // The worker is still serving.
    client
        .start("order_fulfillment", json!({}), id("still"))
        .await
        .unwrap();
    env.wait_status("still", "completed", T).await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_task_delivered_twice_runs_its_handler_once() {
    let env = TestEnv::running(&[("order.toml", ORDER)]).await;
    env.client()
        .await
        .start("order_fulfillment", json!({}), id("once"))
        .await
        .unwrap();
    env.wait_status("once", "completed", T).await;
    // Re-send the first task exactly as the coordinator did (a sweeper republish).
    let saga = sagaflow::store::sagas::get(&env.pool, "once")
        .await
        .unwrap()
        .unwrap();
    let task = json!({
        "task_id": "once:reserve_inventory:action#1", "saga_id": "once", "saga": "order_fulfillment",
        "step": "reserve_inventory", "activity": "inventory.reserve", "kind": "action", "attempt": 1,
        "max_attempts": 5, "idempotency_key": "once:reserve_inventory:action",
        "input": {"saga": saga.state.input, "steps": {}}, "reply_to": "coordinator",
        "scheduled_at": "2026-01-01T00:00:00Z", "deadlines": {"start_to_close_ms": 30000}
    });
    let (_c, mut events) = env.subscribe_events().await;
    let client = env.client().await;
    client
        .publish_raw(
            &env.names.tasks(),
            "inventory.reserve",
            task.to_string().as_bytes(),
        )
        .await
        .unwrap();
    // Then a fresh saga: when it completes, the duplicate (queued before it) was handled.
    client
        .start("order_fulfillment", json!({}), id("later"))
        .await
        .unwrap();
    assert_eq!(next_event(&mut events, T).await.0, "later");
    assert!(
        env.effects("once")
            .await
            .iter()
            .all(|(_, calls)| *calls == 1),
        "{:?}",
        env.effects("once").await
    );
    assert_eq!(env.status("once").await.as_deref(), Some("completed"));
    env.cleanup().await;
}

#[tokio::test]
async fn task_queue_dead_letters_after_the_delivery_limit() {
    use futures_util::StreamExt;
    use lapin::options::{BasicConsumeOptions, BasicNackOptions};
    let mut env = TestEnv::new(&[("order.toml", ORDER)]).await;
    env.start_coordinator().await; // declares the queues; no worker runs
    let client = env.client().await;
    client
        .publish_raw(&env.names.tasks(), "shipping.ship", b"{\"hot\": 1}")
        .await
        .unwrap();
    let conn = env.raw_connect().await;
    let ch = conn.create_channel().await.unwrap();
    let q = env.names.task_queue("shipping.ship");
    let mut c = ch
        .basic_consume(
            q.as_str().into(),
            "nacker".into(),
            BasicConsumeOptions::default(),
            Default::default(),
        )
        .await
        .unwrap();
    let limit = env.settings.queues.delivery_limit;
    for _ in 0..=limit {
        let d = tokio::time::timeout(T, c.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        d.nack(BasicNackOptions {
            multiple: false,
            requeue: true,
        })
        .await
        .unwrap();
    }
    let (reason, _) = env
        .get_dead_letter(&env.names.dlq("shipping.ship"), T)
        .await;
    assert!(reason.contains("delivery_limit"), "{reason}");
    env.cleanup().await;
}

#[tokio::test]
async fn two_coordinators_share_the_work_safely() {
    let mut env = TestEnv::new(&[("order.toml", ORDER)]).await;
    let first = env.start_coordinator().await;
    let second = env.start_coordinator().await;
    env.start_worker().await;
    let client = env.client().await;
    let mut ids = vec![];
    let mut starts = vec![];
    for i in 0..150 {
        let sid = format!("two-{i}");
        let input = if i % 3 == 0 {
            json!({"fail": {"shipping.ship": {"retryable": false}}})
        } else {
            json!({})
        };
        starts.push(("order_fulfillment".to_string(), input, id(&sid)));
        ids.push(sid);
    }
    client.start_many(&starts).await.unwrap();
    // The same starts again: must start nothing new.
    client.start_many(&starts).await.unwrap();
    let done = env.wait_terminal(&ids, Duration::from_secs(90)).await;
    for (i, sid) in ids.iter().enumerate() {
        let want = if i % 3 == 0 {
            "compensated"
        } else {
            "completed"
        };
        assert_eq!(done[sid], want, "{sid}");
    }
    let twice: i64 = sqlx::query_scalar("SELECT count(*) FROM (SELECT saga_id FROM saga_history WHERE event = 'saga_started' GROUP BY saga_id HAVING count(*) > 1) d")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(twice, 0);
    let replays: i64 = sqlx::query_scalar("SELECT count(*) FROM demo_effects WHERE calls > 1")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(replays, 0, "no handler ran twice for one key");
    // Each coordinator applies results from the states it committed last, and a saga
    // the other one moved on meanwhile is redone under lock: no step completes twice.
    let again: i64 = sqlx::query_scalar("SELECT count(*) FROM (SELECT 1 FROM saga_history WHERE event = 'step_completed' GROUP BY saga_id, step HAVING count(*) > 1) d")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(again, 0, "no step completed twice");
    let inputs = |path: &str| -> u64 {
        [&first, &second]
            .iter()
            .map(|h| {
                common::metric(
                    &h.metrics(),
                    &format!("sagaflow_coordinator_inputs_total{{path=\"{path}\"}}"),
                )
            })
            .sum()
    };
    assert!(
        inputs("cached") > 0,
        "results were applied from cached states"
    );
    assert!(inputs("locked") >= 300, "every start (and repeat) locks");
    env.cleanup().await;
}

const NAP: &str = r#"
name = "nap"
version = 1
[[steps]]
name = "reserve"
activity = "inventory.reserve"
compensate = "inventory.release"
[[steps]]
name = "cool_off"
sleep = "1s"
[[steps]]
name = "ship"
activity = "shipping.ship"
"#;

#[tokio::test]
async fn sleep_steps_and_delayed_starts_fire_from_postgres() {
    let env = TestEnv::running(&[("nap.toml", NAP)]).await;
    let client = env.client().await;
    client.start("nap", json!({}), id("nap-1")).await.unwrap();
    let delayed = StartOptions {
        id: Some("nap-2".into()),
        delay: Some("1s".into()),
        ..Default::default()
    };
    client.start("nap", json!({}), delayed).await.unwrap();
    env.wait_status("nap-2", "scheduled", T).await;
    env.wait_status("nap-1", "completed", T).await;
    env.wait_status("nap-2", "completed", T).await;
    let h = env.history("nap-1").await;
    assert!(
        h.contains(&"sleep_started".to_string()) && h.contains(&"sleep_completed".to_string()),
        "{h:?}"
    );
    assert_eq!(
        env.history("nap-2").await.first().map(String::as_str),
        Some("saga_scheduled")
    );
    env.cleanup().await;
}
