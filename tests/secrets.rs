//! No password in any output: the `sagaflow` binary's processes (coordinator, demo
//! worker, CLI commands, `serve` and its API answers) run with passwords in both URLs,
//! right and wrong ones, and with URLs that do not even parse; everything they print
//! (stdout, stderr at `RUST_LOG=debug`) and every API body is searched for the
//! passwords, and none may appear (docs/security.md, "Secrets").
//!
//! The servers are throwaway ones (never the machine's): a Postgres where every role
//! but `postgres` logs in with a scram-sha-256 password (the machine's trusts
//! everyone, so a wrong password would go unnoticed there), and a RabbitMQ node with a
//! user `app` of its own.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::eventually_holds as eventually;
use common::throwaway::{free_port, ThrowawayPostgres, ThrowawayRabbit};
use common::tls::{configure_postgres, rabbitmqctl};
use sqlx::Connection;

const HBA_PASSWORDS: &str =
    "host all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n";

/// A password that is easy to find: `<kind>-<32 hex digits>`. The hex part is what
/// the output is searched for, so a password shown cut or re-encoded is found too.
struct Secret {
    full: String,
    marker: String,
}

fn secret(kind: &str) -> Secret {
    let marker = uuid::Uuid::now_v7().simple().to_string();
    Secret {
        full: format!("{kind}-{marker}"),
        marker,
    }
}

/// What one process or request showed.
struct Shown {
    what: String,
    text: String,
}

/// One sagaflow deployment's environment: namespace, definitions, URLs.
struct Deployment {
    dir: PathBuf,
    namespace: String,
}

impl Deployment {
    fn env(&self, amqp: &str, db: &str, listen: u16) -> Vec<(String, String)> {
        vec![
            ("SAGAFLOW__NAMESPACE".into(), self.namespace.clone()),
            (
                "SAGAFLOW__SAGAS_DIR".into(),
                self.dir.join("sagas").display().to_string(),
            ),
            ("SAGAFLOW__AMQP__URL".into(), amqp.into()),
            ("SAGAFLOW__DATABASE__URL".into(), db.into()),
            (
                "SAGAFLOW__DATABASE__CONNECT_TIMEOUT_MS".into(),
                "5000".into(),
            ),
            (
                "SAGAFLOW__API__LISTEN".into(),
                format!("127.0.0.1:{listen}"),
            ),
            (
                "SAGAFLOW__WORKER__ACTIVITIES".into(),
                "inventory.reserve,inventory.release,payments.charge,payments.refund,shipping.ship"
                    .into(),
            ),
            ("RUST_LOG".into(), "debug".into()),
        ]
    }

    fn command(
        &self,
        args: &[&str],
        env: &[(String, String)],
        log: &Path,
    ) -> tokio::process::Command {
        let file = std::fs::File::create(log).unwrap();
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_sagaflow"));
        c.args(args)
            .envs(env.iter().cloned())
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .kill_on_drop(true);
        c
    }

    /// Runs a command to its end (at most 60 s); returns whether it succeeded and what
    /// it printed.
    async fn run(&self, name: &str, args: &[&str], env: &[(String, String)]) -> (bool, Shown) {
        let log = self.dir.join(format!("{name}.log"));
        let mut child = self.command(args, env, &log).spawn().unwrap();
        let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
            .await
            .unwrap_or_else(|_| panic!("{name}: sagaflow {args:?} did not end within 60 s"))
            .unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        (
            status.success(),
            Shown {
                what: format!("{name} (sagaflow {})", args.join(" ")),
                text,
            },
        )
    }

    /// Starts a long-running command; `Running::finish` kills it and returns its output.
    fn spawn(&self, name: &str, args: &[&str], env: &[(String, String)]) -> Running {
        let log = self.dir.join(format!("{name}.log"));
        let child = self.command(args, env, &log).spawn().unwrap();
        Running {
            what: format!("{name} (sagaflow {})", args.join(" ")),
            log,
            child,
        }
    }
}

struct Running {
    what: String,
    log: PathBuf,
    child: tokio::process::Child,
}

impl Running {
    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the output contains `needle` or the process has ended.
    async fn wait_for(&mut self, needle: &str) {
        let what = format!("{}: `{needle}` in its output, or its end", self.what);
        let log = self.log.clone();
        let mut ended = false;
        eventually(&what, Duration::from_secs(60), || {
            ended = ended || self.child.try_wait().ok().flatten().is_some();
            let found = std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains(needle);
            let done = ended || found;
            async move { done }
        })
        .await;
    }

    async fn finish(mut self) -> Shown {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        Shown {
            what: self.what.clone(),
            text: self.output(),
        }
    }
}

/// An API request's status and body.
async fn request(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<serde_json::Value>,
) -> Shown {
    let mut r = http.request(method.clone(), url);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = resp.status();
    let text = resp.text().await.unwrap();
    Shown {
        what: format!("{method} {url}"),
        text: format!("{status} {text}"),
    }
}

