//! Crash safety: a few hundred sagas while the coordinator and the worker processes are
//! SIGKILLed and restarted; every saga must still end as it should, with every effect
//! applied once and nothing left behind in any queue or in the outbox.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::Duration;

use common::{eventually, TestEnv, ORDER};
use sagaflow::client::StartOptions;
use tokio::process::{Child, Command};

const SAGAS: usize = 300;

fn spawn(env: &TestEnv, args: &[&str], log: &str) -> Child {
    let file = std::fs::File::create(env.dir.join(log)).unwrap();
    Command::new(env!("CARGO_BIN_EXE_sagaflow"))
        .args(args)
        .envs(env.child_env())
        .stdin(Stdio::null())
        .stdout(Stdio::from(file.try_clone().unwrap()))
        .stderr(Stdio::from(file))
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

async fn kill9(child: &mut Child) {
    child.start_kill().unwrap(); // SIGKILL
    child.wait().await.unwrap();
}

/// The coordinator and the worker process of one test, SIGKILLed and restarted in
/// turn; each incarnation logs to its own file in the test's directory.
struct Processes {
    coordinator: Child,
    worker: Child,
    prefix: &'static str,
    kills: i32,
    worker_kills: i32,
}

impl Processes {
    async fn start(env: &TestEnv, prefix: &'static str) -> Processes {
        let coordinator = spawn(env, &["coordinator"], &format!("{prefix}coordinator-0.log"));
        env.wait_consumer(&env.names.coordinator_queue()).await;
        let worker = spawn(env, &["worker", "--demo"], &format!("{prefix}worker-0.log"));
        env.wait_consumer(&env.names.task_queue("shipping.ship"))
            .await;
        Processes {
            coordinator,
            worker,
            prefix,
            kills: 0,
            worker_kills: 0,
        }
    }

    async fn kill_coordinator(&mut self, env: &TestEnv) {
        kill9(&mut self.coordinator).await;
        self.kills += 1;
        let log = format!("{}coordinator-{}.log", self.prefix, self.kills);
        self.coordinator = spawn(env, &["coordinator"], &log);
    }

    async fn kill_worker(&mut self, env: &TestEnv) {
        kill9(&mut self.worker).await;
        self.kills += 1;
        self.worker_kills += 1;
        let log = format!("{}worker-{}.log", self.prefix, self.kills);
        self.worker = spawn(env, &["worker", "--demo"], &log);
    }

    /// Round `n` of a test: the worker on even rounds, the coordinator on odd ones.
    async fn kill_in_turn(&mut self, env: &TestEnv, n: usize) {
        if n.is_multiple_of(2) {
            self.kill_worker(env).await;
        } else {
            self.kill_coordinator(env).await;
        }
    }

    /// A handler re-runs only when a worker died between its effect and the ledger
    /// write: bounded by the tasks in flight at each worker kill.
    fn assert_reruns_bounded(&self, env: &TestEnv, reruns: i32) {
        let prefetch = env.settings.worker.prefetch as i32 * 5;
        assert!(
            reruns <= self.worker_kills * prefetch,
            "{reruns} handler re-runs after {} worker kills",
            self.worker_kills
        );
    }

    async fn stop(mut self) {
        kill9(&mut self.worker).await;
        kill9(&mut self.coordinator).await;
    }
}

/// The demo effects applied, per saga (each activity at most once: the table's key),
/// and how many handler runs repeated an effect.
async fn effects_by_saga(env: &TestEnv) -> (BTreeMap<String, BTreeSet<String>>, i32) {
    let rows: Vec<(String, String, i32)> =
        sqlx::query_as("SELECT saga_id, activity, calls FROM demo_effects")
            .fetch_all(&env.pool)
            .await
            .unwrap();
    let mut by_saga: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut reruns = 0;
    for (saga, activity, calls) in rows {
        let fresh = by_saga
            .entry(saga.clone())
            .or_default()
            .insert(activity.clone());
        assert!(fresh, "{saga} {activity} twice");
        reruns += calls - 1;
    }
    (by_saga, reruns)
}

/// Completed compensations per saga, from the history.
async fn compensations_by_saga(env: &TestEnv) -> BTreeMap<String, i64> {
    let comp: Vec<(String, i64)> = sqlx::query_as("SELECT saga_id, count(*) FROM saga_history WHERE event = 'compensation_completed' GROUP BY saga_id")
        .fetch_all(&env.pool)
        .await
        .unwrap();
    comp.into_iter().collect()
}

/// The scenario mix, shared with the fault suite: input, expected status, effects.
fn scenario(i: usize) -> common::throwaway::Expect {
    common::throwaway::scenario("crash", i)
}

async fn terminal_count(env: &TestEnv) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM sagas WHERE status IN ('completed','compensated','failed','cancelled')")
        .fetch_one(&env.pool)
        .await
        .unwrap()
}

