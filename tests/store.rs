//! The store against Postgres alone (no broker): the `row_version` fence, the outbox's
//! order and lease, and `SKIP LOCKED` claims. Each test has a database of its own and
//! its body runs in milliseconds; rows come from the factory (`env.saga`,
//! `env.schedule`) and the store's own writes.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::Utc;
use common::{TestEnv, ORDER};
use sagaflow::saga::state::SagaStatus;
use sagaflow::store::batch::{self, BatchWrite};
use sagaflow::store::outbox::{self, OutboxMessage};
use sagaflow::store::sagas::{self, SagaWrite};
use sagaflow::store::{self, schedules, Class, StoreError};
use serde_json::json;

async fn env() -> TestEnv {
    TestEnv::database_only(&[("order.toml", ORDER)]).await
}

/// `n` distinct outbox messages, `m0` … by routing key; the odd ones carry a trace
/// context (rows written before it existed have none).
fn messages(n: usize) -> Vec<OutboxMessage> {
    (0..n)
        .map(|i| OutboxMessage {
            exchange: "ns.tasks".into(),
            routing_key: format!("m{i}"),
            body: format!("body {i}").into_bytes(),
            mandatory: true,
            traceparent: (i % 2 == 1).then(|| format!("00-{:032x}-00f067aa0ba902b7-01", i + 1)),
        })
        .collect()
}

fn keys(rows: &[outbox::OutboxRow]) -> Vec<String> {
    rows.iter().map(|r| r.message.routing_key.clone()).collect()
}

