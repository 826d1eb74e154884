//! `sagaflow bench`: tiny runs of the real binary in each mode (closed loop, open loop,
//! burst of the compensate workload) end every saga with the workload's status and
//! print every field; preloaded finished sagas read back exactly like sagas the
//! engine ran.

mod common;

use std::time::Duration;

use common::TestEnv;
use sagaflow::saga::definition::parse;
use sagaflow::tools::bench::{preload, Workload};
use serde_json::Value;

/// A `sagaflow bench` child. The bench tears its sandbox (namespace `<ns>_bench<pid>`,
/// database `sagaflow_bench<pid>`) down itself; when the test fails first, `Drop`
/// kills the bench and what it started, and deletes the same.
struct Bench {
    namespace: String,
    pid: u32,
    /// Not waited for until it exits, so its pid (and its children's parent pid)
    /// cannot be taken by another process while `Drop` may still kill by pid.
    child: tokio::process::Child,
}

impl Bench {
    /// Runs `sagaflow bench <args>` in a namespace of its own; returns its JSON line.
    async fn run(args: &[&str]) -> Value {
        use tokio::io::AsyncReadExt;
        let namespace = format!("tb{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sagaflow"))
            .arg("bench")
            .args(args)
            .env("SAGAFLOW__NAMESPACE", &namespace)
            .env("SAGAFLOW__AMQP__URL", common::amqp_url())
            .env(
                "SAGAFLOW__DATABASE__URL",
                format!("{}/postgres", common::pg_base()),
            )
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("sagaflow runs");
        let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        let pid = child.id().expect("a running child has a pid");
        let mut bench = Bench {
            namespace,
            pid,
            child,
        };
        let (mut stdout, mut stderr) = (String::new(), String::new());
        let (status, _, _) = tokio::time::timeout(Duration::from_secs(180), async {
            tokio::join!(
                bench.child.wait(),
                out.read_to_string(&mut stdout),
                err.read_to_string(&mut stderr)
            )
        })
        .await
        .expect("the bench ends within 3 min");
        let status = status.expect("its exit status");
        assert!(status.success(), "{args:?}: {status}\n{stderr}");
        serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("{args:?}: not one JSON line ({e}): {stdout}\n{stderr}"))
    }
}

impl Drop for Bench {
    /// Kills the bench and its children if it still runs, then deletes its database,
    /// queues and directory (all of it already gone after a clean run).
    fn drop(&mut self) {
        let pid = self.pid;
        if matches!(self.child.try_wait(), Ok(None)) {
            for p in sagaflow::tools::bench::cpu::processes() {
                if p.ppid == pid {
                    kill(p.pid);
                }
            }
            let _ = self.child.start_kill();
        }
        let tag = format!("bench{pid}");
        let namespace = format!("{}_{tag}", self.namespace);
        let db = format!("{}/sagaflow_{tag}", common::pg_base());
        let _ = std::fs::remove_dir_all(std::env::temp_dir().join(format!("sagaflow-{tag}")));
        let teardown = async move {
            let _ = sagaflow::store::drop_database(&db).await;
            let Ok(conn) = sagaflow::broker::connect(&common::amqp_url(), "test-cleanup").await
            else {
                return;
            };
            let names = sagaflow::broker::Names::new(&namespace);
            let activities = sagaflow::tools::demo::activity_names();
            let _ = sagaflow::broker::topology::delete_namespace(&conn, &names, &activities).await;
            conn.close("ok").await;
        };
        // A thread and runtime of its own: `drop` may run on a runtime that is blocked.
        let ran = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map(|rt| rt.block_on(tokio::time::timeout(Duration::from_secs(30), teardown)))
        })
        .join();
        if ran.is_err() {
            eprintln!("the teardown of bench {pid} panicked; its database or queues may be left");
        }
    }
}

fn kill(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status();
}

/// The fields every mode prints, with sane values for `n` sagas that all ended `status`.
fn assert_common(v: &Value, n: u64, status: &str) {
    assert_eq!(v["sagas"], n, "{v}");
    assert_eq!(v["finished"], n, "{v}");
    assert_eq!(v["statuses"], serde_json::json!({ status: n }), "{v}");
    for f in ["seconds", "sagas_per_s", "steps_per_s", "tasks_per_s"] {
        assert!(v[f].as_f64().is_some_and(|x| x > 0.0), "{f}: {v}");
    }
    let q: Vec<f64> = ["p50", "p95", "p99", "max"]
        .iter()
        .map(|q| v[format!("latency_{q}_ms")].as_f64().expect("a latency"))
        .collect();
    assert!(
        q.windows(2).all(|w| w[0] <= w[1]),
        "quantiles in order: {v}"
    );
    for p in ["coordinator", "worker", "postgres", "rabbitmq"] {
        let s = v["cpu_s"][p].as_f64();
        assert!(s.is_some_and(|s| s >= 0.0), "cpu_s.{p}: {v}");
    }
    // Two processes did all the engine's work: some CPU time must show.
    let engine = v["cpu_s"]["coordinator"].as_f64().unwrap_or(0.0)
        + v["cpu_s"]["worker"].as_f64().unwrap_or(0.0);
    assert!(engine > 0.0, "the children's CPU time: {v}");
}