async fn wait_listening(http: &reqwest::Client, base: &str, serve: &mut Running) {
    let url = format!("{base}/healthz");
    let what = format!("{}: answering {url}", serve.what);
    eventually(&what, Duration::from_secs(60), || {
        let get = http.get(&url).send();
        async move { get.await.is_ok_and(|r| r.status().is_success()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_password_shows_in_output_errors_or_api_bodies() {
    let (amqp_pw, pg_pw) = (secret("AmqpPw"), secret("PgPw"));
    let (wrong_amqp, wrong_pg) = (secret("WrongAmqp"), secret("WrongPg"));
    let secrets = [&amqp_pw, &pg_pw, &wrong_amqp, &wrong_pg];

    let (pg, rabbit) = tokio::task::block_in_place(|| {
        let pg = ThrowawayPostgres::start();
        let rabbit = ThrowawayRabbit::start();
        (pg, rabbit)
    });
    // The roles: `sagaflow_app` in Postgres, `app` in RabbitMQ, each with its password.
    let mut admin = sqlx::PgConnection::connect(&pg.url("postgres"))
        .await
        .unwrap();
    sqlx::query(&format!(
        "CREATE ROLE sagaflow_app LOGIN CREATEDB PASSWORD '{}'",
        pg_pw.full
    ))
    .execute(&mut admin)
    .await
    .unwrap();
    let _ = admin.close().await;
    let app_db =
        |pw: &str, db: &str| format!("postgres://sagaflow_app:{pw}@127.0.0.1:{}/{db}", pg.port);
    let (right, wrong) = (
        app_db(&pg_pw.full, "postgres"),
        app_db(&wrong_pg.full, "postgres"),
    );
    configure_postgres(&pg, HBA_PASSWORDS, None, || {
        let (right, wrong) = (right.clone(), wrong.clone());
        async move {
            sqlx::PgConnection::connect(&right).await.is_ok()
                && sqlx::PgConnection::connect(&wrong).await.is_err()
        }
    })
    .await;
    tokio::task::block_in_place(|| {
        rabbitmqctl(&rabbit.node, &["add_user", "app", &amqp_pw.full]);
        rabbitmqctl(
            &rabbit.node,
            &["set_permissions", "-p", "/", "app", ".*", ".*", ".*"],
        );
    });

    let tag = format!("sec_{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    let dir = std::env::temp_dir().join(&tag);
    std::fs::create_dir_all(dir.join("sagas")).unwrap();
    std::fs::write(dir.join("sagas/order.toml"), common::ORDER).unwrap();
    let d = Deployment {
        dir: dir.clone(),
        namespace: tag.clone(),
    };
    let amqp = |pw: &str| format!("amqp://app:{pw}@127.0.0.1:{}/%2f", rabbit.port);
    let (amqp_ok, amqp_bad) = (amqp(&amqp_pw.full), amqp(&wrong_amqp.full));
    let (db_ok, db_bad) = (app_db(&pg_pw.full, &tag), app_db(&wrong_pg.full, &tag));
    let db_query = format!(
        "postgres://sagaflow_app@127.0.0.1:{}/{tag}?password={}",
        pg.port, pg_pw.full
    );
    let amqp_unparsable = format!("amqp://app:{}@127.0.0.1:notaport/%2f", amqp_pw.full);
    let db_unparsable = format!(
        "postgres://sagaflow_app:{}@127.0.0.1:notaport/{tag}",
        pg_pw.full
    );
    let api_port = free_port();
    let base = format!("http://127.0.0.1:{api_port}");
    // A tokenless API wants this header on every request that changes something.
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        "x-sagaflow-request",
        reqwest::header::HeaderValue::from_static("1"),
    );
    let http = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap();
    let ok = d.env(&amqp_ok, &db_ok, api_port);
    let mut shown: Vec<Shown> = vec![];

    // Right passwords: migrate (prints the URL it used), a coordinator and a worker,
    // a saga started from the CLI, `serve` and its API.
    let (done, out) = d.run("migrate", &["migrate"], &ok).await;
    assert!(
        done && out.text.contains("sagaflow_app:***@"),
        "{}",
        out.text
    );
    shown.push(out);
    let (done, out) = d
        .run(
            "migrate-query",
            &["migrate"],
            &d.env(&amqp_ok, &db_query, api_port),
        )
        .await;
    assert!(done && out.text.contains("password=***"), "{}", out.text);
    shown.push(out);
    let coordinator = d.spawn("coordinator", &["coordinator"], &ok);
    let worker = d.spawn("worker", &["worker", "--demo"], &ok);
    let conn = sagaflow::broker::connect(&amqp_ok, "sagaflow-secrets-test")
        .await
        .unwrap();
    let names = sagaflow::broker::Names::new(&tag);
    for queue in [names.coordinator_queue(), names.task_queue("shipping.ship")] {
        sagaflow::tools::launch::wait_for_consumer(&conn, &queue, Duration::from_secs(60))
            .await
            .unwrap();
    }
    let (done, out) = d
        .run(
            "start",
            &["sagas", "start", "order_fulfillment", "--id", "sec-1"],
            &ok,
        )
        .await;
    assert!(done, "{}", out.text);
    shown.push(out);
    let pool = sagaflow::store::connect(&db_ok, 2).await.unwrap();
    eventually("sec-1 completed", Duration::from_secs(60), || async {
        sagaflow::store::sagas::get(&pool, "sec-1")
            .await
            .ok()
            .flatten()
            .is_some_and(|s| s.state.status.to_string() == "completed")
    })
    .await;
    let (done, out) = d.run("show", &["sagas", "show", "sec-1"], &ok).await;
    assert!(done, "{}", out.text);
    shown.push(out);
    let mut serve = d.spawn("serve", &["serve"], &ok);
    wait_listening(&http, &base, &mut serve).await;
    for (method, path, body) in [
        (reqwest::Method::GET, "/readyz", None),
        (reqwest::Method::GET, "/api/sagas/sec-1", None),
        (
            reqwest::Method::POST,
            "/api/sagas",
            Some(serde_json::json!({"saga": "order_fulfillment", "id": "sec-2"})),
        ),
    ] {
        shown.push(request(&http, method, &format!("{base}{path}"), body).await);
    }
    shown.push(serve.finish().await);

    // A wrong RabbitMQ password: the coordinator, a CLI command, `serve` and its API.
    let bad_amqp = d.env(&amqp_bad, &db_ok, api_port);
    let mut c = d.spawn("coordinator-bad-amqp", &["coordinator"], &bad_amqp);
    c.wait_for("refused the credentials").await;
    shown.push(c.finish().await);
    let (done, out) = d.run("queues-bad-amqp", &["queues"], &bad_amqp).await;
    assert!(
        !done && out.text.contains("refused the credentials"),
        "{}",
        out.text
    );
    shown.push(out);
    let mut serve = d.spawn("serve-bad-amqp", &["serve"], &bad_amqp);
    wait_listening(&http, &base, &mut serve).await;
    let readyz = request(&http, reqwest::Method::GET, &format!("{base}/readyz"), None).await;
    assert!(
        readyz.text.contains("\"rabbitmq\":false"),
        "{}",
        readyz.text
    );
    shown.push(readyz);
    let start = request(
        &http,
        reqwest::Method::POST,
        &format!("{base}/api/sagas"),
        Some(serde_json::json!({"saga": "order_fulfillment", "id": "sec-3"})),
    )
    .await;
    assert!(
        start.text.contains("refused the credentials"),
        "{}",
        start.text
    );
    shown.push(start);
    shown.push(serve.finish().await);

    // A wrong Postgres password: the coordinator, the worker, `serve`, a CLI command.
    let bad_db = d.env(&amqp_ok, &db_bad, api_port);
    for (name, args) in [
        ("coordinator-bad-db", &["coordinator"][..]),
        ("worker-bad-db", &["worker", "--demo"][..]),
        ("serve-bad-db", &["serve"][..]),
    ] {
        let mut p = d.spawn(name, args, &bad_db);
        p.wait_for("password authentication failed").await;
        let out = p.finish().await;
        assert!(
            out.text.contains("password authentication failed"),
            "{}",
            out.text
        );
        shown.push(out);
    }
    let (done, out) = d.run("migrate-bad-db", &["migrate"], &bad_db).await;
    assert!(
        !done && out.text.contains("password authentication failed"),
        "{}",
        out.text
    );
    shown.push(out);

    // URLs that do not parse, the password in them.
    let (done, out) = d
        .run(
            "queues-unparsable",
            &["queues"],
            &d.env(&amqp_unparsable, &db_ok, api_port),
        )
        .await;
    assert!(
        !done && out.text.contains("not a valid AMQP URL"),
        "{}",
        out.text
    );
    shown.push(out);
    let (done, out) = d
        .run(
            "migrate-unparsable",
            &["migrate"],
            &d.env(&amqp_ok, &db_unparsable, api_port),
        )
        .await;
    assert!(!done, "{}", out.text);
    shown.push(out);

    shown.push(worker.finish().await);
    shown.push(coordinator.finish().await);

    let mut leaks = vec![];
    for s in &shown {
        for secret in &secrets {
            if s.text.contains(&secret.marker) {
                let line = s
                    .text
                    .lines()
                    .find(|l| l.contains(&secret.marker))
                    .unwrap_or_default();
                leaks.push(format!("{}: {line}", s.what));
            }
        }
    }
    for s in shown.iter().filter(|s| !s.what.contains("sagaflow ")) {
        println!("{}: {}", s.what, s.text);
    }
    let bytes: usize = shown.iter().map(|s| s.text.len()).sum();
    println!("searched {} outputs, {bytes} bytes", shown.len());
    assert!(leaks.is_empty(), "passwords shown:\n{}", leaks.join("\n"));

    pool.close().await;
    let _ = sagaflow::broker::topology::delete_namespace(
        &conn,
        &names,
        &sagaflow::tools::demo::ORDER_ACTIVITIES
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>(),
    )
    .await;
    conn.close("done").await;
    let _ = std::fs::remove_dir_all(&dir);
}