async fn wait_terminal_at_least(env: &TestEnv, n: i64) {
    let what = format!("{n} sagas terminal");
    eventually(&what, Duration::from_secs(120), || async {
        let ended = terminal_count(env).await;
        (ended >= n).then_some(()).ok_or(ended)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sagas_survive_sigkill_of_coordinator_and_worker() {
    let env = TestEnv::new(&[("order.toml", ORDER)]).await;
    let mut procs = Processes::start(&env, "").await;
    let client = env.client().await;
    let ids: Vec<String> = (0..SAGAS).map(|i| format!("crash-{i}")).collect();
    let starts: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            (
                "order_fulfillment".to_string(),
                scenario(i).input,
                StartOptions {
                    id: Some(id.clone()),
                    ..Default::default()
                },
            )
        })
        .collect();
    client.start_many(&starts[..SAGAS / 2]).await.unwrap();
    // First kill: the coordinator, while it is busy with the first starts.
    procs.kill_coordinator(&env).await;
    client.start_many(&starts[SAGAS / 2..]).await.unwrap();
    for (round, pct) in [10, 30, 50, 70].into_iter().enumerate() {
        wait_terminal_at_least(&env, (SAGAS * pct / 100) as i64).await;
        procs.kill_in_turn(&env, round).await;
    }
    procs.kill_worker(&env).await;

    let done = env.wait_terminal(&ids, Duration::from_secs(180)).await;

    // 1. Every saga ended as its scenario says.
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(done[id], scenario(i).status, "{id}");
    }
    // 2. Exactly the expected effects per saga: nothing missing, nothing extra.
    let (by_saga, reruns) = effects_by_saga(&env).await;
    for (i, id) in ids.iter().enumerate() {
        let want: BTreeSet<String> = scenario(i).effects.into_iter().map(String::from).collect();
        assert_eq!(by_saga.get(id).cloned().unwrap_or_default(), want, "{id}");
    }
    // 3. Every completed step of a compensated saga was compensated exactly once.
    let comp = compensations_by_saga(&env).await;
    for (i, id) in ids.iter().enumerate() {
        let want = match i % 4 {
            2 => 1,
            3 => 2,
            _ => 0,
        };
        assert_eq!(comp.get(id).copied().unwrap_or(0), want, "{id}");
    }
    // 4. Handler re-runs bounded by the tasks in flight at each worker kill.
    procs.assert_reruns_bounded(&env, reruns);
    // 5. Nothing left behind: outbox drained, no dead letters, queues empty.
    let mut queues = vec![env.names.coordinator_queue(), env.names.dlq_coordinator()];
    for a in env.catalog.activities() {
        queues.push(env.names.task_queue(&a));
        queues.push(env.names.dlq(&a));
    }
    for ms in sagaflow::broker::topology::DELAY_LEVELS_MS {
        queues.push(env.names.delay(*ms));
    }
    eventually("nothing left behind", Duration::from_secs(60), || async {
        let backlog = sagaflow::store::outbox::backlog(&env.pool).await.unwrap();
        let mut left = vec![];
        for q in &queues {
            let n = env.depth(q).await;
            if n > 0 {
                left.push((q.clone(), n));
            }
        }
        if backlog == 0 && left.is_empty() {
            Ok(())
        } else {
            Err(format!("outbox {backlog}, queues {left:?}"))
        }
    })
    .await;
    println!(
        "crash test: {} kills ({} of the worker), {reruns} handler re-runs",
        procs.kills, procs.worker_kills
    );
    procs.stop().await;
    env.cleanup().await;
}

const FLOW_PARENT: &str = r#"
name = "flow_parent"
version = 1

