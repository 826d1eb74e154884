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
    let mut coordinator = spawn(&env, &["coordinator"], "coordinator-0.log");
    env.wait_consumer(&env.names.coordinator_queue()).await;
    let mut worker = spawn(&env, &["worker", "--demo"], "worker-0.log");
    env.wait_consumer(&env.names.task_queue("shipping.ship"))
        .await;

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
    kill9(&mut coordinator).await;
    coordinator = spawn(&env, &["coordinator"], "coordinator-1.log");
    client.start_many(&starts[SAGAS / 2..]).await.unwrap();

    let mut kills = 1;
    let mut worker_kills = 0;
    for (round, pct) in [10, 30, 50, 70].into_iter().enumerate() {
        wait_terminal_at_least(&env, (SAGAS * pct / 100) as i64).await;
        if round % 2 == 0 {
            kill9(&mut worker).await;
            worker_kills += 1;
            worker = spawn(
                &env,
                &["worker", "--demo"],
                &format!("worker-{}.log", round + 1),
            );
        } else {
            kill9(&mut coordinator).await;
            coordinator = spawn(
                &env,
                &["coordinator"],
                &format!("coordinator-{}.log", round + 2),
            );
        }
        kills += 1;
    }
    kill9(&mut worker).await;
    worker_kills += 1;
    worker = spawn(&env, &["worker", "--demo"], "worker-last.log");
    kills += 1;

    let done = env.wait_terminal(&ids, Duration::from_secs(180)).await;

    // 1. Every saga ended as its scenario says.
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(done[id], scenario(i).status, "{id}");
    }
    // 2. Exactly the expected effects per saga: nothing missing, nothing extra.
    let rows: Vec<(String, String, i32)> =
        sqlx::query_as("SELECT saga_id, activity, calls FROM demo_effects")
            .fetch_all(&env.pool)
            .await
            .unwrap();
    let mut by_saga: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut reruns = 0;
    for (saga, activity, calls) in &rows {
        assert!(
            by_saga
                .entry(saga.clone())
                .or_default()
                .insert(activity.clone()),
            "{saga} {activity} twice"
        );
        reruns += calls - 1;
    }
    for (i, id) in ids.iter().enumerate() {
        let want: BTreeSet<String> = scenario(i).effects.into_iter().map(String::from).collect();
        assert_eq!(by_saga.get(id).cloned().unwrap_or_default(), want, "{id}");
    }
    // 3. Every completed step of a compensated saga was compensated exactly once.
    let comp: Vec<(String, i64)> = sqlx::query_as("SELECT saga_id, count(*) FROM saga_history WHERE event = 'compensation_completed' GROUP BY saga_id")
        .fetch_all(&env.pool)
        .await
        .unwrap();
    let comp: BTreeMap<String, i64> = comp.into_iter().collect();
    for (i, id) in ids.iter().enumerate() {
        let want = match i % 4 {
            2 => 1,
            3 => 2,
            _ => 0,
        };
        assert_eq!(comp.get(id).copied().unwrap_or(0), want, "{id}");
    }
    // 4. A handler re-runs only when a worker died between its effect and the ledger
    //    write: bounded by the tasks in flight at each worker kill.
    let prefetch = env.settings.worker.prefetch as i32 * 5;
    assert!(
        reruns <= worker_kills * prefetch,
        "{reruns} handler re-runs after {worker_kills} worker kills"
    );
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
    println!("crash test: {kills} kills ({worker_kills} of the worker), {reruns} handler re-runs");
    kill9(&mut worker).await;
    kill9(&mut coordinator).await;
    env.cleanup().await;
}
