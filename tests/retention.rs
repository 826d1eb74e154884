//! Retention end to end: coordinators delete ended sagas with their history and
//! ledger rows once their retention has passed, never a running one; `sagaflow sagas
//! purge` erases on demand.

mod common;

use std::time::Duration;

use common::{eventually, id, TestEnv};
use serde_json::json;

const T: Duration = Duration::from_secs(30);

/// Kept one second after it ends.
const BRIEF: &str = r#"
name = "brief"
version = 1
retention = "1s"
[[steps]]
name = "reserve"
activity = "inventory.reserve"
"#;

/// No retention of its own: takes `retention.default`, here `0` (for ever).
const KEPT: &str = r#"
name = "kept"
version = 1
[[steps]]
name = "reserve"
activity = "inventory.reserve"
"#;

async fn rows(env: &TestEnv, table: &str, column: &str, id: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table} WHERE {column} = $1"))
        .bind(id)
        .fetch_one(&env.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn ended_sagas_are_purged_after_their_retention_and_running_ones_never() {
    let mut env = TestEnv::new(&[("brief.toml", BRIEF), ("kept.toml", KEPT)]).await;
    env.settings.retention.default = "0".into();
    env.settings.retention.interval_ms = 100;
    env.start_coordinator().await;
    env.start_worker().await;
    let client = env.client().await;
    // A running saga of `brief` that last moved an hour ago: never purged.
    env.saga("brief-running")
        .definition("brief")
        .updated_at(chrono::Utc::now() - chrono::Duration::hours(1))
        .insert()
        .await;
    client.start("brief", json!({}), id("b-1")).await.unwrap();
    client.start("kept", json!({}), id("k-1")).await.unwrap();
    env.wait_status("k-1", "completed", T).await;
    env.wait_status("b-1", "completed", T).await;
    assert!(rows(&env, "saga_history", "saga_id", "b-1").await > 0);
    assert_eq!(rows(&env, "idempotency_ledger", "saga_id", "b-1").await, 1);

    eventually("b-1 purged a second after it ended", T, || async {
        match env.status("b-1").await {
            None => Ok(()),
            Some(status) => Err(status),
        }
    })
    .await;
    assert_eq!(rows(&env, "saga_history", "saga_id", "b-1").await, 0);
    assert_eq!(rows(&env, "idempotency_ledger", "saga_id", "b-1").await, 0);
    let purged: f64 = sqlx::query_scalar(
        "SELECT COALESCE(sum(value), 0) FROM metric_counters
         WHERE name = 'sagaflow_sagas_purged_total' AND labels = 'saga=\"brief\"'",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(purged, 1.0);
    assert_eq!(env.status("k-1").await.as_deref(), Some("completed"));
    assert_eq!(
        env.status("brief-running").await.as_deref(),
        Some("running")
    );
    client.close().await;
    env.cleanup().await;
}

fn cli(env: &TestEnv, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sagaflow"))
        .args(args)
        .envs(env.child_env())
        .output()
        .expect("sagaflow runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn sagas_purge_erases_on_demand_and_refuses_running_sagas() {
    let env = TestEnv::running(&[("kept.toml", KEPT)]).await;
    let client = env.client().await;
    for n in 1..=3 {
        client
            .start("kept", json!({"n": n}), id(&format!("k-{n}")))
            .await
            .unwrap();
    }
    for n in 1..=3 {
        env.wait_status(&format!("k-{n}"), "completed", T).await;
    }
    env.saga("k-running").definition("kept").insert().await;

    let (ok, out) = cli(&env, &["sagas", "purge"]);
    assert!(!ok && out.contains("give at least one of"), "{out}");
    let (ok, out) = cli(&env, &["sagas", "purge", "--id", "k-running"]);
    assert!(!ok && out.contains("only ended sagas are purged"), "{out}");

    let (ok, out) = cli(&env, &["sagas", "purge", "--saga", "kept", "--dry-run"]);
    assert!(ok && out.contains("3 saga(s) would be purged"), "{out}");
    assert_eq!(env.status("k-1").await.as_deref(), Some("completed"));

    let (ok, out) = cli(&env, &["sagas", "purge", "--id", "k-1"]);
    assert!(ok && out.contains("1 saga(s) purged"), "{out}");
    assert_eq!(env.status("k-1").await, None);
    assert_eq!(rows(&env, "saga_history", "saga_id", "k-1").await, 0);

    let (ok, out) = cli(
        &env,
        &["sagas", "purge", "--saga", "kept", "--status", "completed"],
    );
    assert!(ok && out.contains("2 saga(s) purged"), "{out}");
    assert_eq!(env.status("k-running").await.as_deref(), Some("running"));
    client.close().await;
    env.cleanup().await;
}

/// `POST /api/sagas/purge`: the same selection and refusals as the CLI.
#[tokio::test]
async fn the_api_purges_on_demand_with_the_same_refusals() {
    let env = TestEnv::running(&[("kept.toml", KEPT)]).await;
    let client = env.client().await;
    client.start("kept", json!({}), id("a-1")).await.unwrap();
    env.wait_status("a-1", "completed", T).await;
    env.saga("a-running").definition("kept").insert().await;
    let stop = tokio_util::sync::CancellationToken::new();
    let url = format!(
        "{}/api/sagas/purge",
        common::serve_api(&env, &env.settings, &stop).await
    );
    let http = reqwest::Client::new();
    let post = |body: serde_json::Value| {
        http.post(&url)
            .header("x-sagaflow-request", "1")
            .json(&body)
            .send()
    };
    let r = post(json!({})).await.unwrap();
    assert_eq!(r.status(), 400);
    let r = post(json!({"ids": ["a-running"]})).await.unwrap();
    assert_eq!(r.status(), 400);
    let dry: serde_json::Value = post(json!({"saga": "kept", "dry_run": true}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(dry["sagas"].as_array().map(Vec::len), Some(1), "{dry}");
    assert_eq!(env.status("a-1").await.as_deref(), Some("completed"));
    let done: serde_json::Value = post(json!({"ids": ["a-1"]}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(done["sagas"][0]["id"], "a-1", "{done}");
    assert_eq!(env.status("a-1").await, None);
    assert_eq!(env.status("a-running").await.as_deref(), Some("running"));
    stop.cancel();
    client.close().await;
    env.cleanup().await;
}