[[steps]]
name = "prepare"
parallel = [
  { name = "reserve", activity = "inventory.reserve", compensate = "inventory.release" },
  { name = "charge", activity = "payments.charge", compensate = "payments.refund" },
  { name = "review", saga = "flow_child" },
]

[[steps]]
name = "ship"
activity = "shipping.ship"
"#;

const FLOW_CHILD: &str = r#"
name = "flow_child"
version = 1

[[steps]]
name = "check"
activity = "inventory.reserve"
compensate = "inventory.release"
"#;

/// Parallel groups with a child saga while the coordinator and the worker are
/// SIGKILLed: every parent and child ends as it should, every effect is applied
/// once and every completed branch and child is compensated exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_groups_with_child_sagas_survive_sigkill() {
    const PARENTS: usize = 120;
    let sagas = [("parent.toml", FLOW_PARENT), ("child.toml", FLOW_CHILD)];
    let env = TestEnv::new(&sagas).await;
    let mut procs = Processes::start(&env, "flow-").await;
    let ids: Vec<String> = (0..PARENTS).map(|i| format!("flow-{i}")).collect();
    // Odd parents fail at ship (non-retryable): their branches and child are undone.
    let starts: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let input = match i % 2 {
                0 => serde_json::json!({}),
                _ => serde_json::json!({"fail": {"shipping.ship": {"code": "x", "retryable": false}}}),
            };
            let opts = StartOptions {
                id: Some(id.clone()),
                ..Default::default()
            };
            ("flow_parent".to_string(), input, opts)
        })
        .collect();
    let client = env.client().await;
    client.start_many(&starts[..PARENTS / 2]).await.unwrap();
    procs.kill_coordinator(&env).await;
    client.start_many(&starts[PARENTS / 2..]).await.unwrap();
    // Parents and children both count: 2 sagas per parent.
    for (round, pct) in [15, 40, 65].into_iter().enumerate() {
        wait_terminal_at_least(&env, (2 * PARENTS * pct / 100) as i64).await;
        procs.kill_in_turn(&env, round).await;
    }
    let children: Vec<String> = ids.iter().map(|id| format!("{id}/review")).collect();
    let all: Vec<String> = ids.iter().chain(&children).cloned().collect();
    let done = env.wait_terminal(&all, Duration::from_secs(180)).await;
    let (effects, reruns) = effects_by_saga(&env).await;
    let comp = compensations_by_saga(&env).await;
    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    for (i, id) in ids.iter().enumerate() {
        let child = format!("{id}/review");
        let (status, parent_fx, child_fx, parent_comp, child_comp) = match i % 2 {
            0 => (
                "completed",
                set(&["inventory.reserve", "payments.charge", "shipping.ship"]),
                set(&["inventory.reserve"]),
                0,
                0,
            ),
            _ => (
                "compensated",
                set(&[
                    "inventory.release",
                    "inventory.reserve",
                    "payments.charge",
                    "payments.refund",
                ]),
                set(&["inventory.release", "inventory.reserve"]),
                3, // reserve, charge and the child
                1,
            ),
        };
        assert_eq!(done[id], status, "{id}");
        assert_eq!(done[&child], status, "{child}");
        assert_eq!(
            effects.get(id).cloned().unwrap_or_default(),
            parent_fx,
            "{id}"
        );
        assert_eq!(
            effects.get(&child).cloned().unwrap_or_default(),
            child_fx,
            "{child}"
        );
        assert_eq!(comp.get(id).copied().unwrap_or(0), parent_comp, "{id}");
        assert_eq!(
            comp.get(&child).copied().unwrap_or(0),
            child_comp,
            "{child}"
        );
    }
    procs.assert_reruns_bounded(&env, reruns);
    eventually("outbox drained", Duration::from_secs(60), || async {
        let backlog = sagaflow::store::outbox::backlog(&env.pool).await.unwrap();
        (backlog == 0).then_some(()).ok_or(backlog)
    })
    .await;
    println!(
        "flow crash test: {} kills ({} of the worker), {reruns} handler re-runs",
        procs.kills, procs.worker_kills
    );
    procs.stop().await;
    env.cleanup().await;
}

const FAN_OUT: &str = r#"
name = "fan"
version = 1

[[steps]]
name = "send_each"
for_each = "input.recipients"
max_concurrency = 50
activity = "newsletter.send"
compensate = "newsletter.recall"

