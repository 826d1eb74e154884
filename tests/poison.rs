//! Poison and hostile conditions: over-limit messages, sagas whose stored state cannot
//! be decoded, Postgres sessions that stall, replicas that start at the same instant.

mod common;

use std::time::Duration;

use sagaflow::config::DatabaseSettings;
use sagaflow::store::{self, Class, StoreError};

/// A database name no other test uses.
fn fresh_db_url(prefix: &str) -> String {
    let tag = format!(
        "{prefix}_{}",
        &uuid::Uuid::now_v7().simple().to_string()[20..]
    );
    format!("{}/{tag}", common::pg_base())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_started_together_all_set_up_one_new_database() {
    let url = fresh_db_url("sft_startup");
    let go = std::sync::Arc::new(tokio::sync::Barrier::new(8));
    let replicas: Vec<_> = (0..8)
        .map(|_| {
            let (url, go) = (url.clone(), go.clone());
            tokio::spawn(async move {
                go.wait().await;
                let pool = store::connect(&url, 2).await?;
                sagaflow::tools::demo::prepare(&pool).await?;
                pool.close().await;
                Ok::<_, StoreError>(())
            })
        })
        .collect();
    let mut results = vec![];
    for r in replicas {
        results.push(r.await.expect("replica task"));
    }
    let check = store::connect(&url, 1).await;
    let tables: Option<i64> = match &check {
        Ok(pool) => sqlx::query_scalar(
            "SELECT count(*) FROM pg_tables WHERE tablename IN ('sagas', 'demo_effects')",
        )
        .fetch_one(pool)
        .await
        .ok(),
        Err(_) => None,
    };
    if let Ok(pool) = check {
        pool.close().await;
    }
    store::drop_database(&url).await.unwrap();
    for r in &results {
        assert!(r.is_ok(), "a replica failed to start: {r:?}");
    }
    assert_eq!(tables, Some(2));
}

#[tokio::test]
async fn pooled_sessions_carry_the_configured_timeouts() {
    let url = fresh_db_url("sft_session");
    let mut db = DatabaseSettings::new(&url, 2);
    db.lock_timeout_ms = 300;
    db.statement_timeout_ms = 20_000;
    db.idle_in_transaction_session_timeout_ms = 15_000;
    let pool = store::connect_with(&db).await.unwrap();
    let show = |name: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, String>(&format!("SHOW {name}"))
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(show("lock_timeout").await, "300ms");
    assert_eq!(show("statement_timeout").await, "20s");
    assert_eq!(show("idle_in_transaction_session_timeout").await, "15s");
    // A generic plan cached while a table is small would stay a sequential scan.
    assert_eq!(show("plan_cache_mode").await, "force_custom_plan");

    // A statement stuck behind another session's row lock fails after lock_timeout,
    // with an error a caller retries.
    sqlx::query("CREATE TABLE t (id int PRIMARY KEY)")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO t VALUES (1)")
        .execute(&pool)
        .await
        .unwrap();
    #[allow(clippy::disallowed_methods)] // a lock holder for the test, never cancelled
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("SELECT * FROM t WHERE id = 1 FOR UPDATE")
        .execute(&mut *holder)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let blocked = sqlx::query("UPDATE t SET id = 2 WHERE id = 1")
        .execute(&pool)
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    let e = StoreError::Sql {
        context: "test",
        source: blocked,
    };
    assert_eq!(e.class(), Class::Retry, "{e}");
    holder.rollback().await.unwrap();
    pool.close().await;
    store::drop_database(&url).await.unwrap();
}

#[tokio::test]
async fn connecting_to_nowhere_names_the_server_and_is_an_outage() {
    // Nothing listens on port 1.
    let mut db = DatabaseSettings::new("postgres://postgres@127.0.0.1:1/nowhere", 1);
    db.connect_timeout_ms = 2_000;
    let e = store::connect_with(&db).await.unwrap_err();
    let shown = e.to_string();
    assert!(shown.contains("127.0.0.1:1/nowhere"), "{shown}");
    assert!(e.is_outage(), "{shown}");
}

/// Writes a saga row whose `state` JSONB is `state`, straight into the store.
async fn write_raw_saga(pool: &sqlx::PgPool, id: &str, state: serde_json::Value) {
    sqlx::query(
        "INSERT INTO sagas (id, name, version, status, state) VALUES ($1, 'order_fulfillment', 1, 'running', $2)",
    )
    .bind(id)
    .bind(state)
    .execute(pool)
    .await
    .unwrap();
}

/// A real saga row (as the coordinator would write it), without a coordinator.
async fn write_started_saga(env: &common::TestEnv, id: &str) -> sagaflow::saga::state::SagaState {
    env.saga(id).definition("order_fulfillment").insert().await
}

use serde_json::json;

#[tokio::test]
async fn a_saga_whose_state_does_not_decode_is_reported_not_a_panic() {
    use sagaflow::store::sagas;
    let env = common::TestEnv::new(&[("order.toml", common::ORDER)]).await;
    write_raw_saga(&env.pool, "bad", json!({"garbage": true})).await;
    let good = write_started_saga(&env, "good").await;
    // The state of another saga under this id: acting on it would write into "good".
    write_raw_saga(&env.pool, "twin", serde_json::to_value(&good).unwrap()).await;

    let err = sagas::get(&env.pool, "bad").await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with("stored state of saga bad is unreadable: "),
        "{err}"
    );
    assert!(!err.is_transient());
    assert!(matches!(err, StoreError::Corrupt { ref id, .. } if id == "bad"));
    let u = sagas::read(&env.pool, "bad")
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(u.saga.as_deref(), Some("order_fulfillment"));
    assert_eq!(u.status.as_deref(), Some("running"));
    assert!(u.reason.contains("missing field"), "{}", u.reason);
    let twin = sagas::read(&env.pool, "twin")
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(twin.reason.contains("names saga `good`"), "{}", twin.reason);
    assert!(sagas::get(&env.pool, "good").await.unwrap().is_some());
    assert!(sagaflow::store::history::all(&env.pool, "bad")
        .await
        .unwrap()
        .is_empty());

    // Locking a batch that holds it does not fail the batch.
    let mut tx = sagaflow::store::begin(&env.pool).await.unwrap();
    let ids: Vec<String> = ["bad", "good", "twin"].map(String::from).to_vec();
    let locked = sagas::lock(&mut tx, &ids).await.unwrap();
    assert_eq!(locked.len(), 3);
    assert_eq!(locked.sagas.len(), 1);
    let mut unreadable: Vec<&str> = locked.unreadable.iter().map(|u| u.id.as_str()).collect();
    unreadable.sort();
    assert_eq!(unreadable, ["bad", "twin"]);
    tx.rollback().await.unwrap();

    // The listing shows every row; the broken ones say so.
    let rows = sagas::list(&env.pool, &Default::default(), 50)
        .await
        .unwrap();
    let by_id = |id: &str| rows.iter().find(|r| r.id == id).unwrap().unreadable.clone();
    assert!(by_id("bad").is_some());
    assert!(by_id("twin").is_some());
    assert_eq!(by_id("good"), None);
    env.cleanup().await;
}

