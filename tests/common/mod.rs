//! Test harness: every test gets its own namespace and its own database, so tests run
//! in parallel against the real RabbitMQ and Postgres without seeing each other.
//!
//! - [`eventually`] (and [`wait_until`], the same wait without the panic) is the one
//!   way a test waits for something: a condition polled with a deadline, never a sleep.
//! - [`TestEnv`] is one deployment; its teardown (database, queues, directory) runs
//!   from [`TestEnv::cleanup`] or, when a test fails before that, from `Drop`.
//! - `factory` writes sagas and schedules in any state through the store
//!   ([`TestEnv::saga`], [`TestEnv::schedule`]).
#![allow(dead_code)]

pub mod factory;
pub mod throwaway;
pub mod tls;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;
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

/// The first pause between two looks of [`wait_until`]; it doubles up to
/// [`POLL_MAX`], so a quick condition is seen within milliseconds and a long wait
/// does not hammer the broker or the database.
const POLL_FIRST: Duration = Duration::from_millis(10);
const POLL_MAX: Duration = Duration::from_millis(100);

/// How long the harness's own waits (`wait_depth`, `wait_history`) give the engine.
const WAIT: Duration = Duration::from_secs(30);

/// The statuses a saga never leaves.
pub const TERMINAL: &[&str] = &["completed", "compensated", "failed", "cancelled"];

