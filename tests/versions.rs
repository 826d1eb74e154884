//! The version drain: `sagaflow versions --json` and `GET /api/versions` count the
//! sagas and schedules that hold each definition version and say when it is safe to
//! unload; a version that is not loaded but still has open sagas is reported on the
//! API's `/metrics`, and a coordinator that does not load it says so on its own
//! health listener's `/metrics` until the sagas have ended.

mod common;

use std::time::Duration;

use common::{eventually, serve_api, TestEnv, ORDER};
use sagaflow::saga::definition::Catalog;
use sagaflow::saga::state::SagaStatus;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(30);
const SAGA: &str = "order_fulfillment";

fn order(version: u32) -> String {
    ORDER.replacen("version = 1", &format!("version = {version}"), 1)
}

/// `sagaflow <args>` against this deployment's database and definitions (no broker).
fn cli(env: &TestEnv, args: &[&str]) -> (bool, String) {
    let s = &env.settings;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sagaflow"))
        .args(args)
        .env("SAGAFLOW__NAMESPACE", &s.namespace)
        .env("SAGAFLOW__SAGAS_DIR", s.sagas_dir.display().to_string())
        .env("SAGAFLOW__DATABASE__URL", &s.database.url)
        .env("RUST_LOG", "warn")
        .output()
        .expect("sagaflow runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let err = String::from_utf8_lossy(&out.stderr);
    (out.status.success(), format!("{text}{err}"))
}

/// (version, loaded, latest, [scheduled, running, compensating, failed], schedules,
/// safe_to_unload) of each reported version of `saga`.
fn rows(report: &Value, saga: &str) -> Vec<(i64, bool, bool, [i64; 4], i64, bool)> {
    let n = |v: &Value, k: &str| v[k].as_i64().unwrap_or(-1);
    report["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .filter(|v| v["saga"] == saga)
        .map(|v| {
            (
                n(v, "version"),
                v["loaded"] == true,
                v["latest"] == true,
                [
                    n(v, "scheduled"),
                    n(v, "running"),
                    n(v, "compensating"),
                    n(v, "failed"),
                ],
                n(v, "schedules"),
                v["safe_to_unload"] == true,
            )
        })
        .collect()
}

#[tokio::test]
async fn cli_and_api_count_what_holds_each_version_and_say_when_it_is_safe() {
    let (v1, v2, v3) = (order(1), order(2), order(3));
    let env = TestEnv::database_only(&[
        ("order-1.toml", &v1),
        ("order-2.toml", &v2),
        ("order-3.toml", &v3),
    ])
    .await;
    // v1: ended sagas only (completed, compensated, cancelled): drained.
    for (id, status) in [
        ("v1-done", SagaStatus::Completed),
        ("v1-undone", SagaStatus::Compensated),
        ("v1-cancelled", SagaStatus::Cancelled),
    ] {
        env.saga(id)
            .definition(SAGA)
            .version(1)
            .status(status)
            .insert()
            .await;
    }
    // v2: running, compensating and failed sagas hold it.
    for (id, status) in [
        ("v2-run-a", SagaStatus::Running),
        ("v2-run-b", SagaStatus::Running),
        ("v2-undoing", SagaStatus::Compensating),
        ("v2-failed", SagaStatus::Failed),
        ("v2-done", SagaStatus::Completed),
    ] {
        env.saga(id)
            .definition(SAGA)
            .version(2)
            .status(status)
            .insert()
            .await;
    }
    // v3, the latest: one delayed start, and a schedule (which starts the latest).
    env.saga("v3-later")
        .definition(SAGA)
        .version(3)
        .status(SagaStatus::Scheduled)
        .insert()
        .await;
    env.schedule("hourly").saga(SAGA).insert().await;
    // v9: not loaded here, yet a saga of it still runs (written by a newer deployment
    // and rolled back, say).
    env.saga("v9-run")
        .definition(SAGA)
        .edit(|s| s.version = 9)
        .insert()
        .await;

    let (ok, out) = cli(&env, &["versions", "--json"]);
    assert!(ok, "{out}");
    let from_cli: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(
        rows(&from_cli, SAGA),
        [
            (1, true, false, [0, 0, 0, 0], 0, true),
            (2, true, false, [0, 2, 1, 1], 0, false),
            (3, true, true, [1, 0, 0, 0], 1, false),
            (9, false, false, [0, 1, 0, 0], 0, false),
        ],
        "{from_cli:#}"
    );
    let reason = |v: i64| {
        from_cli["versions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["version"] == v)
            .and_then(|r| r["reason"].as_str())
            .map(str::to_string)
    };
    assert_eq!(reason(1), None);
    assert!(
        reason(2).is_some_and(|r| r.contains("2 running")
            && r.contains("1 compensating")
            && r.contains("1 failed")),
        "{:?}",
        reason(2)
    );
    assert!(
        reason(3).is_some_and(|r| r.contains("1 schedule starts it")),
        "{:?}",
        reason(3)
    );
    assert!(
        reason(9).is_some_and(|r| r.starts_with("not loaded here")),
        "{:?}",
        reason(9)
    );
    assert_eq!(from_cli["unloaded_schedules"], json!([]));

    // The table says the same, one line per version.
    let (ok, table) = cli(&env, &["versions"]);
    assert!(ok, "{table}");
    let line = |v: &str| {
        table
            .lines()
            .find(|l| l.split_whitespace().take(2).eq([SAGA, v]))
            .unwrap_or_else(|| panic!("no line for v{v}: {table}"))
            .to_string()
    };
    assert!(line("1").ends_with("  yes"), "{table}");
    assert!(line("2").contains("no: 2 running"), "{table}");
    assert!(line("9").contains(" NO "), "{table}");

    // The API answers the same report, and /metrics counts the unloaded version (its
    // broker figures are left out: this deployment has no broker).
    let stop = CancellationToken::new();
    let mut settings = env.settings.clone();
    settings.amqp.url = "amqp://127.0.0.1:1/%2f".into();
    let base = serve_api(&env, &settings, &stop).await;
    let http = reqwest::Client::new();
    let from_api: Value = http
        .get(format!("{base}/api/versions"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(from_api, from_cli);
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let gauge: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("sagaflow_sagas_unloaded_version{"))
        .collect();
    assert_eq!(
        gauge,
        [format!(
            "sagaflow_sagas_unloaded_version{{saga=\"{SAGA}\",version=\"9\"}} 1"
        )],
        "{metrics}"
    );

    // The last running v2 sagas end: v2 is held by its failed saga only, until an
    // operator deals with it.
    sqlx::query(
        "UPDATE sagas SET status = 'completed' WHERE id LIKE 'v2-%' AND status <> 'failed'",
    )
    .execute(&env.pool)
    .await
    .unwrap();
    let (_, out) = cli(&env, &["versions", "--json"]);
    let after: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(
        rows(&after, SAGA)[1],
        (2, true, false, [0, 0, 0, 1], 0, false)
    );
    stop.cancel();
    env.cleanup().await;
}

#[tokio::test]
async fn a_coordinator_without_a_version_in_use_reports_it_on_metrics() {
    let (v1, v2) = (order(1), order(2));
    let mut env = TestEnv::new(&[("order-1.toml", &v1), ("order-2.toml", &v2)]).await;
    for id in ["old-a", "old-b"] {
        env.saga(id).definition(SAGA).version(1).insert().await;
    }
    env.saga("old-failed")
        .definition(SAGA)
        .version(1)
        .status(SagaStatus::Failed)
        .insert()
        .await;
    env.saga("new").definition(SAGA).version(2).insert().await;

    // The coordinator loads v2 only (v1's file was removed too early), and checks
    // every 200 ms.
    let mut only_v2 = Catalog::new();
    let def = env.catalog.get(SAGA, 2).expect("v2 loaded");
    only_v2.insert((*def).clone(), "order-2.toml").unwrap();
    env.catalog = only_v2;
    env.settings.coordinator.reconcile_interval_ms = 200;
    let health = env.start_coordinator().await;
    let stop = CancellationToken::new();
    let addr = sagaflow::health::serve("127.0.0.1:0", health, stop.clone())
        .await
        .unwrap();
    let url = format!("http://{addr}/metrics");
    let gauge = |metrics: &str| -> Vec<String> {
        metrics
            .lines()
            .filter(|l| l.starts_with("sagaflow_sagas_unloaded_version"))
            .map(str::to_string)
            .collect()
    };
    let expected = format!("sagaflow_sagas_unloaded_version{{saga=\"{SAGA}\",version=\"1\"}} 2");
    eventually(
        "the coordinator reports the unloaded version",
        T,
        || async {
            let m = reqwest::get(&url)
                .await
                .map_err(|e| vec![e.to_string()])?
                .text()
                .await
                .map_err(|e| vec![e.to_string()])?;
            let g = gauge(&m);
            if g == [expected.clone()] {
                Ok(())
            } else {
                Err(g)
            }
        },
    )
    .await;

    // Once the v1 sagas have ended (here: by hand), the next check clears it; the
    // family stays, without samples.
    sqlx::query(
        "UPDATE sagas SET status = 'cancelled' WHERE id LIKE 'old-%' AND status = 'running'",
    )
    .execute(&env.pool)
    .await
    .unwrap();
    eventually("the next check clears the gauge", T, || async {
        let m = reqwest::get(&url)
            .await
            .map_err(|e| e.to_string())?
            .text()
            .await
            .map_err(|e| e.to_string())?;
        if m.contains("# TYPE sagaflow_sagas_unloaded_version gauge") && gauge(&m).is_empty() {
            Ok(())
        } else {
            Err(m)
        }
    })
    .await;
    stop.cancel();
    env.cleanup().await;
}
