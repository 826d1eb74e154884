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
                sagaflow::demo::prepare(&pool).await?;
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