#[tokio::test]
async fn the_coordinator_dead_letters_inputs_for_an_unreadable_saga_and_goes_on() {
    const T: Duration = Duration::from_secs(30);
    let env = common::TestEnv::running(&[("order.toml", common::ORDER)]).await;
    write_raw_saga(&env.pool, "bad", json!({"garbage": true})).await;
    let client = env.client().await;
    let dlq = env.names.dlq_coordinator();
    // The cancel and a start of another saga, likely in one batch.
    client.cancel("bad", "poison").await.unwrap();
    client
        .start("order_fulfillment", json!({}), common::id("fine"))
        .await
        .unwrap();
    let (reason, body) = env.get_dead_letter(&dlq, T).await;
    assert!(
        reason.starts_with("stored state of saga bad is unreadable: "),
        "{reason}"
    );
    assert!(String::from_utf8_lossy(&body).contains("\"cancel\":true"));
    env.wait_status("fine", "completed", T).await;
    // Again, alone in its batch, and the coordinator is still consuming.
    client.signal("bad", "approve", json!(1)).await.unwrap();
    let (reason, _) = env.get_dead_letter(&dlq, T).await;
    assert!(reason.contains("saga bad is unreadable"), "{reason}");
    client
        .start("order_fulfillment", json!({}), common::id("after"))
        .await
        .unwrap();
    env.wait_status("after", "completed", T).await;
    assert_eq!(env.depth(&dlq).await, 0);

    // Over-limit messages are dead-lettered with the limit named, before parsing.
    let deep = format!(
        r#"{{"id": "deep", "input": {}1{}}}"#,
        "[".repeat(40),
        "]".repeat(40)
    );
    client
        .publish_raw(&env.names.start(), "order_fulfillment", deep.as_bytes())
        .await
        .unwrap();
    let (reason, _) = env.get_dead_letter(&dlq, T).await;
    assert_eq!(
        reason,
        "start body is nested more than 32 levels deep; limits.json_depth is 32"
    );
    let big = json!({"saga_id": "fine", "signal": "x", "payload": "x".repeat(1 << 20)});
    client
        .publish_raw(&env.names.signals(), "", big.to_string().as_bytes())
        .await
        .unwrap();
    let (reason, _) = env.get_dead_letter(&dlq, T).await;
    assert_eq!(
        reason,
        "signal payload is 1048578 bytes; limits.payload_bytes is 1048576"
    );
    let huge = vec![b' '; (2 << 20) + 1];
    client
        .publish_raw(&env.names.results(), "coordinator", &huge)
        .await
        .unwrap();
    let (reason, _) = env.get_dead_letter(&dlq, T).await;
    assert_eq!(
        reason,
        "result body is 2097153 bytes; limits.message_bytes is 2097152"
    );
    assert!(env.status("deep").await.is_none());

    // The client refuses the same locally, with the same reason.
    let err = client
        .start(
            "order_fulfillment",
            json!({"blob": "x".repeat(1 << 20)}),
            common::id("blob"),
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "start input is 1048587 bytes; limits.payload_bytes is 1048576"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn the_api_answers_413_and_422_and_shows_unreadable_sagas() {
    use reqwest::StatusCode;
    let env = common::TestEnv::new(&[("order.toml", common::ORDER)]).await;
    write_raw_saga(&env.pool, "bad", json!({"garbage": true})).await;
    write_started_saga(&env, "good").await;
    let mut settings = env.settings.clone();
    settings.limits.payload_bytes = 1000;
    settings.limits.message_bytes = 4000;
    let stop = tokio_util::sync::CancellationToken::new();
    let base = common::serve_api(&env, &settings, &stop).await;
    let http = reqwest::Client::new();
    let post = |path: &str, body: String| {
        http.post(format!("{base}{path}"))
            .header("content-type", "application/json")
            .header("x-sagaflow-request", "1")
            .body(body)
            .send()
    };
    let answer = |r: reqwest::Response| async move {
        let code = r.status();
        let v: serde_json::Value = r.json().await.unwrap_or_default();
        (code, v)
    };

    let input = json!({"saga": "order_fulfillment", "input": {"blob": "x".repeat(2000)}});
    let (code, v) = answer(post("/api/sagas", input.to_string()).await.unwrap()).await;
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert_eq!(v["error"]["code"], "payload_too_large");
    assert_eq!(
        v["error"]["message"],
        "start input is 2011 bytes; limits.payload_bytes is 1000"
    );
    let body = json!({"saga": "order_fulfillment", "input": "x".repeat(5000)}).to_string();
    let (code, v) = answer(post("/api/sagas", body).await.unwrap()).await;
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .ends_with("limits.message_bytes is 4000"),
        "{v}"
    );
    let deep = format!(
        r#"{{"saga": "order_fulfillment", "input": {}{}}}"#,
        "[".repeat(40),
        "]".repeat(40)
    );
    let (code, v) = answer(post("/api/sagas", deep).await.unwrap()).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["code"], "json_too_deep");
    assert_eq!(
        v["error"]["message"],
        "request body is nested more than 32 levels deep; limits.json_depth is 32"
    );
    let id = json!({"saga": "order_fulfillment", "id": "x".repeat(201)}).to_string();
    let (code, v) = answer(post("/api/sagas", id).await.unwrap()).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("limits.id_bytes"));
    let signal = json!({"name": "go", "payload": "x".repeat(1500)}).to_string();
    let (code, v) = answer(post("/api/sagas/good/signal", signal).await.unwrap()).await;
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("signal payload is 1502 bytes"));
    let skip = json!({"action": "skip", "output": "x".repeat(1500)}).to_string();
    let (code, v) = answer(post("/api/sagas/good/actions", skip).await.unwrap()).await;
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE, "{v}");

    // The unreadable saga: shown with its reason, its history readable, the list whole.
    let get = |path: String| http.get(format!("{base}{path}")).send();
    let (code, v) = answer(get("/api/sagas/bad".into()).await.unwrap()).await;
    assert_eq!(code, StatusCode::OK, "{v}");
    assert_eq!(v["state"], serde_json::Value::Null);
    assert_eq!(v["unreadable"]["id"], "bad");
    assert_eq!(v["unreadable"]["status"], "running");
    assert!(v["unreadable"]["reason"]
        .as_str()
        .unwrap()
        .contains("missing field"));
    let (code, _) = answer(get("/api/sagas/bad/history".into()).await.unwrap()).await;
    assert_eq!(code, StatusCode::OK);
    let (code, v) = answer(get("/api/sagas".into()).await.unwrap()).await;
    assert_eq!(code, StatusCode::OK, "{v}");
    let rows = v["sagas"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for r in rows {
        assert_eq!(r["unreadable"].is_string(), r["id"] == "bad", "{r}");
    }
    let (code, v) = answer(get("/api/sagas/good".into()).await.unwrap()).await;
    assert_eq!((code, &v["state"]["id"]), (StatusCode::OK, &json!("good")));
    let (code, v) = answer(post("/api/sagas/bad/cancel", "{}".into()).await.unwrap()).await;
    assert_eq!(code, StatusCode::INTERNAL_SERVER_ERROR, "{v}");
    assert_eq!(v["error"]["code"], "saga_unreadable");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("stored state of saga bad is unreadable"));
    stop.cancel();
    env.cleanup().await;
}

