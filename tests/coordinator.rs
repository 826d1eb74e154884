//! The coordinator's batches against Postgres alone (no broker): inputs and wake-up
//! scans run through `coordinator::batch` with an injected `now`, and the tests read
//! back the stored state, the history and the outbox. No clock is waited on: a sleep
//! or a timeout "passes" because the next scan is told a later `now`.

mod common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::{TestEnv, ORDER};
use sagaflow::coordinator::batch::{self, Committed};
use sagaflow::coordinator::input::Input;
use sagaflow::coordinator::state_cache::StateCache;
use sagaflow::messages::{Outcome, ResultMessage, TaskMessage};
use sagaflow::saga::state::{SagaState, SagaStatus, StepStatus};
use sagaflow::store::sagas::Fence;
use serde_json::{json, Value};

/// The lease a batch claims its outbox rows for.
const LEASE: Duration = Duration::from_secs(10);

/// A ten-second nap, then a reserve.
const NAP: &str = r#"
name = "nap"
version = 1
[[steps]]
name = "rest"
sleep = "10s"
[[steps]]
name = "reserve"
activity = "inventory.reserve"
"#;

/// A charge that must be picked up within 5 s, one attempt only.
const PROMPT: &str = r#"
name = "prompt"
version = 1
[[steps]]
name = "charge"
activity = "payments.charge"
schedule_to_start = "5s"
retry = { max_attempts = 1 }
"#;

async fn env() -> TestEnv {
    TestEnv::database_only(&[
        ("order.toml", ORDER),
        ("nap.toml", NAP),
        ("prompt.toml", PROMPT),
    ])
    .await
}

/// The injected clock: a fixed instant far from the wall clock, plus `secs`.
fn at(secs: i64) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2031-03-01T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
        + chrono::Duration::seconds(secs)
}

fn start(saga: &str, id: &str) -> Input {
    Input::Start {
        saga: saga.into(),
        id: id.into(),
        version: None,
        input: json!({"order_id": 7}),
        run_at: None,
        signal: None,
        parent: None,
        traceparent: None,
    }
}

fn ok(task: &TaskMessage, output: Value) -> Input {
    Input::Result(ResultMessage {
        task_id: task.task_id.clone(),
        saga_id: task.saga_id.clone(),
        attempt: Some(task.attempt),
        outcome: Outcome::Ok,
        output: Some(output),
        error: None,
        details: None,
    })
}

/// One batch of `inputs` at `now`.
async fn run(env: &TestEnv, inputs: Vec<Input>, now: DateTime<Utc>) -> Committed {
    let inputs = inputs.into_iter().enumerate().collect();
    batch::run_inputs(&env.pool, &env.names, &env.catalog, inputs, LEASE, now)
        .await
        .unwrap()
}

/// One wake-up scan at `now`: how many sagas were due, and what it committed.
async fn wake(env: &TestEnv, now: DateTime<Utc>) -> (usize, Committed) {
    batch::run_wakeups(&env.pool, &env.names, &env.catalog, 100, LEASE, now)
        .await
        .unwrap()
}

/// The tasks a batch put in the outbox, in order (events are the rows not mandatory).
fn tasks(c: &Committed) -> Vec<TaskMessage> {
    c.outbox
        .iter()
        .filter(|r| r.message.mandatory)
        .map(|r| serde_json::from_slice(&r.message.body).expect("a task"))
        .collect()
}

async fn state(env: &TestEnv, id: &str) -> SagaState {
    sagaflow::store::sagas::get(&env.pool, id)
        .await
        .unwrap()
        .expect("the saga is stored")
        .state
}

/// (event, at) of a saga's history.
async fn history(env: &TestEnv, id: &str) -> Vec<(String, DateTime<Utc>)> {
    sagaflow::store::history::all(&env.pool, id)
        .await
        .unwrap()
        .into_iter()
        .map(|h| (h.event, h.at))
        .collect()
}

/// The stored `wake_at` column.
async fn wake_at(env: &TestEnv, id: &str) -> Option<DateTime<Utc>> {
    sqlx::query_scalar("SELECT wake_at FROM sagas WHERE id = $1")
        .bind(id)
        .fetch_one(&env.pool)
        .await
        .unwrap()
}