/// Waits until `probe` holds and returns what it found: `probe` answers `Ok(found)`
/// when the condition holds and `Err(seen)` while it does not, with what it saw.
/// Past `within` the test fails naming `what` and the last thing seen.
pub async fn eventually<T, D, F, Fut>(what: &str, within: Duration, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, D>>,
    D: Debug,
{
    match wait_until(within, probe).await {
        Ok(found) => found,
        Err(seen) => panic!("{what}: not within {within:?}; last seen: {seen:?}"),
    }
}

/// Serves the HTTP API of `env` with `settings` (the deployment's, perhaps changed:
/// tokens, limits, a broker user) on a free loopback port until `stop`; returns
/// `http://127.0.0.1:<port>`.
pub async fn serve_api(env: &TestEnv, settings: &Settings, stop: &CancellationToken) -> String {
    let state = sagaflow::api::ApiState::new(settings, env.catalog.clone(), env.pool.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(sagaflow::api::serve(listener, state, stop.clone()));
    format!("http://127.0.0.1:{port}")
}

/// [`eventually`] for a yes/no probe (nothing to report while it does not hold).
pub async fn eventually_holds<F, Fut>(what: &str, within: Duration, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    eventually(what, within, || {
        let holds = probe();
        async move {
            if holds.await {
                Ok(())
            } else {
                Err("not yet")
            }
        }
    })
    .await
}

/// [`eventually`] without the panic: `Err(last seen)` once `within` has passed. For
/// waits whose miss is a finding rather than a failure (the fault suite notes a
/// stall and lets its accounting judge).
pub async fn wait_until<T, D, F, Fut>(within: Duration, mut probe: F) -> Result<T, D>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, D>>,
{
    let deadline = tokio::time::Instant::now() + within;
    let mut pause = POLL_FIRST;
    loop {
        let seen = match probe().await {
            Ok(found) => return Ok(found),
            Err(seen) => seen,
        };
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(seen);
        }
        // The last look is at the deadline itself.
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(POLL_MAX);
    }
}

/// The value of one series (`name{labels}` exactly as exposed) in a Prometheus text
/// exposition; 0 when it is not there.
pub fn metric(exposition: &str, series: &str) -> u64 {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// Start options naming the saga id.
pub fn id(s: &str) -> sagaflow::client::StartOptions {
    sagaflow::client::StartOptions {
        id: Some(s.to_string()),
        ..Default::default()
    }
}

/// A sequential order saga (reserve, charge, ship): the tests assert on its order of
/// steps, so it is theirs, not the example in sagas/, which runs two steps in parallel.
pub const ORDER: &str = include_str!("order.toml");

/// Waits on a reserve (undone by a release), then on a signal `approved`.
pub const APPROVAL: &str = r#"
name = "approval"
version = 1
[[steps]]
name = "reserve"
activity = "inventory.reserve"
compensate = "inventory.release"
[[steps]]
name = "approve"
wait = "approved"
"#;

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
    /// False for a database-only deployment ([`TestEnv::database_only`]): it never
    /// touches the broker, so its teardown does not either.
    broker: bool,
    /// The teardown ran (explicitly, or from `Drop`); it runs once.
    cleaned: bool,
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

    /// A deployment for tests of the store and the coordinator's batches: its own
    /// database and definitions, no broker (asking it for one panics, and its teardown
    /// only drops the database).
    pub async fn database_only(sagas: &[(&str, &str)]) -> TestEnv {
        let mut env = TestEnv::on(sagas, &amqp_url(), &pg_base()).await;
        env.broker = false;
        env
    }

    fn needs_broker(&self) {
        assert!(
            self.broker,
            "a TestEnv::database_only deployment has no broker"
        );
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
        self.needs_broker();
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
        self.needs_broker();
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

    /// Runs the demo worker inside the test process; returns what its probes report.
    pub async fn start_worker(&mut self) -> sagaflow::health::Health {
        self.needs_broker();
        let w = sagaflow::tools::demo::worker(self.pool.clone());
        let health = w.health();
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
        health
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
        self.needs_broker();
        sagaflow::broker::connect(&self.settings.amqp.url, "sagaflow-test")
            .await
            .expect("amqp")
    }

    /// A plain lapin connection, for tests that poke the broker the way an outside
    /// client would (consume a task queue, nack, basic_get).
    pub async fn raw_connect(&self) -> lapin::Connection {
        self.needs_broker();
        lapin::Connection::connect(&self.settings.amqp.url, Default::default())
            .await
            .expect("amqp")
    }

    pub async fn client(&self) -> sagaflow::client::Client {
        self.needs_broker();
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
        let what = format!("{} sagas terminal", ids.len());
        eventually(&what, within, || async {
            let rows: Vec<(String, String)> =
                sqlx::query_as("SELECT id, status FROM sagas WHERE id = ANY($1)")
                    .bind(ids)
                    .fetch_all(&self.pool)
                    .await
                    .unwrap();
            let (done, open): (BTreeMap<String, String>, BTreeMap<String, String>) = rows
                .into_iter()
                .partition(|(_, s)| TERMINAL.contains(&s.as_str()));
            if done.len() == ids.len() {
                Ok(done)
            } else {
                Err(format!("{} ended; open: {open:?}", done.len()))
            }
        })
        .await
    }

    pub async fn wait_status(&self, id: &str, status: &str, within: Duration) {
        eventually(&format!("saga {id} {status}"), within, || async {
            match self.status(id).await {
                Some(s) if s == status => Ok(()),
                other => Err(other),
            }
        })
        .await
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
        eventually(&format!("{queue} holds {n}"), WAIT, || async {
            let depth = self.depth(queue).await;
            (depth == n).then_some(()).ok_or(depth)
        })
        .await
    }

    /// Waits until the history of `saga` contains `event`.
    pub async fn wait_history(&self, saga: &str, event: &str) {
        eventually(&format!("{saga} reaches {event}"), WAIT, || async {
            let history = self.history(saga).await;
            history
                .iter()
                .any(|e| e == event)
                .then_some(())
                .ok_or(history)
        })
        .await
    }

    /// History event names of a saga, in order.
    pub async fn history(&self, id: &str) -> Vec<String> {
        sagaflow::store::history::all(&self.pool, id)
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
        let browser = tokio::sync::Mutex::new(
            sagaflow::broker::browse::Browser::open(&conn, queue)
                .await
                .unwrap(),
        );
        let got = eventually(&format!("a dead letter in {queue}"), within, || async {
            let mut b = browser.lock().await;
            let m = b.next().await.unwrap().ok_or("nothing")?;
            b.remove(m.tag).await.unwrap();
            Ok::<_, &str>((m.reason.unwrap_or_else(|| "unknown".into()), m.body))
        })
        .await;
        let _ = browser.into_inner().finish().await;
        conn.close("ok").await;
        got
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
        stop_tasks(std::mem::take(&mut self.tasks)).await;
    }

    /// Stops in-process services, drops the database and deletes the namespace's queues
    /// and directory. A test that fails before calling it gets the same teardown from
    /// `Drop` (its directory is kept there, for the logs).
    pub async fn cleanup(mut self) {
        self.stop_services().await;
        close_pool(&self.pool).await;
        self.teardown(true).run().await;
        self.cleaned = true;
    }

    /// What tearing this deployment down deletes.
    fn teardown(&self, remove_dir: bool) -> Teardown {
        // Every queue a coordinator or a demo worker may have declared here.
        let mut activities: Vec<String> = self.catalog.activities().into_iter().collect();
        activities.extend(sagaflow::tools::demo::activity_names());
        activities.sort();
        activities.dedup();
        Teardown {
            database_url: self.settings.database.url.clone(),
            broker: self.broker.then(|| {
                (
                    self.settings.amqp.url.clone(),
                    self.names.clone(),
                    activities,
                )
            }),
            dir: remove_dir.then(|| self.dir.clone()),
        }
    }
}

/// The teardown of one deployment: owned data only, so `Drop` can run it on a thread
/// and runtime of its own. Each part is bounded in time and ignores errors (a broker
/// or database that is down must not hang or fail a teardown).
struct Teardown {
    database_url: String,
    broker: Option<(String, Names, Vec<String>)>,
    dir: Option<PathBuf>,
}

impl Teardown {
    async fn run(self) {
        let limit = Duration::from_secs(30);
        let _ =
            tokio::time::timeout(limit, sagaflow::store::drop_database(&self.database_url)).await;
        if let Some((url, names, activities)) = &self.broker {
            let delete = async {
                let conn = sagaflow::broker::connect(url, "sagaflow-test-cleanup").await?;
                let deleted =
                    sagaflow::broker::topology::delete_namespace(&conn, names, activities).await;
                conn.close("ok").await;
                deleted
            };
            let _ = tokio::time::timeout(limit, delete).await;
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Drop for TestEnv {
    /// The teardown of a test that did not reach `cleanup()` (it panicked, or forgot).
    /// On a multi-thread runtime it runs right here (`block_in_place`), stopping the
    /// in-process services gracefully first. A current-thread runtime cannot drive
    /// anything while it is blocked in this `drop`, so there the services are
    /// cancelled and aborted, and the teardown runs on a fresh thread with a runtime
    /// of its own, joined before the test goes on.
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        self.cleaned = true;
        let panicking = std::thread::panicking();
        let teardown = self.teardown(!panicking);
        if panicking {
            eprintln!(
                "test failed: deleting the database and queues of {}; its directory {} is kept",
                self.names.namespace(),
                self.dir.display()
            );
        }
        let tasks = std::mem::take(&mut self.tasks);
        let multi_thread = tokio::runtime::Handle::try_current()
            .ok()
            .filter(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if let Some(runtime) = multi_thread {
            let pool = self.pool.clone();
            tokio::task::block_in_place(|| {
                runtime.block_on(async {
                    stop_tasks(tasks).await;
                    close_pool(&pool).await;
                    teardown.run().await;
                })
            });
            return;
        }
        for (_, token, handle) in tasks {
            token.cancel();
            handle.abort();
        }
        let ran = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the teardown")
                .block_on(teardown.run())
        })
        .join();
        if ran.is_err() {
            eprintln!(
                "the teardown of {} panicked; its database or queues may be left",
                self.names.namespace()
            );
        }
    }
}

/// Closes the test's pool, bounded: `close` waits for every connection to come back,
/// and one a test still holds (a transaction it did not end) would hang it; dropping
/// the database ends such sessions anyway.
async fn close_pool(pool: &PgPool) {
    let _ = tokio::time::timeout(Duration::from_secs(5), pool.close()).await;
}

/// Cancels in-process services and waits (bounded) for each to let go.
async fn stop_tasks(tasks: Vec<(&'static str, CancellationToken, JoinHandle<()>)>) {
    for (_, token, handle) in tasks {
        token.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(15), handle).await;
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

/// The sagas the overview tests know (`GET /api/overview`, the dashboard's home), as
/// (id, status, started minutes ago, ended minutes ago) of `order_fulfillment`
/// sagas; `None`: not ended. Two are older than the overview's hour.
pub const OVERVIEW_SAGAS: &[(&str, &str, i64, Option<i64>)] = &[
    ("ov-done-1", "completed", 5, Some(3)),
    ("ov-done-2", "completed", 5, Some(3)),
    ("ov-failed", "failed", 5, Some(2)),
    ("ov-comp", "compensated", 10, Some(9)),
    ("ov-run-30", "running", 30, None),
    ("ov-compensating-50", "compensating", 50, None),
    ("ov-run-120", "running", 120, None),
    ("ov-done-180", "completed", 180, Some(170)),
];

/// Writes [`OVERVIEW_SAGAS`] relative to `now`.
pub async fn overview_sagas(env: &TestEnv, now: chrono::DateTime<chrono::Utc>) {
    for (id, status, started, ended) in OVERVIEW_SAGAS {
        let created = now - chrono::TimeDelta::minutes(*started);
        let updated = ended.map_or(created, |m| now - chrono::TimeDelta::minutes(m));
        env.saga(id)
            .definition("order_fulfillment")
            .at(created)
            .updated_at(updated)
            .status(status.parse().unwrap())
            .insert()
            .await;
    }
}
