//! `sagaflow demo` as a user runs it, against the real broker and Postgres in this
//! test's namespace and database: it starts the dashboard (`sagaflow serve`) on a free
//! port and prints its URL while the sagas run; with `--exit` it ends, exit 0, once
//! they have all ended; without it the dashboard stays up until SIGTERM. Its stdout is
//! a pipe here, so the progress is plain lines. Either way every process it started
//! is gone when it has exited.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{TestEnv, ORDER, TERMINAL};
use futures_util::FutureExt;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc::UnboundedReceiver;

const NEWSLETTER: &str = include_str!("../sagas/group_newsletter.toml");
/// Order sagas the demo runs (every one of its five scenarios once).
const ORDERS: usize = 5;
/// How long the demo gets for each thing it prints.
const WITHIN: Duration = Duration::from_secs(120);

/// The demo on `env`, with `api.listen` on `port`; its stdout lines come on the receiver.
fn spawn_demo(env: &TestEnv, port: u16, extra: &[&str]) -> (Child, UnboundedReceiver<String>) {
    let stderr = std::fs::File::create(env.dir.join("demo.stderr.log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sagaflow"))
        .args(["demo", "--sagas", &ORDERS.to_string()])
        .args(extra)
        .envs(env.child_env())
        .env("SAGAFLOW__API__LISTEN", format!("127.0.0.1:{port}"))
        .current_dir(&env.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Reads lines until one satisfies `wanted`; returns it. Every line read goes to `seen`.
async fn line_where(
    rx: &mut UnboundedReceiver<String>,
    seen: &mut Vec<String>,
    wanted: impl Fn(&str) -> bool,
) -> String {
    let found = tokio::time::timeout(WITHIN, async {
        while let Some(line) = rx.recv().await {
            seen.push(line.clone());
            if wanted(&line) {
                return Some(line);
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(line)) => line,
        other => panic!(
            "no such line (ended: {}); output so far: {seen:#?}",
            other.is_ok()
        ),
    }
}

/// The dashboard URL from the demo's `dashboard: <url> …` line.
fn url_of(line: &str) -> String {
    line.split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_string()
}

async fn get_status(url: &str) -> Option<u16> {
    reqwest::get(url).await.ok().map(|r| r.status().as_u16())
}

/// Everything the demo started has let go: the dashboard no longer answers, and no
/// process consumes the coordinator's queue or a task queue.
async fn everything_stopped(env: &TestEnv, url: &str) {
    assert_eq!(
        get_status(&format!("{url}healthz")).await,
        None,
        "dashboard still up"
    );
    let conn = env.connect().await;
    let mut queues = vec![env.names.coordinator_queue()];
    queues.extend(env.activities().iter().map(|a| env.names.task_queue(a)));
    // The broker notices a closed connection a moment after the process exits.
    common::eventually("no consumers left", Duration::from_secs(15), || async {
        let infos = sagaflow::broker::inspect::queue_infos(&conn, &queues)
            .await
            .unwrap();
        let consumed: Vec<String> = infos
            .iter()
            .filter(|q| q.consumers > 0)
            .map(|q| format!("{q:?}"))
            .collect();
        consumed.is_empty().then_some(()).ok_or(consumed)
    })
    .await;
    conn.close("ok").await;
}

/// Every saga the demo started has ended, and there are all of them.
async fn all_sagas_ended(env: &TestEnv) {
    let rows: Vec<(String, String)> = sqlx::query_as("SELECT id, status FROM sagas")
        .fetch_all(&env.pool)
        .await
        .unwrap();
    assert_eq!(rows.len(), ORDERS + 2, "{rows:?}");
    assert!(
        rows.iter().all(|(_, s)| TERMINAL.contains(&s.as_str())),
        "{rows:?}"
    );
}

/// What a test's body left: passed or not, stops the demo if it still runs (SIGTERM:
/// it stops what it started) and tears the deployment down, then fails as the body did.
async fn finish(env: TestEnv, mut demo: Child, outcome: std::thread::Result<()>) {
    if let Ok(None) = demo.try_wait() {
        sagaflow::tools::launch::stop(&mut demo, Duration::from_secs(30)).await;
    }
    env.cleanup().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_exit_serves_the_dashboard_while_the_sagas_run_and_ends_when_they_have() {
    let env = TestEnv::new(&[("order.toml", ORDER), ("newsletter.toml", NEWSLETTER)]).await;
    // The configured port is taken: the demo must find a free one.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let (mut demo, mut rx) = spawn_demo(&env, taken_port, &["--exit"]);
    let outcome = std::panic::AssertUnwindSafe(async {
        let mut seen = Vec::new();
        let line = line_where(&mut rx, &mut seen, |l| l.starts_with("dashboard: ")).await;
        let url = url_of(&line);
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
        assert!(!url.contains(&format!(":{taken_port}/")), "{url}");
        // While the sagas run (the newsletter sleeps 3 s): the probe and the dashboard.
        assert_eq!(get_status(&format!("{url}healthz")).await, Some(200));
        assert_eq!(get_status(&url).await, Some(200));
        let status = tokio::time::timeout(WITHIN, demo.wait())
            .await
            .expect("the demo ends once its sagas have")
            .unwrap();
        while let Some(line) = rx.recv().await {
            seen.push(line);
        }
        assert!(status.success(), "{status}; output: {seen:#?}");
        let out = seen.join("\n");
        assert!(!out.contains('\u{1b}'), "not a terminal: no escapes: {out}");
        assert!(out.contains("  progress: order_fulfillment "), "{out}");
        assert!(
            out.contains(&format!("order_fulfillment {ORDERS}/{ORDERS} ended")),
            "{out}"
        );
        assert!(out.contains("group_newsletter 2/2 ended"), "{out}");
        assert!(out.contains("done (--exit)"), "{out}");
        all_sagas_ended(&env).await;
        everything_stopped(&env, &url).await;
    })
    .catch_unwind()
    .await;
    drop(taken);
    finish(env, demo, outcome).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_exit_the_dashboard_stays_up_until_sigterm() {
    let env = TestEnv::new(&[("order.toml", ORDER), ("newsletter.toml", NEWSLETTER)]).await;
    // Port 0: "any free port".
    let (mut demo, mut rx) = spawn_demo(&env, 0, &[]);
    let outcome = std::panic::AssertUnwindSafe(async {
        let mut seen = Vec::new();
        let line = line_where(&mut rx, &mut seen, |l| l.starts_with("dashboard: ")).await;
        let url = url_of(&line);
        line_where(&mut rx, &mut seen, |l| l.contains("stays up")).await;
        all_sagas_ended(&env).await;
        // The sagas have ended and the demo is still there, serving.
        assert_eq!(demo.try_wait().unwrap(), None);
        assert_eq!(get_status(&format!("{url}healthz")).await, Some(200));
        let pid = demo.id().unwrap();
        let term = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(term.success());
        let status = tokio::time::timeout(WITHIN, demo.wait())
            .await
            .expect("SIGTERM ends the demo")
            .unwrap();
        assert!(status.success(), "{status}");
        everything_stopped(&env, &url).await;
    })
    .catch_unwind()
    .await;
    finish(env, demo, outcome).await;
}