/// (exchange, routing key) of every outbox row, oldest first.
async fn outbox(env: &TestEnv) -> Vec<(String, String)> {
    sqlx::query_as("SELECT exchange, routing_key FROM outbox ORDER BY id")
        .fetch_all(&env.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_start_stores_the_saga_and_one_dispatch_in_the_outbox() {
    let env = env().await;
    let c = run(&env, vec![start("order_fulfillment", "o-1")], at(0)).await;
    assert!(c.rejected.is_empty() && c.unhandled.is_empty(), "{c:?}");
    let sent = tasks(&c);
    assert_eq!(sent.len(), 1, "{c:?}");
    let task = &sent[0];
    assert_eq!(
        (task.saga_id.as_str(), task.activity.as_str(), task.attempt),
        ("o-1", "inventory.reserve", 1)
    );
    assert_eq!(task.scheduled_at, at(0), "stamped with the injected now");
    assert_eq!(task.input["saga"], json!({"order_id": 7}));
    assert_eq!(
        outbox(&env).await,
        [(env.names.tasks(), "inventory.reserve".to_string())]
    );

    let s = state(&env, "o-1").await;
    assert_eq!((s.status, s.cursor), (SagaStatus::Running, 0));
    assert_eq!(s.steps[0].status, StepStatus::Running);
    let h = history(&env, "o-1").await;
    assert_eq!(h[0].0, "saga_started");
    assert!(h.iter().all(|(_, t)| *t == at(0)), "{h:?}");

    // The same start again (a redelivery) starts nothing and sends nothing.
    let again = run(&env, vec![start("order_fulfillment", "o-1")], at(1)).await;
    assert!(again.outbox.is_empty(), "{again:?}");
    assert_eq!(history(&env, "o-1").await, h);
    assert_eq!(outbox(&env).await.len(), 1);
    env.cleanup().await;
}

#[tokio::test]
async fn a_result_advances_the_saga_and_a_duplicate_changes_nothing() {
    let env = env().await;
    let c = run(&env, vec![start("order_fulfillment", "o-2")], at(0)).await;
    let reserve = tasks(&c).remove(0);
    let c = run(&env, vec![ok(&reserve, json!({"reserved": 3}))], at(2)).await;
    let sent = tasks(&c);
    assert_eq!(sent.len(), 1, "{c:?}");
    assert_eq!(
        (sent[0].activity.as_str(), sent[0].step.as_str()),
        ("payments.charge", "charge_payment")
    );
    assert_eq!(
        sent[0].input["steps"]["reserve_inventory"],
        json!({"reserved": 3})
    );
    let s = state(&env, "o-2").await;
    assert_eq!(s.cursor, 1);
    assert_eq!(s.steps[0].status, StepStatus::Completed);
    assert_eq!(s.steps[0].output, Some(json!({"reserved": 3})));
    let h = history(&env, "o-2").await;
    assert!(
        h.iter().any(|(e, t)| e == "step_completed" && *t == at(2)),
        "{h:?}"
    );

    // The same result delivered twice: no change, no commands.
    let dup = run(&env, vec![ok(&reserve, json!({"reserved": 3}))], at(3)).await;
    assert!(dup.outbox.is_empty(), "{dup:?}");
    assert_eq!(history(&env, "o-2").await, h);
    assert_eq!(state(&env, "o-2").await, s);
    // A result for no saga is refused with the reason.
    let mut stray = reserve.clone();
    stray.saga_id = "nobody".into();
    let c = run(&env, vec![ok(&stray, json!({}))], at(4)).await;
    assert_eq!(c.rejected.len(), 1, "{c:?}");
    assert!(c.rejected[0].1.contains("nobody"), "{c:?}");
    env.cleanup().await;
}

#[tokio::test]
async fn a_sleep_sets_wake_at_and_only_a_scan_at_or_after_it_moves_the_saga_on() {
    let env = env().await;
    let c = run(&env, vec![start("nap", "n-1")], at(0)).await;
    assert!(c.outbox.is_empty(), "a sleep sends nothing: {c:?}");
    assert_eq!(wake_at(&env, "n-1").await, Some(at(10)));
    assert_eq!(
        state(&env, "n-1").await.steps[0].status,
        StepStatus::Sleeping
    );

    // A scan before the sleep ends finds nothing due and changes nothing.
    let before = history(&env, "n-1").await;
    let (due, c) = wake(&env, at(9)).await;
    assert_eq!(due, 0);
    assert!(c.outbox.is_empty());
    assert_eq!(history(&env, "n-1").await, before);
    assert_eq!(wake_at(&env, "n-1").await, Some(at(10)));

    // At the instant it ends: the sleep completes and the next step is dispatched.
    let (due, c) = wake(&env, at(10)).await;
    assert_eq!(due, 1);
    let sent = tasks(&c);
    assert_eq!(sent.len(), 1, "{c:?}");
    assert_eq!(sent[0].activity, "inventory.reserve");
    let s = state(&env, "n-1").await;
    assert_eq!(s.cursor, 1);
    assert_eq!(s.steps[0].status, StepStatus::Completed);
    let h = history(&env, "n-1").await;
    assert!(h.len() > before.len());
    assert!(h[before.len()..].iter().all(|(_, t)| *t == at(10)), "{h:?}");
    // Now only the task's own deadline is armed, well after the sleep.
    assert!(wake_at(&env, "n-1").await.is_some_and(|w| w > at(10)));
    env.cleanup().await;
}

#[tokio::test]
async fn a_timeout_fires_at_the_injected_time() {
    let env = env().await;
    run(&env, vec![start("prompt", "p-1")], at(0)).await;
    assert_eq!(wake_at(&env, "p-1").await, Some(at(5)));
    let (due, _) = wake(&env, at(4)).await;
    assert_eq!(due, 0, "not before schedule_to_start");
    assert_eq!(state(&env, "p-1").await.status, SagaStatus::Running);

    // No worker picked the task up within 5 s: the only attempt times out, and with
    // nothing completed to undo the saga ends compensated.
    let (due, c) = wake(&env, at(5)).await;
    assert_eq!(due, 1);
    let h = history(&env, "p-1").await;
    let timed_out: Vec<_> = h.iter().filter(|(e, _)| e == "attempt_timed_out").collect();
    assert_eq!(
        timed_out,
        [&("attempt_timed_out".to_string(), at(5))],
        "{h:?}"
    );
    let s = state(&env, "p-1").await;
    assert_eq!(s.status, SagaStatus::Compensated, "{h:?}");
    assert_eq!(
        s.steps[0].error.as_ref().map(|e| e.code.as_str()),
        Some("timeout.schedule_to_start")
    );
    assert_eq!(wake_at(&env, "p-1").await, None);
    assert_eq!(c.finished, [("p-1".to_string(), "compensated")]);
    // The terminal status is announced through the outbox.
    assert!(
        outbox(&env)
            .await
            .contains(&(env.names.events(), "saga.prompt.compensated".to_string())),
        "{:?}",
        outbox(&env).await
    );
    env.cleanup().await;
}

/// Signal-with-start: a new id is started and signalled in one batch; an existing id
/// only gets the signal (its input is not compared: a signal-with-start may repeat).
#[tokio::test]
async fn a_signal_with_start_starts_unless_the_saga_exists_then_signals() {
    let env = env().await;
    let with_signal = |id: &str, n: i64| Input::Start {
        saga: "order_fulfillment".into(),
        id: id.into(),
        version: None,
        input: json!({"order_id": n}),
        run_at: None,
        signal: Some(sagaflow::messages::StartSignal {
            name: "gift_wrap".into(),
            payload: json!({"n": n}),
        }),
        parent: None,
        traceparent: None,
    };
    let c = run(&env, vec![with_signal("s-1", 1)], at(0)).await;
    assert!(c.rejected.is_empty() && c.unhandled.is_empty(), "{c:?}");
    assert_eq!(tasks(&c).len(), 1, "started: its first task");
    let events: Vec<String> = history(&env, "s-1")
        .await
        .into_iter()
        .map(|(e, _)| e)
        .collect();
    assert_eq!(events.first().map(String::as_str), Some("saga_started"));
    assert!(events.iter().any(|e| e == "signal_buffered"), "{events:?}");

    let c = run(&env, vec![with_signal("s-1", 2)], at(1)).await;
    assert!(c.rejected.is_empty() && tasks(&c).is_empty(), "{c:?}");
    let s = state(&env, "s-1").await;
    assert_eq!(
        s.input,
        json!({"order_id": 1}),
        "the saga keeps its first input"
    );
    assert_eq!(s.signals["gift_wrap"], [json!({"n": 1}), json!({"n": 2})]);
}

/// One batch of `inputs` at `now` from the states in `cache` (no lock).
async fn run_cached(
    env: &TestEnv,
    cache: &std::sync::Mutex<StateCache>,
    inputs: Vec<Input>,
    now: DateTime<Utc>,
) -> batch::CachedRun {
    let inputs = inputs.into_iter().enumerate().collect();
    batch::run_cached(
        &env.pool,
        &env.names,
        &env.catalog,
        inputs,
        LEASE,
        now,
        cache,
    )
    .await
    .map_err(|(e, _)| e)
    .unwrap()
}

/// Puts a committed batch's states in `cache`, as the coordinator does after a commit.
fn remember(cache: &std::sync::Mutex<StateCache>, states: Vec<(SagaState, Fence)>) {
    let mut cache = cache.lock().unwrap();
    for (state, fence) in states {
        cache.put(state, fence);
    }
}

#[tokio::test]
async fn a_result_for_a_cached_saga_applies_without_a_lock_exactly_as_under_one() {
    let env = env().await;
    let cache = std::sync::Mutex::new(StateCache::new(100));
    // Two sagas to the same point: one advanced from the cache, one under lock.
    let mut c = run(
        &env,
        vec![
            start("order_fulfillment", "fast"),
            start("order_fulfillment", "slow"),
        ],
        at(0),
    )
    .await;
    let sent = tasks(&c);
    remember(&cache, std::mem::take(&mut c.states));
    cache.lock().unwrap().forget("slow");
    let result = |id: &str| {
        ok(
            sent.iter().find(|t| t.saga_id == id).unwrap(),
            json!({"r": 1}),
        )
    };

    let fast = run_cached(&env, &cache, vec![result("fast")], at(2)).await;
    assert!(fast.rest.is_empty(), "applied from the cache: {fast:?}");
    let slow = run_cached(&env, &cache, vec![result("slow")], at(2)).await;
    assert_eq!(slow.rest.len(), 1, "not cached: left to run under lock");
    assert!(slow.committed.outbox.is_empty());
    let slow = run(&env, slow.rest.into_iter().map(|(_, i)| i).collect(), at(2)).await;

    let (a, b) = (state(&env, "fast").await, state(&env, "slow").await);
    assert_eq!((a.cursor, a.status), (b.cursor, b.status));
    assert_eq!(a.steps, b.steps, "the same state either way");
    let strip = |t: Vec<TaskMessage>| -> Vec<(String, String, u32)> {
        t.into_iter()
            .map(|t| (t.activity, t.step, t.attempt))
            .collect()
    };
    assert_eq!(strip(tasks(&fast.committed)), strip(tasks(&slow)));
    let events =
        |h: Vec<(String, DateTime<Utc>)>| -> Vec<String> { h.into_iter().map(|e| e.0).collect() };
    assert_eq!(
        events(history(&env, "fast").await),
        events(history(&env, "slow").await)
    );
    let version: i64 = sqlx::query_scalar("SELECT row_version FROM sagas WHERE id = 'fast'")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(version, 2, "one fenced update");
    let committed: Vec<(usize, i64)> = fast
        .committed
        .states
        .iter()
        .map(|(s, f)| (s.cursor, f.version))
        .collect();
    assert_eq!(
        committed,
        [(a.cursor, 2)],
        "the state to cache again, as committed"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn a_cached_state_another_writer_moved_on_writes_nothing_and_is_redone_under_lock() {
    let env = env().await;
    let cache = std::sync::Mutex::new(StateCache::new(100));
    let c = run(&env, vec![start("order_fulfillment", "o-s")], at(0)).await;
    let reserve = tasks(&c).remove(0);
    let stale = c.states.clone();
    // Another coordinator applies the result first (its own lock, its own cache).
    let other = run(&env, vec![ok(&reserve, json!({"r": 1}))], at(1)).await;
    let charge = tasks(&other).remove(0);
    let history_before = history(&env, "o-s").await;
    let outbox_before = outbox(&env).await;

    // This coordinator's cache still holds the state before that result. The same
    // result again (a redelivery) would change that state; the charge's result is
    // not current there (a no-op). Either way nothing is written and the input is
    // left to run under lock, where it does what the current state says.
    for input in [ok(&reserve, json!({"r": 1})), ok(&charge, json!({"c": 1}))] {
        remember(&cache, stale.clone());
        let r = run_cached(&env, &cache, vec![input], at(2)).await;
        assert_eq!(r.rest.len(), 1, "{r:?}");
        assert!(r.committed.outbox.is_empty() && r.committed.states.is_empty());
        assert_eq!(
            history(&env, "o-s").await,
            history_before,
            "nothing written"
        );
        assert_eq!(outbox(&env).await, outbox_before);
        let locked = run(&env, r.rest.into_iter().map(|(_, i)| i).collect(), at(2)).await;
        assert!(locked.rejected.is_empty(), "{locked:?}");
    }
    let s = state(&env, "o-s").await;
    assert_eq!(s.cursor, 2, "the charge's result applied once, under lock");
    assert_eq!(s.steps[1].output, Some(json!({"c": 1})));
    env.cleanup().await;
}

#[tokio::test]
async fn a_start_without_a_lock_creates_a_new_saga_and_leaves_a_taken_id_to_the_lock() {
    let env = env().await;
    let cache = std::sync::Mutex::new(StateCache::new(100));
    let new = run_cached(&env, &cache, vec![start("order_fulfillment", "n-1")], at(0)).await;
    assert!(new.rest.is_empty(), "{new:?}");
    assert_eq!(tasks(&new.committed).len(), 1);
    assert_eq!(new.committed.states.len(), 1);
    let (_, fence) = &new.committed.states[0];
    assert_eq!(fence.version, 1, "a new row is version 1");
    let created: chrono::DateTime<Utc> =
        sqlx::query_scalar("SELECT created_at FROM sagas WHERE id = 'n-1'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(fence.created_at, created, "as the insert returned it");
    let history_before = history(&env, "n-1").await;
    let outbox_before = outbox(&env).await;

    // The same start again, from a coordinator that does not hold the saga: the
    // insert finds the id taken, so nothing is written and the lock decides.
    let again = run_cached(&env, &cache, vec![start("order_fulfillment", "n-1")], at(1)).await;
    assert_eq!(again.rest.len(), 1, "{again:?}");
    assert!(again.committed.outbox.is_empty() && again.committed.states.is_empty());
    assert_eq!(history(&env, "n-1").await, history_before);
    assert_eq!(outbox(&env).await, outbox_before);
    let locked = run(
        &env,
        again.rest.into_iter().map(|(_, i)| i).collect(),
        at(1),
    )
    .await;
    assert!(
        locked.outbox.is_empty() && locked.rejected.is_empty(),
        "a repeat: ignored"
    );

    // One that holds it (cached) leaves the start to the lock without writing.
    remember(&cache, new.committed.states);
    let held = run_cached(&env, &cache, vec![start("order_fulfillment", "n-1")], at(2)).await;
    assert_eq!(held.rest.len(), 1);
    assert_eq!(history(&env, "n-1").await, history_before);
    env.cleanup().await;
}

#[tokio::test]
async fn a_cached_state_of_a_purged_saga_never_writes_over_a_new_one_with_its_id() {
    let env = env().await;
    let cache = std::sync::Mutex::new(StateCache::new(100));
    let mut old = run(&env, vec![start("order_fulfillment", "again")], at(0)).await;
    let old_reserve = tasks(&old).remove(0);
    remember(&cache, std::mem::take(&mut old.states));
    // Purged (as retention does once it ended), then started again with the same
    // id: its row is at version 1 again, as the cached one was.
    sqlx::query("DELETE FROM sagas WHERE id = 'again'")
        .execute(&env.pool)
        .await
        .unwrap();
    run(&env, vec![start("order_fulfillment", "again")], at(5)).await;
    let version: i64 = sqlx::query_scalar("SELECT row_version FROM sagas WHERE id = 'again'")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(version, 1);
    let before = state(&env, "again").await;

    // A late result for the earlier saga's task: its cached state would take it
    // (and the version matches), but the row is another saga's now.
    let late = ok(&old_reserve, json!({"r": 1}));
    let r = run_cached(&env, &cache, vec![late], at(6)).await;
    assert_eq!(
        r.rest.len(),
        1,
        "the earlier saga's state is not this one's: {r:?}"
    );
    assert!(r.committed.outbox.is_empty());
    assert_eq!(state(&env, "again").await, before, "nothing written");
    env.cleanup().await;
}