#[tokio::test]
async fn the_cli_shows_an_unreadable_saga_with_the_reason_and_fails() {
    let env = common::TestEnv::new(&[("order.toml", common::ORDER)]).await;
    write_raw_saga(&env.pool, "bad", json!({"garbage": true})).await;
    write_started_saga(&env, "good").await;
    let run = |args: &'static [&'static str]| {
        let child_env = env.child_env();
        async move {
            let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sagaflow"))
                .args(args)
                .envs(child_env)
                .output()
                .await
                .unwrap();
            let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            (out.status.code(), text(&out.stdout), text(&out.stderr))
        }
    };
    let (code, out, err) = run(&["sagas", "show", "bad"]).await;
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.contains("status   unreadable"), "{out}");
    assert!(out.contains("missing field"), "{out}");
    assert!(
        err.contains("stored state of saga bad is unreadable"),
        "{err}"
    );
    let (code, out, _) = run(&["sagas", "show", "bad", "--json"]).await;
    assert_eq!(code, Some(1));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["unreadable"]["id"], "bad");
    let (code, out, err) = run(&["sagas", "list"]).await;
    assert_eq!(code, Some(0), "{err}");
    let line = |id: &str| {
        out.lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_default()
            .to_string()
    };
    assert!(line("bad ").contains("unreadable"), "{out}");
    assert!(line("good ").contains("running"), "{out}");
    // `status` is the deprecated spelling of `sagas show`: it still works for one release.
    let (code, _, _) = run(&["status", "good"]).await;
    assert_eq!(code, Some(0));
    env.cleanup().await;
}