/// Outbox rows written (and committed) with `lease`.
async fn write_outbox(env: &TestEnv, n: usize, lease: Duration) -> Vec<outbox::OutboxRow> {
    static OWNERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let id = format!(
        "owner-{}",
        OWNERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let def = env.catalog.latest("order_fulfillment").unwrap();
    let start = sagaflow::saga::machine::start(&def, &id, json!({}), None, Utc::now());
    let mut tx = store::begin(&env.pool).await.unwrap();
    let write = BatchWrite {
        new: vec![SagaWrite {
            state: &start.state,
            fence: None,
        }],
        outbox: messages(n).into_iter().map(|m| (id.as_str(), m)).collect(),
        lease,
        ..BatchWrite::default()
    };
    let written = batch::write(&mut tx, write).await.unwrap();
    tx.commit().await.unwrap();
    written.outbox
}

/// Writes `changed` sagas in one batch, as the coordinator does.
async fn update(tx: &mut store::Tx, changed: Vec<SagaWrite<'_>>) -> Result<(), StoreError> {
    let write = BatchWrite {
        changed,
        ..BatchWrite::default()
    };
    batch::write(tx, write).await.map(|_| ())
}

/// Creates a saga in one batch, as the coordinator does.
async fn insert(tx: &mut store::Tx, new: SagaWrite<'_>) {
    let write = BatchWrite {
        new: vec![new],
        ..BatchWrite::default()
    };
    batch::write(tx, write).await.unwrap();
}

#[tokio::test]
async fn a_write_with_a_stale_row_version_is_a_conflict_and_changes_nothing() {
    let env = env().await;
    env.saga("fenced")
        .definition("order_fulfillment")
        .insert()
        .await;
    // Two writers read the same row.
    let read = sagas::get(&env.pool, "fenced").await.unwrap().unwrap();
    let seen = read.row_version;
    let mut first = read.state.clone();
    first.signals.insert("writer".into(), vec![json!(1)]);
    let mut tx = store::begin(&env.pool).await.unwrap();
    let write = SagaWrite {
        state: &first,
        fence: Some(read.fence()),
    };
    update(&mut tx, vec![write]).await.unwrap();
    tx.commit().await.unwrap();

    // The second still holds the version it read: fenced out.
    let mut second = read.state.clone();
    second.signals.insert("writer".into(), vec![json!(2)]);
    second.status = SagaStatus::Completed;
    let mut tx = store::begin(&env.pool).await.unwrap();
    let stale = SagaWrite {
        state: &second,
        fence: Some(read.fence()),
    };
    let e = update(&mut tx, vec![stale]).await.unwrap_err();
    assert!(
        matches!(&e, StoreError::Conflict(ids) if ids == "fenced"),
        "{e}"
    );
    assert_eq!(e.class(), Class::Retry, "a fence conflict is retried");
    drop(tx);

    let now = sagas::get(&env.pool, "fenced").await.unwrap().unwrap();
    assert_eq!(now.row_version, seen + 1);
    assert_eq!(now.state, first, "the first write stands");
    assert_eq!(env.status("fenced").await.as_deref(), Some("running"));
    env.cleanup().await;
}

#[tokio::test]
async fn a_batch_with_one_stale_write_is_a_conflict_and_its_transaction_writes_nothing() {
    let env = env().await;
    for id in ["a", "b"] {
        env.saga(id).definition("order_fulfillment").insert().await;
    }
    let a = sagas::get(&env.pool, "a").await.unwrap().unwrap();
    let b = sagas::get(&env.pool, "b").await.unwrap().unwrap();
    let (mut a2, mut b2) = (a.state.clone(), b.state.clone());
    a2.signals.insert("changed".into(), vec![json!(true)]);
    b2.signals.insert("changed".into(), vec![json!(true)]);
    let mut tx = store::begin(&env.pool).await.unwrap();
    let writes = [
        SagaWrite {
            state: &a2,
            fence: Some(a.fence()),
        },
        SagaWrite {
            state: &b2,
            fence: Some(sagas::Fence {
                version: b.row_version - 1,
                ..b.fence()
            }),
        },
    ];
    let e = update(&mut tx, writes.into()).await.unwrap_err();
    assert!(matches!(e, StoreError::Conflict(_)), "{e}");
    // The caller gives the transaction up, as the coordinator does on any error.
    tx.rollback().await.unwrap();
    for before in [a, b] {
        let after = sagas::get(&env.pool, &before.state.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (after.row_version, after.state),
            (before.row_version, before.state)
        );
    }
    env.cleanup().await;
}

#[tokio::test]
async fn outbox_rows_come_back_in_insertion_order_and_a_claim_holds_for_its_lease() {
    let env = env().await;
    // Written by a coordinator that holds them for 60 s: not the sweeper's to take.
    let held = write_outbox(&env, 3, Duration::from_secs(60)).await;
    assert_eq!(keys(&held), ["m0", "m1", "m2"]);
    assert!(held.windows(2).all(|w| w[0].id < w[1].id), "{held:?}");
    let lease = Duration::from_secs(60);
    assert!(outbox::claim_expired(&env.pool, lease, 100)
        .await
        .unwrap()
        .is_empty());
    outbox::delete(&env.pool, &held.iter().map(|r| r.id).collect::<Vec<_>>())
        .await
        .unwrap();

    // Written by a coordinator whose lease ran out at once (it died before publishing).
    let orphans = write_outbox(&env, 5, Duration::ZERO).await;
    let first = outbox::claim_expired(&env.pool, lease, 2).await.unwrap();
    assert_eq!(keys(&first), ["m0", "m1"], "oldest first, up to the limit");
    assert_eq!(first[0].message, orphans[0].message);
    assert_eq!(first[1].message, orphans[1].message, "with its traceparent");
    assert!(first[1].message.traceparent.is_some());
    let rest = outbox::claim_expired(&env.pool, lease, 100).await.unwrap();
    assert_eq!(keys(&rest), ["m2", "m3", "m4"]);
    // Within the lease no second claimer gets any of them.
    assert!(outbox::claim_expired(&env.pool, lease, 100)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(outbox::backlog(&env.pool).await.unwrap(), 5);
    env.cleanup().await;
}

#[tokio::test]
async fn concurrent_outbox_claims_skip_rows_another_transaction_holds() {
    let env = env().await;
    let rows = write_outbox(&env, 6, Duration::ZERO).await;
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    // A claimer mid-transaction holds the first three rows.
    #[allow(clippy::disallowed_methods)] // a lock holder for the test, never cancelled
    let mut holder = env.pool.begin().await.unwrap();
    sqlx::query("SELECT id FROM outbox WHERE id = ANY($1) FOR UPDATE")
        .bind(&ids[..3])
        .execute(&mut *holder)
        .await
        .unwrap();
    let lease = Duration::from_secs(60);
    let began = std::time::Instant::now();
    let free = outbox::claim_expired(&env.pool, lease, 100).await.unwrap();
    assert!(began.elapsed() < Duration::from_secs(1), "it did not wait");
    assert_eq!(keys(&free), ["m3", "m4", "m5"]);
    holder.rollback().await.unwrap();
    // Two claimers at once: disjoint sets that together hold every row.
    let (a, b) = tokio::join!(
        outbox::claim_expired(&env.pool, lease, 100),
        outbox::claim_expired(&env.pool, lease, 100)
    );
    let (a, b) = (keys(&a.unwrap()), keys(&b.unwrap()));
    let (sa, sb): (BTreeSet<_>, BTreeSet<_>) =
        (a.iter().cloned().collect(), b.iter().cloned().collect());
    assert!(sa.is_disjoint(&sb), "{a:?} and {b:?}");
    let all: BTreeSet<String> = sa.union(&sb).cloned().collect();
    assert_eq!(all, ["m0", "m1", "m2"].map(String::from).into());
    env.cleanup().await;
}

#[tokio::test]
async fn two_transactions_lock_disjoint_sets_of_due_sagas() {
    let env = env().await;
    let now = Utc::now();
    let an_hour_ago = now - chrono::Duration::hours(1);
    for i in 0..6 {
        env.saga(&format!("due-{i}"))
            .definition("order_fulfillment")
            .wake_at(Some(an_hour_ago))
            .insert()
            .await;
    }
    env.saga("later")
        .definition("order_fulfillment")
        .wake_at(Some(now + chrono::Duration::hours(1)))
        .insert()
        .await;
    let mut a = store::begin(&env.pool).await.unwrap();
    let mut b = store::begin(&env.pool).await.unwrap();
    let first = sagas::lock_due(&mut a, now, 4).await.unwrap().ids();
    let began = std::time::Instant::now();
    let second = sagas::lock_due(&mut b, now, 100).await.unwrap().ids();
    assert!(began.elapsed() < Duration::from_secs(1), "it did not wait");
    assert_eq!(first.len(), 4, "{first:?}");
    let (sa, sb): (BTreeSet<_>, BTreeSet<_>) = (
        first.iter().cloned().collect(),
        second.iter().cloned().collect(),
    );
    assert!(sa.is_disjoint(&sb), "{first:?} and {second:?}");
    let all: BTreeSet<String> = sa.union(&sb).cloned().collect();
    assert_eq!(all, (0..6).map(|i| format!("due-{i}")).collect());
    // Once the first lets go, its rows are due for the next scan again.
    a.rollback().await.unwrap();
    let mut c = store::begin(&env.pool).await.unwrap();
    let again: BTreeSet<String> = sagas::lock_due(&mut c, now, 100)
        .await
        .unwrap()
        .ids()
        .into_iter()
        .collect();
    assert_eq!(again, sa);
    drop((b, c));
    env.cleanup().await;
}

#[tokio::test]
async fn two_transactions_lock_disjoint_sets_of_due_schedules() {
    let env = env().await;
    let now = Utc::now();
    for i in 0..4 {
        env.schedule(&format!("due{i}"))
            .saga("order_fulfillment")
            .next_fire_at(Some(now - chrono::Duration::minutes(1)))
            .insert()
            .await;
    }
    env.schedule("paused")
        .saga("order_fulfillment")
        .next_fire_at(Some(now - chrono::Duration::minutes(1)))
        .paused()
        .insert()
        .await;
    let loaded = ["order_fulfillment".to_string()];
    let names = |rows: Vec<schedules::ScheduleRow>| -> BTreeSet<String> {
        rows.into_iter().map(|r| r.name).collect()
    };
    let mut a = store::begin(&env.pool).await.unwrap();
    let mut b = store::begin(&env.pool).await.unwrap();
    let first = names(schedules::lock_due(&mut a, &loaded, now, 2).await.unwrap());
    let second = names(
        schedules::lock_due(&mut b, &loaded, now, 100)
            .await
            .unwrap(),
    );
    assert_eq!(first.len(), 2, "{first:?}");
    assert!(first.is_disjoint(&second), "{first:?} and {second:?}");
    let all: BTreeSet<String> = first.union(&second).cloned().collect();
    assert_eq!(all, (0..4).map(|i| format!("due{i}")).collect());
    drop((a, b));
    env.cleanup().await;
}

/// The input is written once, in a column of its own: later writes of the row do not
/// carry it, reads put it back, and a row stored before the column existed (input
/// inside `state`) reads the same and moves its input on its first update.
#[tokio::test]
async fn the_input_is_stored_once_and_rows_from_before_the_input_column_still_read() {
    let env = env().await;
    let big: Vec<String> = (0..1000).map(|i| format!("r{i}@example.com")).collect();
    let def = env.catalog.latest("order_fulfillment").unwrap();
    let start =
        sagaflow::saga::machine::start(&def, "new", json!({"to": big}), None, chrono::Utc::now());
    let mut tx = store::begin(&env.pool).await.unwrap();
    let write = SagaWrite {
        state: &start.state,
        fence: None,
    };
    insert(&mut tx, write).await;
    tx.commit().await.unwrap();
    let (in_state, in_column): (bool, bool) =
        sqlx::query_as("SELECT state ? 'input', input IS NOT NULL FROM sagas WHERE id = 'new'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!((in_state, in_column), (false, true));
    let read = sagas::get(&env.pool, "new").await.unwrap().unwrap();
    assert_eq!(
        read.state, start.state,
        "the input is read back into the state"
    );

    // A row as an older version wrote it: input inside state, no column.
    env.saga("old")
        .definition("order_fulfillment")
        .input(json!({"order": 9}))
        .insert()
        .await;
    sqlx::query("UPDATE sagas SET input = NULL, state = state || '{\"input\": {\"order\": 9}}' WHERE id = 'old'")
        .execute(&env.pool)
        .await
        .unwrap();
    let old = sagas::get(&env.pool, "old").await.unwrap().unwrap();
    assert_eq!(old.state.input, json!({"order": 9}));
    let mut changed = old.state.clone();
    changed.signals.insert("x".into(), vec![json!(1)]);
    let mut tx = store::begin(&env.pool).await.unwrap();
    let write = SagaWrite {
        state: &changed,
        fence: Some(old.fence()),
    };
    update(&mut tx, vec![write]).await.unwrap();
    tx.commit().await.unwrap();
    let (in_state, column): (bool, Option<serde_json::Value>) =
        sqlx::query_as("SELECT state ? 'input', input FROM sagas WHERE id = 'old'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!((in_state, column), (false, Some(json!({"order": 9}))));
    assert_eq!(
        sagas::get(&env.pool, "old").await.unwrap().unwrap().state,
        changed
    );
    env.cleanup().await;
}

#[tokio::test]
async fn a_batch_write_leaves_out_every_row_of_a_new_saga_whose_id_was_taken() {
    let env = env().await;
    env.saga("taken")
        .definition("order_fulfillment")
        .insert()
        .await;
    env.saga("changed")
        .definition("order_fulfillment")
        .insert()
        .await;
    let before = sagas::get(&env.pool, "changed").await.unwrap().unwrap();
    let history_before = store::history::all(&env.pool, "taken").await.unwrap().len();

    let def = env.catalog.latest("order_fulfillment").unwrap();
    let now = Utc::now();
    let fresh = sagaflow::saga::machine::start(&def, "fresh", json!({}), None, now);
    let again = sagaflow::saga::machine::start(&def, "taken", json!({"other": 1}), None, now);
    let mut moved = before.state.clone();
    moved.signals.insert("seen".into(), vec![json!(1)]);
    let history: Vec<(&str, &sagaflow::saga::machine::HistoryEntry)> = fresh
        .history
        .iter()
        .map(|h| ("fresh", h))
        .chain(again.history.iter().map(|h| ("taken", h)))
        .chain(fresh.history.iter().map(|h| ("changed", h)))
        .collect();
    let counter = |saga: &'static str, value: f64| {
        let delta = sagaflow::store::counters::Delta {
            name: "sagaflow_test_total",
            labels: String::new(),
            value,
        };
        (saga, delta)
    };
    let mut tx = store::begin(&env.pool).await.unwrap();
    let write = BatchWrite {
        new: vec![
            SagaWrite {
                state: &fresh.state,
                fence: None,
            },
            SagaWrite {
                state: &again.state,
                fence: None,
            },
        ],
        changed: vec![SagaWrite {
            state: &moved,
            fence: Some(before.fence()),
        }],
        history,
        counters: vec![
            counter("fresh", 1.0),
            counter("taken", 10.0),
            counter("changed", 100.0),
        ],
        outbox: messages(3)
            .into_iter()
            .zip(["fresh", "taken", "changed"])
            .map(|(m, id)| (id, m))
            .collect(),
        lease: Duration::from_secs(60),
    };
    let written = batch::write(&mut tx, write).await.unwrap();
    tx.commit().await.unwrap();

    assert_eq!(
        written.inserted,
        ["fresh"],
        "the taken id is not created again"
    );
    assert_eq!(
        keys(&written.outbox),
        ["m0", "m2"],
        "the taken id's message is left out"
    );
    let stored: Vec<String> = sqlx::query_scalar("SELECT routing_key FROM outbox ORDER BY id")
        .fetch_all(&env.pool)
        .await
        .unwrap();
    assert_eq!(stored, ["m0", "m2"]);
    let taken = sagas::get(&env.pool, "taken").await.unwrap().unwrap();
    assert_ne!(
        taken.state.input,
        json!({"other": 1}),
        "the stored saga stands"
    );
    assert_eq!(
        store::history::all(&env.pool, "taken").await.unwrap().len(),
        history_before,
        "no history for the taken id"
    );
    assert_eq!(
        store::history::all(&env.pool, "fresh").await.unwrap().len(),
        fresh.history.len()
    );
    let total: f64 = sqlx::query_scalar(
        "SELECT sum(value) FROM metric_counters WHERE name = 'sagaflow_test_total'",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(
        total, 101.0,
        "the counters of the created and the changed saga only"
    );
    let after = sagas::get(&env.pool, "changed").await.unwrap().unwrap();
    assert_eq!(
        (after.row_version, after.state),
        (before.row_version + 1, moved)
    );
    env.cleanup().await;
}

#[tokio::test]
async fn relaxed_writes_leave_the_sessions_commit_setting_as_it_was() {
    let env = env().await;
    // One connection, so the check runs on the session the writes used.
    let pool = store::connect(&env.settings.database.url, 1).await.unwrap();
    let rows = write_outbox(&env, 2, Duration::from_secs(60)).await;
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    outbox::delete(&pool, &ids).await.unwrap();
    let recorded = sagaflow::store::ledger::record(
        &pool,
        &[sagaflow::store::ledger::Completion {
            saga_id: "s".into(),
            key: "s:a:action".into(),
            task_id: "t".into(),
            output: json!({"ok": true}),
        }],
    )
    .await
    .unwrap();
    assert_eq!(recorded.get("s:a:action"), Some(&json!({"ok": true})));
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "the relaxed delete deleted");
    let setting: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        setting, "on",
        "set for the statement's own transaction only"
    );
    pool.close().await;
    env.cleanup().await;
}

/// sqlx 0.8.6 raises its transaction depth only once `BEGIN` has answered, so a
/// `begin()` cancelled while it waits queues no `ROLLBACK`, and the pool hands out a
/// session still inside that transaction: later autocommit writes on it are never
/// committed (transact-rs/sqlx#4393). `store::begin` finishes every `BEGIN` it sends.
#[tokio::test]
async fn a_begin_cancelled_at_any_point_leaves_no_transaction_open_on_the_pooled_session() {
    let env = env().await;
    sqlx::query("CREATE TABLE probe (round bigint)")
        .execute(&env.pool)
        .await
        .unwrap();
    // One connection, so every write runs on the session the cancelled begin used.
    let pool = store::connect(&env.settings.database.url, 1).await.unwrap();
    for round in 0..400i64 {
        // Cancelled after 0 to ~1 ms: at the acquire, with BEGIN in flight, or after.
        let after = Duration::from_micros(round as u64 % 200 * 5);
        let _ = tokio::time::timeout(after, store::begin(&pool)).await;
        sqlx::query("INSERT INTO probe VALUES ($1)")
            .bind(round)
            .execute(&pool)
            .await
            .unwrap();
        let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM probe WHERE round = $1")
            .bind(round)
            .fetch_one(&env.pool)
            .await
            .unwrap();
        assert_eq!(
            seen, 1,
            "round {round}: an autocommit write was not committed"
        );
    }
    pool.close().await;
    env.cleanup().await;
}

/// A `planned_once` pool plans the batch statement once per session; whatever the
/// statistics say (here none: tables never analysed, as in a fresh deployment) the
/// plan finds sagas by key inside a nested loop, never by a sequential scan
/// or a hash join that would read a grown table whole.
#[tokio::test]
async fn a_plan_made_once_finds_sagas_by_key_even_on_a_fresh_schema() {
    let env = env().await;
    let statement = include_str!("../src/store/sql/batch_write.sql");
    let plan = plan_made_once(&env, statement, "", 31).await;
    // By `sagas_pkey` or `sagas_created` (created_at, id): the fence names both.
    let by_key = ["sagas_pkey", "sagas_created"]
        .iter()
        .any(|index| plan.contains(&format!("Index Scan using {index} on sagas s")));
    assert!(by_key, "{plan}");
    assert!(!plan.contains("Seq Scan on sagas"), "{plan}");
    assert!(!plan.contains("Hash"), "{plan}");
    env.cleanup().await;
}

/// The plan a `planned_once` session makes for `statement` (prepared with the
/// parameter `types`, empty when its casts say), run with NULL for its `params`.
async fn plan_made_once(env: &TestEnv, statement: &str, types: &str, params: usize) -> String {
    let pool = store::planned_once(&env.pool, 1);
    let mut conn = pool.acquire().await.unwrap();
    sqlx::raw_sql(&format!("PREPARE p{types} AS {statement}"))
        .execute(&mut *conn)
        .await
        .unwrap();
    let nulls = vec!["NULL"; params].join(", ");
    let plan: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN EXECUTE p({nulls})"))
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    pool.close().await;
    plan.join("\n")
}

/// The worker's ledger lookup on a `planned_once` pool is a lookup by key even when
/// it is planned while the table is small and analysed (where a plan made once
/// would otherwise be a sequential scan, kept as the table grows).
#[tokio::test]
async fn ledger_plans_made_once_look_keys_up_by_index() {
    let env = env().await;
    sqlx::raw_sql(
        "INSERT INTO idempotency_ledger (key, task_id, output, saga_id) \
         SELECT 'k' || i, 't' || i, '{}', 's' FROM generate_series(1, 5) AS i; \
         ANALYZE idempotency_ledger",
    )
    .execute(&env.pool)
    .await
    .unwrap();
    let lookup = "SELECT key, output::text FROM idempotency_ledger WHERE key = ANY($1)";
    let plan = plan_made_once(&env, lookup, "(text[])", 1).await;
    assert!(plan.contains("Index"), "{plan}");
    assert!(!plan.contains("Seq Scan"), "{plan}");
    env.cleanup().await;
}