#[tokio::test]
async fn a_closed_loop_after_a_preload_completes_every_saga() {
    let v = Bench::run(&[
        "--sagas",
        "20",
        "--steps",
        "2",
        "--concurrency",
        "4",
        "--preload",
        "500",
        "--timeout",
        "120",
    ])
    .await;
    assert_common(&v, 20, "completed");
    assert_eq!(
        (v["mode"].as_str(), v["concurrency"].as_u64()),
        (Some("closed"), Some(4))
    );
    assert_eq!(
        (v["workload"].as_str(), v["steps"].as_u64()),
        (Some("happy"), Some(2))
    );
    assert_eq!(v["preloaded"], 500, "{v}");
    assert!(v["preload_seconds"].is_number(), "{v}");
}

#[tokio::test]
async fn a_compensate_burst_compensates_every_saga() {
    let v = Bench::run(&[
        "--sagas",
        "20",
        "--workload",
        "compensate",
        "--timeout",
        "120",
    ])
    .await;
    assert_common(&v, 20, "compensated");
    assert_eq!(
        (v["mode"].as_str(), v["workload"].as_str()),
        (Some("burst"), Some("compensate"))
    );
    // Seven tasks a saga (two actions, three failed attempts, two compensations)
    // against three steps.
    let (tasks, steps) = (v["tasks_per_s"].as_f64(), v["steps_per_s"].as_f64());
    assert!(tasks.zip(steps).is_some_and(|(t, s)| t > 2.0 * s), "{v}");
    // The two retry waits alone take 300 ms.
    assert!(
        v["latency_p50_ms"].as_f64().is_some_and(|l| l >= 300.0),
        "{v}"
    );
}

#[tokio::test]
async fn an_open_loop_keeps_its_schedule_and_completes_every_saga() {
    let v = Bench::run(&["--sagas", "20", "--rate", "40", "--timeout", "120"]).await;
    assert_common(&v, 20, "completed");
    assert_eq!(
        (v["mode"].as_str(), v["rate"].as_f64()),
        (Some("open"), Some(40.0))
    );
    for f in [
        "publish_lag_p99_ms",
        "publish_lag_max_ms",
        "late_starts",
        "starts_per_s",
    ] {
        assert!(v[f].is_number(), "{f}: {v}");
    }
    assert!(v["publisher_fell_behind"].is_boolean(), "{v}");
    // 20 starts at 40/s span 475 ms at least.
    assert!(v["seconds"].as_f64().is_some_and(|s| s >= 0.475), "{v}");
}

/// A saga's state, history and ledger rows as JSON, with its id written `ID`, and
/// without what differs between runs (timestamps and durations).
async fn snapshot(env: &TestEnv, id: &str) -> Value {
    let saga = sagaflow::store::sagas::get(&env.pool, id)
        .await
        .unwrap()
        .expect("the saga exists");
    let history: Vec<Value> = sagaflow::store::history::all(&env.pool, id)
        .await
        .unwrap()
        .into_iter()
        .map(|h| serde_json::json!([h.event, h.step, h.attempt, h.detail]))
        .collect();
    let ledger: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT key, task_id, output::text FROM idempotency_ledger WHERE saga_id = $1 ORDER BY key",
    )
    .bind(id)
    .fetch_all(&env.pool)
    .await
    .unwrap();
    let row: (String, i32, String, Option<String>) =
        sqlx::query_as("SELECT name, version, status, wake_at::text FROM sagas WHERE id = $1")
            .bind(id)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    let all = serde_json::json!({
        "row": row, "state": saga.state, "history": history, "ledger": ledger,
    });
    let text = all.to_string().replace(&format!("\"{id}"), "\"ID");
    let mut v: Value = serde_json::from_str(&text).unwrap();
    strip(&mut v, "duration_ms");
    // A saga the engine ran carries its own (random) trace context; a preloaded one
    // has none, which is all a finished saga's trace context is used for.
    strip(&mut v, "traceparent");
    v
}

/// Removes every `key` from the objects in `v`.
fn strip(v: &mut Value, key: &str) {
    match v {
        Value::Object(o) => {
            o.remove(key);
            o.values_mut().for_each(|x| strip(x, key));
        }
        Value::Array(a) => a.iter_mut().for_each(|x| strip(x, key)),
        _ => {}
    }
}

#[tokio::test]
async fn preloaded_sagas_read_back_like_sagas_the_engine_ran() {
    let workloads = [
        (Workload::Happy, "completed"),
        (Workload::Compensate, "compensated"),
    ];
    let files: Vec<(String, String)> = workloads
        .iter()
        .map(|(w, _)| (format!("{}.toml", w.saga(3)), w.definition(3)))
        .collect();
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(f, t)| (f.as_str(), t.as_str()))
        .collect();
    let env = TestEnv::running(&files).await;
    let client = env.client().await;
    for (i, (w, status)) in workloads.iter().enumerate() {
        let def = parse("<bench>", &w.definition(3)).unwrap();
        let real = format!("real-{i}");
        client
            .start(&def.name, serde_json::json!({}), common::id(&real))
            .await
            .unwrap();
        env.wait_status(&real, status, Duration::from_secs(30))
            .await;
        let prefix = format!("pre{i}-");
        preload::preload(&env.pool, &def, &prefix, 3).await.unwrap();
        let copy = format!("{prefix}2");
        assert_eq!(env.status(&copy).await.as_deref(), Some(*status));
        assert_eq!(
            snapshot(&env, &copy).await,
            snapshot(&env, &real).await,
            "{w:?}"
        );
    }
    let (preloaded,): (i64,) = sqlx::query_as("SELECT count(*) FROM sagas WHERE id LIKE 'pre%'")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(preloaded, 6);
    client.close().await;
    env.cleanup().await;
}