[[steps]]
name = "ship"
activity = "shipping.ship"
"#;

const ELEMENTS: usize = 1000;

async fn element_rows(env: &TestEnv) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM saga_elements")
        .fetch_one(&env.pool)
        .await
        .unwrap()
}

/// Every effect key of saga `id` with the calls its handler made, by key.
async fn effect_keys(env: &TestEnv, id: &str) -> BTreeMap<String, i32> {
    let rows: Vec<(String, i32)> =
        sqlx::query_as("SELECT idempotency_key, calls FROM demo_effects WHERE saga_id = $1")
            .bind(id)
            .fetch_all(&env.pool)
            .await
            .unwrap();
    rows.into_iter().collect()
}

/// Two 1,000-element fan-outs while the coordinator and the worker are SIGKILLed:
/// one completes (every element's effect applied once, the output complete and in
/// order), one has its element 700 fail for good (every element that was sent is
/// recalled exactly once, the failed one never was sent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_element_fan_out_survives_sigkill() {
    let env = TestEnv::new(&[("fan.toml", FAN_OUT)]).await;
    let mut procs = Processes::start(&env, "fan-").await;
    let good: Vec<String> = (0..ELEMENTS).map(|i| format!("r{i}@example.org")).collect();
    let mut bad = good.clone();
    bad[700] = "nobody@example.invalid".into();
    let start = |id: &str, to: &[String]| {
        let opts = StartOptions {
            id: Some(id.to_string()),
            ..Default::default()
        };
        let input = serde_json::json!({ "group": "g", "recipients": to });
        ("fan".to_string(), input, opts)
    };
    let client = env.client().await;
    client
        .start_many(&[start("fan-ok", &good), start("fan-bad", &bad)])
        .await
        .unwrap();
    for (round, rows) in [150, 500, 900, 1300].into_iter().enumerate() {
        eventually("element rows", Duration::from_secs(120), || async {
            let n = element_rows(&env).await;
            (n >= rows).then_some(()).ok_or(n)
        })
        .await;
        procs.kill_in_turn(&env, round).await;
    }
    let ids = ["fan-ok".to_string(), "fan-bad".to_string()];
    let done = env.wait_terminal(&ids, Duration::from_secs(240)).await;
    assert_eq!(done["fan-ok"], "completed");
    assert_eq!(done["fan-bad"], "compensated");

    let ok = sagaflow::store::sagas::get(&env.pool, "fan-ok")
        .await
        .unwrap()
        .unwrap()
        .state;
    let out = ok.steps[0].output.clone().unwrap();
    let to: Vec<&str> = out
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["to"].as_str())
        .collect();
    assert_eq!(to, good, "every output, in element order");
    let fx = effect_keys(&env, "fan-ok").await;
    let sends = fx
        .keys()
        .filter(|k| k.ends_with(":action") && k.contains("send_each["))
        .count();
    assert_eq!(sends, ELEMENTS, "one effect per element");
    assert!(
        !fx.keys().any(|k| k.ends_with(":compensation")),
        "nothing recalled"
    );

    let fx_bad = effect_keys(&env, "fan-bad").await;
    let sent: BTreeSet<&str> = fx_bad
        .keys()
        .filter_map(|k| k.strip_suffix(":action"))
        .collect();
    let recalled: BTreeSet<&str> = fx_bad
        .keys()
        .filter_map(|k| k.strip_suffix(":compensation"))
        .collect();
    assert_eq!(sent, recalled, "every sent element recalled, no other");
    assert!(!sent.contains("fan-bad:send_each[700]"));
    let recalls: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM saga_history WHERE saga_id = 'fan-bad' AND event = 'compensation_completed' AND step LIKE 'send_each[%'",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(
        recalls as usize,
        recalled.len(),
        "each recall recorded once"
    );
    let reruns: i32 = fx.values().chain(fx_bad.values()).map(|c| c - 1).sum();
    procs.assert_reruns_bounded(&env, reruns);
    println!(
        "fan-out crash test: {} kills ({} of the worker), {reruns} handler re-runs, {} elements sent before the failure",
        procs.kills,
        procs.worker_kills,
        sent.len()
    );
    procs.stop().await;
    env.cleanup().await;
}
