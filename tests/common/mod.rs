//! Test harness: every test gets its own namespace and its own database, so tests run
//! in parallel against the real RabbitMQ and Postgres without seeing each other.
#![allow(dead_code)]

pub mod throwaway;
pub mod tls;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use sagaflow::broker::Names;
use sagaflow::config::Settings;
use sagaflow::saga::definition::Catalog;
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Start options naming the saga id.
pub fn id(s: &str) -> sagaflow::client::StartOptions {
    sagaflow::client::StartOptions {
        id: Some(s.to_string()),
        ..Default::default()
    }
}

pub const ORDER: &str = include_str!("../../sagas/order_fulfillment.toml");

pub fn amqp_url() -> String {
    std::env::var("SAGAFLOW_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

pub fn pg_base() -> String {
    std::env::var("SAGAFLOW_TEST_DATABASE_BASE")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// One isolated sagaflow deployment: namespace, database, definitions directory.
pub struct TestEnv {
    pub settings: Settings,
    pub pool: PgPool,
    pub names: Names,
    pub dir: PathBuf,
    pub catalog: Catalog,
    tasks: Vec<(&'static str, CancellationToken, JoinHandle<()>)>,
}

impl TestEnv {
    /// A fresh deployment with the given definitions (file name, TOML), on the
    /// machine's broker and Postgres, with a 1 s outbox lease so tests that kill a
    /// publisher see its rows republished quickly.
    pub async fn new(sagas: &[(&str, &str)]) -> TestEnv {
        let mut env = TestEnv::on(sagas, &amqp_url(), &pg_base()).await;
        env.settings.coordinator.outbox_lease_ms = 1000;
        env
    }

    /// Activities of this test's definitions that the demo worker hosts.
    pub fn activities(&self) -> Vec<String> {
        let hosted = sagaflow::tools::demo::worker(self.pool.clone()).activities();
        self.catalog
            .activities()
            .into_iter()
            .filter(|a| hosted.contains(a))
            .collect()
    }

    /// Environment for child `sagaflow` processes pointing at this deployment.
    pub fn child_env(&self) -> Vec<(String, String)> {
        let s = &self.settings;
        vec![
            ("SAGAFLOW__NAMESPACE".into(), s.namespace.clone()),
            (
                "SAGAFLOW__SAGAS_DIR".into(),
                s.sagas_dir.display().to_string(),
            ),
            ("SAGAFLOW__AMQP__URL".into(), s.amqp.url.clone()),
            ("SAGAFLOW__DATABASE__URL".into(), s.database.url.clone()),
            (
                "SAGAFLOW__COORDINATOR__OUTBOX_LEASE_MS".into(),
                s.coordinator.outbox_lease_ms.to_string(),
            ),
            (
                "SAGAFLOW__COORDINATOR__SWEEP_INTERVAL_MS".into(),
                s.coordinator.sweep_interval_ms.to_string(),
            ),
            (
                "SAGAFLOW__COORDINATOR__TIMER_POLL_MS".into(),
                s.coordinator.timer_poll_ms.to_string(),
            ),
            (
                "SAGAFLOW__WORKER__ACTIVITIES".into(),
                self.activities().join(","),
            ),
            ("RUST_LOG".into(), "info,sqlx=warn".into()),
        ]
    }

    /// A fresh deployment with a coordinator and the demo worker already running.
    pub async fn running(sagas: &[(&str, &str)]) -> TestEnv {
        let mut env = TestEnv::new(sagas).await;
        env.start_coordinator().await;
        env.start_worker().await;
        env
    }

    /// Runs a coordinator inside the test process; returns what its probes report.
    pub async fn start_coordinator(&mut self) -> sagaflow::health::Health {
        let c = sagaflow::coordinator::Coordinator::new(
            self.settings.clone(),
            self.catalog.clone(),
            self.pool.clone(),
        );
        let health = c.health.clone();
        let token = CancellationToken::new();
        let t = token.clone();
        self.tasks.push((
            "coordinator",
            token,
            tokio::spawn(async move { c.run(t).await }),
        ));
        self.wait_consumer(&self.names.coordinator_queue()).await;
        health
    }

    /// Runs the demo worker inside the test process.
    pub async fn start_worker(&mut self) {
        let w = sagaflow::tools::demo::worker(self.pool.clone());
        let token = CancellationToken::new();
        let mut settings = self.settings.clone();
        // Only the activities this test's sagas use: every task queue is a quorum queue,
        // and the broker's file handles bound how many can exist at once.
        settings.worker.activities = self.activities();
        let first = settings
            .worker
            .activities
            .first()
            .cloned()
            .expect("an activity");
        let (p, t) = (self.pool.clone(), token.clone());
        self.tasks.push((
            "worker",
            token,
            tokio::spawn(async move { w.run(settings, p, t).await }),
        ));
        self.wait_consumer(&self.names.task_queue(&first)).await;
    }

    /// Stops every in-process service of `kind` ("coordinator" or "worker") and waits
    /// until it has let go of the broker.
    pub async fn stop(&mut self, kind: &str) {
        let (stopping, kept): (Vec<_>, Vec<_>) =
            self.tasks.drain(..).partition(|(k, _, _)| *k == kind);
        self.tasks = kept;
        for (_, token, handle) in stopping {
            token.cancel();
            tokio::time::timeout(Duration::from_secs(30), handle)
                .await
                .expect("stops in time")
                .unwrap();
        }
    }

    pub async fn wait_consumer(&self, queue: &str) {
        let conn = self.connect().await;
        sagaflow::tools::launch::wait_for_consumer(&conn, queue, Duration::from_secs(30))
            .await
            .unwrap();
        conn.close("ok").await;
    }

    /// A connection for the library's broker functions.
    pub async fn connect(&self) -> sagaflow::broker::Connection {
        sagaflow::broker::connect(&self.settings.amqp.url, "sagaflow-test")
            .await
            .expect("amqp")
    }

    /// A plain lapin connection, for tests that poke the broker the way an outside
    /// client would (consume a task queue, nack, basic_get).
    pub async fn raw_connect(&self) -> lapin::Connection {
        lapin::Connection::connect(&self.settings.amqp.url, Default::default())
            .await
            .expect("amqp")
    }

    pub async fn client(&self) -> sagaflow::client::Client {
        sagaflow::client::Client::connect(&self.settings.amqp.url, &self.settings.namespace)
            .await
            .expect("client")
    }

    pub async fn status(&self, id: &str) -> Option<String> {
        sagaflow::store::sagas::get(&self.pool, id)
            .await
            .unwrap()
            .map(|s| s.state.status.to_string())
    }

    /// Writes a saga straight into the store in whatever state `state` is, with
    /// `wake_at` as given and `updated_at` an hour ago (the factory for states the
    /// engine itself would not leave behind).
    pub async fn insert_saga(
        &self,
        state: &sagaflow::saga::state::SagaState,
        wake_at: Option<chrono::DateTime<chrono::Utc>>,
    ) {
        sqlx::query(
            "INSERT INTO sagas (id, name, version, status, state, wake_at, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, now() - interval '1 hour', now() - interval '1 hour')",
        )
        .bind(&state.id)
        .bind(&state.saga)
        .bind(state.version as i32)
        .bind(state.status.as_str())
        .bind(serde_json::to_value(state).unwrap())
        .bind(wake_at)
        .execute(&self.pool)
        .await
        .unwrap();
    }

    /// Where saga `id` stands now, as an operator action issued for it would say.
    pub async fn issued_for(&self, id: &str) -> sagaflow::saga::machine::IssuedFor {
        let saga = sagaflow::store::sagas::get(&self.pool, id)
            .await
            .unwrap()
            .expect("the saga exists");
        let def = self
            .catalog
            .get(&saga.state.saga, saga.state.version)
            .expect("its definition is loaded");
        sagaflow::saga::machine::IssuedFor::of(&def, &saga.state)
    }

    /// Waits until every saga in `ids` has a terminal status; returns id -> status.
    pub async fn wait_terminal(
        &self,
        ids: &[String],
        within: Duration,
    ) -> BTreeMap<String, String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let rows: Vec<(String, String)> =
                sqlx::query_as("SELECT id, status FROM sagas WHERE id = ANY($1)")
                    .bind(ids)
                    .fetch_all(&self.pool)
                    .await
                    .unwrap();
            let done: BTreeMap<String, String> = rows
                .into_iter()
                .filter(|(_, s)| {
                    matches!(
                        s.as_str(),
                        "completed" | "compensated" | "failed" | "cancelled"
                    )
                })
                .collect();
            if done.len() == ids.len() {
                return done;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "only {} of {} sagas ended within {within:?}",
                    done.len(),
                    ids.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_status(&self, id: &str, status: &str, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let now = self.status(id).await;
            if now.as_deref() == Some(status) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "saga {id} is {now:?}, wanted {status} within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Nacks the next message of `queue` until the broker dead-letters it (delivery limit).
    pub async fn poison_next(&self, queue: &str) {
        use lapin::options::BasicNackOptions;
        let conn = self.raw_connect().await;
        let ch = conn.create_channel().await.unwrap();
        let mut c = ch
            .basic_consume(
                queue.into(),
                "nacker".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        for _ in 0..=self.settings.queues.delivery_limit {
            let d = tokio::time::timeout(Duration::from_secs(30), c.next())
                .await
                .expect("a task")
                .unwrap()
                .unwrap();
            d.nack(BasicNackOptions {
                multiple: false,
                requeue: true,
            })
            .await
            .unwrap();
        }
        let _ = conn.close(200, "ok".into()).await;
    }

    /// Waits until `queue` holds exactly `n` ready messages.
    pub async fn wait_depth(&self, queue: &str, n: u32) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while self.depth(queue).await != n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{queue} never held {n}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the history of `saga` contains `event`.
    pub async fn wait_history(&self, saga: &str, event: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !self.history(saga).await.iter().any(|e| e == event) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{saga} never reached {event}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// History event names of a saga, in order.
    pub async fn history(&self, id: &str) -> Vec<String> {
        sagaflow::store::sagas::history(&self.pool, id)
            .await
            .unwrap()
            .into_iter()
            .map(|h| h.event)
            .collect()
    }

    /// (activity, calls) of the demo effects of one saga, sorted by activity.
    pub async fn effects(&self, id: &str) -> Vec<(String, i32)> {
        sqlx::query_as(
            "SELECT activity, calls FROM demo_effects WHERE saga_id = $1 ORDER BY activity",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .unwrap()
    }

    /// The activities whose demo effects one saga applied, sorted.
    pub async fn effect_activities(&self, id: &str) -> Vec<String> {
        self.effects(id).await.into_iter().map(|(a, _)| a).collect()
    }

    /// Messages currently in `queue` (0 when it does not exist).
    pub async fn depth(&self, queue: &str) -> u32 {
        let conn = self.connect().await;
        let n = queue_depth(&conn, queue).await.unwrap_or(0);
        conn.close("ok").await;
        n
    }

    /// Waits for one message in `queue` and returns its reason header and body.
    pub async fn get_dead_letter(&self, queue: &str, within: Duration) -> (String, Vec<u8>) {
        let conn = self.connect().await;
        let mut browser = sagaflow::broker::browse::Browser::open(&conn, queue)
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(m) = browser.next().await.unwrap() {
                browser.remove(m.tag).await.unwrap();
                browser.finish().await.unwrap();
                conn.close("ok").await;
                return (m.reason.unwrap_or_else(|| "unknown".into()), m.body);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nothing dead-lettered in {queue} within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A queue bound to `<ns>.events` for `saga.#`; returns a consumer of it.
    pub async fn subscribe_events(&self) -> (lapin::Connection, lapin::Consumer) {
        let declarer = self.connect().await;
        sagaflow::broker::topology::declare_exchanges(&declarer, &self.names)
            .await
            .unwrap();
        declarer.close("declared").await;
        let conn = self.raw_connect().await;
        let ch = conn.create_channel().await.unwrap();
        let q = format!("{}.test.events", self.names.namespace());
        let opts = QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..Default::default()
        };
        ch.queue_declare(q.as_str().into(), opts, FieldTable::default())
            .await
            .unwrap();
        ch.queue_bind(
            q.as_str().into(),
            self.names.events().as_str().into(),
            "saga.#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        let c = ch
            .basic_consume(
                q.as_str().into(),
                "events".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        (conn, c)
    }

    /// Stops the in-process coordinators and workers started so far (a clean shutdown).
    pub async fn stop_services(&mut self) {
        for (_, token, handle) in self.tasks.drain(..) {
            token.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(15), handle).await;
        }
    }

    /// Stops in-process services, drops the database and deletes the namespace's queues.
    pub async fn cleanup(mut self) {
        self.stop_services().await;
        self.pool.close().await;
        let _ = sagaflow::store::drop_database(&self.settings.database.url).await;
        let conn = self.connect().await;
        // Every queue a coordinator or a demo worker may have declared here.
        let mut activities: Vec<String> = self.catalog.activities().into_iter().collect();
        activities.extend(sagaflow::tools::demo::worker(self.pool.clone()).activities());
        let _ = sagaflow::broker::topology::delete_namespace(&conn, &self.names, &activities).await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Ready messages in `queue` by a passive declare on a channel of its own; `None`
/// when it does not exist.
pub async fn queue_depth(conn: &sagaflow::broker::Connection, queue: &str) -> Option<u32> {
    let infos = sagaflow::broker::inspect::queue_infos(conn, &[queue.to_string()])
        .await
        .ok()?;
    infos.first().map(|q| q.ready)
}

/// Next event from an events consumer, as (saga_id, status).
pub async fn next_event(consumer: &mut lapin::Consumer, within: Duration) -> (String, String) {
    let d = tokio::time::timeout(within, consumer.next())
        .await
        .expect("event in time")
        .expect("stream open")
        .expect("delivery");
    d.ack(BasicAckOptions::default()).await.unwrap();
    let e: sagaflow::messages::SagaEvent = serde_json::from_slice(&d.data).unwrap();
    (e.saga_id, e.status)
}
