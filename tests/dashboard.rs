//! The web dashboard end to end in headless Chromium (through chromedriver and the
//! WebDriver protocol): find a failed saga, open its timeline, replay a dead letter
//! and see it leave the queue — on the page and on the broker — then see the version
//! the failed saga still holds.
//!
//! Needs Debian's `chromium` and `chromium-driver`; when they are missing the test
//! installs them if it runs as root. When they are still missing it fails with the
//! reason under CI (`CI=true`, as `.ci/run` sets), and otherwise skips with a message.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::{eventually, id, TestEnv, ORDER};
use fantoccini::{Client, ClientBuilder, Locator};
use sagaflow::api::{self, ApiState};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(20);

/// An activity no worker hosts here: its task waits in its queue until poisoned. A
/// dead-lettered task is a failed attempt; the retry waits two hours in Postgres, so
/// the task queue holds only what the test puts there.
const MANUAL: &str = r#"
name = "manual"
version = 1
[[steps]]
name = "review"
activity = "manual.review"
retry = { initial_interval = "2h", max_interval = "2h" }
"#;

fn find_in_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|d| names.iter().map(move |n| d.join(n)))
        .find(|p| p.is_file())
}

fn browser_bins() -> Option<(PathBuf, PathBuf)> {
    Some((
        find_in_path(&["chromium", "chromium-browser"])?,
        find_in_path(&["chromedriver"])?,
    ))
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Whether this run is CI's (`CI=true`): there a missing browser fails the test.
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Chromium and chromedriver, installed with apt-get when missing and running as
/// root. When they cannot be had: a failure under CI, a skip (None) otherwise.
fn ensure_browser() -> Option<(PathBuf, PathBuf)> {
    if let Some(b) = browser_bins() {
        return Some(b);
    }
    let missing = |why: &str| {
        let reason = format!(
            "dashboard e2e: chromium/chromedriver not found and {why} \
             (apt-get install chromium chromium-driver)"
        );
        assert!(
            !in_ci(),
            "{reason}; CI=true, so this is a failure, not a skip"
        );
        eprintln!("SKIPPED {reason}");
        None
    };
    if !is_root() {
        return missing("not root, so not installable here");
    }
    eprintln!("dashboard e2e: installing chromium and chromium-driver with apt-get");
    let apt = |args: &[&str]| {
        std::process::Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if !apt(&["install", "-y", "-q", "chromium", "chromium-driver"]) {
        apt(&["update", "-q"]);
        apt(&["install", "-y", "-q", "chromium", "chromium-driver"]);
    }
    browser_bins().or_else(|| missing("apt-get could not install them"))
}

/// chromedriver on a free local port; it and the Chromium it started are killed
/// (its process group) when dropped.
struct Driver {
    child: tokio::process::Child,
    url: String,
    profile: PathBuf,
}

impl Driver {
    async fn start(chromedriver: &Path) -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = tokio::process::Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            // Its own process group, so Chromium goes with it even after a panic.
            .process_group(0)
            .spawn()
            .expect("chromedriver starts");
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        eventually("chromedriver ready", T, || async {
            let status: Value = match http.get(format!("{url}/status")).send().await {
                Ok(r) => r.json().await.unwrap_or(Value::Null),
                Err(e) => return Err(e.to_string()),
            };
            (status["value"]["ready"] == true)
                .then_some(())
                .ok_or(status.to_string())
        })
        .await;
        let profile =
            std::env::temp_dir().join(format!("sagaflow-chromium-{}", uuid::Uuid::now_v7()));
        Driver {
            child,
            url,
            profile,
        }
    }

    async fn browser(&self, chromium: &Path) -> Client {
        let caps = json!({
            "browserName": "chrome",
            "unhandledPromptBehavior": "ignore",
            "goog:chromeOptions": {
                "binary": chromium.display().to_string(),
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run",
                    format!("--user-data-dir={}", self.profile.display()),
                    "--window-size=1400,1000",
                ]
            }
        });
        let caps = caps.as_object().unwrap().clone().into_iter().collect();
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a Chromium session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
        }
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Evaluates `expr` in the page until it returns true; the failure shows the page.
async fn wait_js(c: &Client, what: &str, expr: &str) {
    let what = format!("the page shows {what}");
    eventually(&what, T, || async {
        let v = c
            .execute(&format!("return !!({expr});"), vec![])
            .await
            .unwrap_or(Value::Null);
        if v == Value::Bool(true) {
            return Ok(());
        }
        let text = c
            .execute("return document.body.innerText;", vec![])
            .await
            .unwrap_or_default();
        Err(format!("the page: {}", text.as_str().unwrap_or("")))
    })
    .await
}

/// Accepts the `confirm()` dialog a click opened.
async fn accept_confirm(c: &Client) -> String {
    let text = eventually("a confirm dialog", T, || async {
        c.get_alert_text().await.map_err(|e| e.to_string())
    })
    .await;
    c.accept_alert().await.unwrap();
    text
}

#[tokio::test]
async fn dashboard_finds_a_failed_saga_and_replays_a_dead_letter() {
    let Some((chromium, chromedriver)) = ensure_browser() else {
        return;
    };
    let env = TestEnv::running(&[("order.toml", ORDER), ("manual.toml", MANUAL)]).await;
    let stop = CancellationToken::new();
    let state = ApiState::new(&env.settings, env.catalog.clone(), env.pool.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(api::serve(listener, state, stop.clone()));

    // One completed and one failed order; a manual saga whose task is dead-lettered.
    let client = env.client().await;
    let failing = json!({"fail": {"shipping.ship": {"retryable": false}, "payments.refund": {"retryable": false}}});
    client
        .start("order_fulfillment", failing, id("dash-failed"))
        .await
        .unwrap();
    client
        .start("order_fulfillment", json!({}), id("dash-ok"))
        .await
        .unwrap();
    client
        .start("manual", json!({}), id("dash-dl"))
        .await
        .unwrap();
    let ends = env
        .wait_terminal(&["dash-failed".into(), "dash-ok".into()], T)
        .await;
    assert_eq!(ends["dash-failed"], "failed");
    assert_eq!(ends["dash-ok"], "completed");
    let task_q = env.names.task_queue("manual.review");
    let dlq_q = env.names.dlq("manual.review");
    env.wait_depth(&task_q, 1).await;
    env.poison_next(&task_q).await;
    env.wait_depth(&dlq_q, 1).await;

    let driver = Driver::start(&chromedriver).await;
    let c = driver.browser(&chromium).await;

    // The static files are served with their types.
    let r = reqwest::get(format!("{base}/app.js")).await.unwrap();
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));

    // Sagas (the home page is the overview): filter by status failed, find the failed one.
    c.goto(&format!("{base}/#/sagas")).await.unwrap();
    wait_js(
        &c,
        "the sagas table",
        "document.querySelector('[data-testid=saga-row][data-id=\"dash-ok\"]')",
    )
    .await;
    c.find(Locator::Css("[data-testid=filter-status]"))
        .await
        .unwrap()
        .select_by_value("failed")
        .await
        .unwrap();
    // Choosing a status applies the filter (the page re-renders under the new hash).
    wait_js(
        &c,
        "only failed sagas",
        "location.hash.includes('status=failed') \
         && document.querySelector('[data-testid=saga-row][data-id=\"dash-failed\"]') \
         && [...document.querySelectorAll('[data-testid=saga-row]')].every(r => r.dataset.status === 'failed')",
    )
    .await;

    // Its timeline: the failing step, the failed compensation, the history.
    c.find(Locator::Css(
        "[data-testid=saga-row][data-id=\"dash-failed\"] td",
    ))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    wait_js(
        &c,
        "the failed saga's timeline",
        "document.querySelector('[data-testid=saga-id]')?.textContent === 'dash-failed' \
         && document.querySelector('[data-testid=step-row][data-step=ship_order][data-status=failed]') \
         && document.querySelector('[data-testid=step-row][data-step=charge_payment][data-status=compensation_failed]') \
         && document.querySelector('[data-testid=event-row][data-event=compensation_failed]') \
         && document.querySelector('[data-testid=event-row][data-event=saga_failed]')",
    )
    .await;
    let steps = c
        .find(Locator::Css("[data-testid=steps]"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(steps.contains("compensation_failed"), "{steps}");

    // Dead letters: the manual saga's task, replayed after confirming.
    c.find(Locator::Css("[data-testid=nav-dead-letters]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let row = format!("[data-testid=dead-letter][data-saga=\"dash-dl\"][data-queue=\"{dlq_q}\"]");
    wait_js(
        &c,
        "the dead letter",
        &format!("document.querySelector('{row}')"),
    )
    .await;
    c.find(Locator::Css(&format!("{row} [data-testid=replay]")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let asked = accept_confirm(&c).await;
    assert!(asked.contains("dash-dl"), "{asked}");
    wait_js(
        &c,
        "the dead-letter queue emptied",
        &format!(
            "document.querySelector('[data-testid=dlq-queue][data-queue=\"{dlq_q}\"]')?.dataset.count === '0' \
             && !document.querySelector('[data-testid=dead-letter]') \
             && document.getElementById('flash').textContent.includes('replay: done')"
        ),
    )
    .await;
    // On the broker: gone from the DLQ, back in its task queue.
    assert_eq!(env.depth(&dlq_q).await, 0);
    env.wait_depth(&task_q, 1).await;

    // Versions: the failed order holds its version (it waits for an operator).
    c.find(Locator::Css("[data-testid=nav-versions]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_js(
        &c,
        "the order version held by its failed saga",
        "document.querySelector('[data-testid=version-row][data-saga=order_fulfillment][data-version=\"1\"][data-safe=false] [data-testid=version-failed]')?.textContent === '1'",
    )
    .await;

    c.close().await.unwrap();
    drop(driver);
    stop.cancel();
    env.cleanup().await;
}

/// A saga with more than two pages of history: the page shows the first 200
/// entries, and "Load more" appends the next pages by cursor, in order, each entry
/// once, until there is nothing more to load.
#[tokio::test]
async fn dashboard_pages_a_long_history() {
    let Some((chromium, chromedriver)) = ensure_browser() else {
        return;
    };
    let env = TestEnv::database_only(&[("order.toml", ORDER)]).await;
    env.saga("long-1")
        .definition("order_fulfillment")
        .insert()
        .await;
    sqlx::query(
        "INSERT INTO saga_history (saga_id, at, event, detail)
         SELECT 'long-1', now() + g * interval '1 ms', 'signal_buffered', jsonb_build_object('n', g)
         FROM generate_series(1, 450) g",
    )
    .execute(&env.pool)
    .await
    .unwrap();
    let total: i64 =
        sqlx::query_scalar("SELECT count(*) FROM saga_history WHERE saga_id = 'long-1'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert!(total > 400, "{total}: more than two pages");
    let stop = CancellationToken::new();
    let base = common::serve_api(&env, &env.settings, &stop).await;
    let r = reqwest::get(format!("{base}/history.js")).await.unwrap();
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));

    let driver = Driver::start(&chromedriver).await;
    let c = driver.browser(&chromium).await;
    c.goto(&format!("{base}/#/saga/long-1")).await.unwrap();
    let rows = "document.querySelectorAll('[data-testid=event-row]').length";
    let more = "document.querySelector('[data-testid=history-more]')";
    wait_js(
        &c,
        "the first page of history",
        &format!("{rows} === 200 && !{more}.hidden"),
    )
    .await;
    for shown in [400, total] {
        c.find(Locator::Css("[data-testid=history-more]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        wait_js(
            &c,
            &format!("{shown} history entries"),
            &format!("{rows} === {shown} && !{more}.disabled"),
        )
        .await;
    }
    wait_js(&c, "no more to load", &format!("{more}.hidden")).await;
    // Every generated entry once, in order, after the ones the factory wrote.
    let seen = c
        .execute(
            "return [...document.querySelectorAll('[data-testid=event-row]')].map(r => r.dataset.event === 'signal_buffered' ? JSON.parse(r.querySelector('pre').textContent).n : r.dataset.event);",
            vec![],
        )
        .await
        .unwrap();
    let seen = seen.as_array().unwrap();
    let first = seen.len() - 450;
    assert!(seen[..first].iter().all(|e| e.is_string()), "{seen:?}");
    let n: Vec<i64> = seen[first..].iter().map(|v| v.as_i64().unwrap()).collect();
    assert_eq!(n, (1..=450).collect::<Vec<_>>());
    let count = c
        .find(Locator::Css("[data-testid=history-count]"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(count, format!("{total} events"));

    c.close().await.unwrap();
    drop(driver);
    stop.cancel();
    env.cleanup().await;
}

/// With `SAGAFLOW_DASHBOARD_SCREENSHOTS=<dir>`, saves the element `css` of the page
/// as `<dir>/<name>.png` (how docs/img's pictures are made); otherwise does nothing.
async fn screenshot(c: &Client, css: &str, name: &str) {
    let Some(dir) = std::env::var_os("SAGAFLOW_DASHBOARD_SCREENSHOTS") else {
        return;
    };
    let png = c
        .find(Locator::Css(css))
        .await
        .unwrap()
        .screenshot()
        .await
        .unwrap();
    let path = Path::new(&dir).join(format!("{name}.png"));
    std::fs::write(&path, png).unwrap();
    eprintln!("dashboard: wrote {}", path.display());
}

/// The home page is the overview: on a database with known sagas it shows the
/// counts per definition and status, the last hour's chart with a bar per started
/// and ended minute, the stuck count and the oldest open sagas; a child saga's page
/// links to its parent and the parent's to the child; a for_each step shows its
/// elements summarised.
#[tokio::test]
async fn dashboard_overview_shows_counts_and_the_last_hour() {
    let Some((chromium, chromedriver)) = ensure_browser() else {
        return;
    };
    let env = TestEnv::database_only(&[("order.toml", ORDER)]).await;
    let now = chrono::Utc::now();
    common::overview_sagas(&env, now).await;
    let stop = CancellationToken::new();
    let base = common::serve_api(&env, &env.settings, &stop).await;
    for script in ["overview.js", "timeline.js"] {
        let r = reqwest::get(format!("{base}/{script}")).await.unwrap();
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript"));
    }

    let driver = Driver::start(&chromedriver).await;
    let c = driver.browser(&chromium).await;
    c.goto(&format!("{base}/")).await.unwrap();
    let count = |status: &str, n: i64| {
        format!("document.querySelector('[data-testid=overview-count][data-saga=order_fulfillment][data-status={status}]')?.dataset.count === '{n}'")
    };
    let counts = [
        count("completed", 3),
        count("failed", 1),
        count("compensated", 1),
        count("running", 2),
        count("compensating", 1),
        count("cancelled", 0),
    ]
    .join(" && ");
    wait_js(&c, "the counts per status", &counts).await;
    // The chart: started bars summing to the six sagas of the last hour, and the
    // failed one in its minute.
    let sum = |kind: &str| {
        format!("[...document.querySelectorAll('[data-testid=throughput-chart] [data-testid=chart-bar][data-kind={kind}]')].reduce((n, r) => n + Number(r.dataset.count), 0)")
    };
    wait_js(
        &c,
        "the last hour's chart",
        &format!(
            "{} === 6 && {} === 2 && {} === 1 && {} === 1 && {} === 0",
            sum("started"),
            sum("completed"),
            sum("failed"),
            sum("compensated"),
            sum("cancelled")
        ),
    )
    .await;
    let oldest = c
        .execute(
            "return [...document.querySelectorAll('[data-testid=oldest-row]')].map(r => r.dataset.id);",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        oldest,
        json!(["ov-run-120", "ov-compensating-50", "ov-run-30"])
    );
    wait_js(
        &c,
        "no stuck sagas, and the dead-letter tile",
        "document.querySelector('[data-testid=overview-stuck]')?.dataset.count === '0' \
         && document.querySelector('[data-testid=overview-dead-letters]')",
    )
    .await;
    screenshot(&c, "[data-testid=view]", "dashboard-overview").await;

    // A count links to the filtered list; the saga list is still there.
    c.find(Locator::Css(
        "[data-testid=overview-count][data-status=failed] a",
    ))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    wait_js(
        &c,
        "the failed sagas listed",
        "location.hash.includes('status=failed') \
         && document.querySelector('[data-testid=saga-row][data-id=ov-failed]') \
         && document.querySelectorAll('[data-testid=saga-row]').length === 1",
    )
    .await;

    // Parent and child link to each other.
    env.saga("fam")
        .definition("order_fulfillment")
        .insert()
        .await;
    env.saga("fam/ship_order")
        .definition("order_fulfillment")
        .edit(|s| {
            s.parent = Some(sagaflow::messages::ParentLink {
                saga_id: "fam".into(),
                task_id: "fam-task".into(),
            })
        })
        .insert()
        .await;
    c.goto(&format!("{base}/#/saga/fam")).await.unwrap();
    wait_js(
        &c,
        "the child on the parent's page",
        "document.querySelector('[data-testid=saga-child][data-id=\"fam/ship_order\"] a')",
    )
    .await;
    c.find(Locator::Css("[data-testid=saga-child] a"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_js(
        &c,
        "the parent on the child's page",
        "document.querySelector('[data-testid=saga-id]')?.textContent === 'fam/ship_order' \
         && document.querySelector('[data-testid=saga-parent] a')?.textContent === 'fam'",
    )
    .await;

    // A for_each step's elements, summarised from its counters and its elements in
    // flight (finished ones are rows of their own, not in the state).
    env.saga("fan")
        .definition("order_fulfillment")
        .edit(|s| {
            let mut running = sagaflow::saga::state::StepState::pending();
            running.status = sagaflow::saga::state::StepStatus::Running;
            s.steps[0].status = sagaflow::saga::state::StepStatus::Running;
            s.steps[0].fan_out = Some(sagaflow::saga::state::FanOut {
                total: 10,
                started: 7,
                completed: 4,
                failed: 1,
                compensated: 0,
                generation: 0,
            });
            s.steps[0].elements = [(5, running.clone()), (6, running)].into();
        })
        .insert()
        .await;
    c.goto(&format!("{base}/#/saga/fan")).await.unwrap();
    wait_js(
        &c,
        "the fan-out summary",
        "document.querySelector('[data-testid=fan-out-summary]')?.textContent          === '4/10 done · 2 running · 1 failed'",
    )
    .await;

    c.close().await.unwrap();
    drop(driver);
    stop.cancel();
    env.cleanup().await;
}

/// A saga whose charge failed once (a retry wait) and whose shipping failed for good
/// (the compensations): its page draws the attempts, the retry wait and the
/// compensations on one time axis. The pure layout, in the page, groups a parallel
/// step's branches under it and draws a sleep to its `until`.
#[tokio::test]
async fn dashboard_timeline_draws_attempts_retries_and_compensations() {
    let Some((chromium, chromedriver)) = ensure_browser() else {
        return;
    };
    let env = TestEnv::running(&[("order.toml", ORDER)]).await;
    let stop = CancellationToken::new();
    let base = common::serve_api(&env, &env.settings, &stop).await;
    let input =
        json!({"fail": {"payments.charge": {"times": 1}, "shipping.ship": {"retryable": false}}});
    let client = env.client().await;
    client
        .start("order_fulfillment", input, id("tl-1"))
        .await
        .unwrap();
    let ends = env.wait_terminal(&["tl-1".into()], T).await;
    assert_eq!(ends["tl-1"], "compensated");

    let driver = Driver::start(&chromedriver).await;
    let c = driver.browser(&chromium).await;
    c.goto(&format!("{base}/#/saga/tl-1")).await.unwrap();
    let bar = |step: &str, kind: &str| {
        format!("document.querySelector('[data-testid=gantt] [data-testid=gantt-bar][data-step={step}][data-kind={kind}]')")
    };
    let all = [
        bar("reserve_inventory", "attempt"),
        bar("charge_payment", "attempt_failed"),
        bar("charge_payment", "retry"),
        bar("charge_payment", "attempt"),
        bar("ship_order", "attempt_failed"),
        bar("charge_payment", "compensation"),
        bar("reserve_inventory", "compensation"),
    ]
    .join(" && ");
    wait_js(&c, "the timeline's bars", &all).await;
    // One row per step, in order, on one axis: the charge's retry wait comes after
    // its failed attempt, its compensation after the failed shipping.
    let rows = c
        .execute(
            "return [...document.querySelectorAll('[data-testid=gantt-row]')].map(r => r.dataset.step);",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        rows,
        json!(["reserve_inventory", "charge_payment", "ship_order"])
    );
    let x = |step: &str, kind: &str| {
        format!("Number(document.querySelector('[data-testid=gantt-bar][data-step={step}][data-kind={kind}]').getAttribute('x'))")
    };
    wait_js(
        &c,
        "the bars in time order",
        &format!(
            "{} <= {} && {} <= {}",
            x("charge_payment", "attempt_failed"),
            x("charge_payment", "retry"),
            x("ship_order", "attempt_failed"),
            x("charge_payment", "compensation")
        ),
    )
    .await;
    screenshot(&c, "[data-testid=gantt-section]", "dashboard-timeline").await;

    // The pure layout on a history with a parallel step, a sleep and a skip.
    let layout = c
        .execute(
            r#"return timelineLayout([
                {at: "2026-01-01T00:00:00Z", event: "saga_started", step: null, detail: {}},
                {at: "2026-01-01T00:00:01Z", event: "parallel_started", step: "fan", detail: {}},
                {at: "2026-01-01T00:00:01Z", event: "step_started", step: "a", detail: {in: "fan"}},
                {at: "2026-01-01T00:00:01Z", event: "attempt_started", step: "a", attempt: 1, detail: {in: "fan"}},
                {at: "2026-01-01T00:00:01Z", event: "step_started", step: "b", detail: {in: "fan"}},
                {at: "2026-01-01T00:00:01Z", event: "sleep_started", step: "b", detail: {in: "fan", until: "2026-01-01T00:00:09Z"}},
                {at: "2026-01-01T00:00:02Z", event: "step_started", step: "later", detail: {}},
                {at: "2026-01-01T00:00:02Z", event: "step_skipped", step: "later", detail: {}},
                {at: "2026-01-01T00:00:03Z", event: "step_completed", step: "a", detail: {in: "fan", duration_ms: 2000}}
            ]).rows.map(r => [r.step, r.group, r.bars.map(b => [b.kind, (b.end - b.start) / 1000, b.open])]);"#,
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        layout,
        json!([
            ["fan", null, [["step", 8, true]]],
            ["a", "fan", [["step", 2, false], ["attempt", 2, false]]],
            ["b", "fan", [["step", 8, true], ["sleep", 8, true]]],
            ["later", null, [["step", 0, false], ["skipped", 0, false]]]
        ])
    );

    c.close().await.unwrap();
    drop(driver);
    stop.cancel();
    env.cleanup().await;
}
