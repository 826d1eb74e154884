//! The operator HTTP API end to end: a server on port 0 in-process, against a real
//! coordinator and worker.

mod common;

use std::time::Duration;

use common::{eventually, TestEnv, APPROVAL, ORDER};
use reqwest::StatusCode;
use sagaflow::config::{ApiRole, ApiToken};
use sagaflow::tools::demo::activities::set_switch;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(30);

/// The demo switch that keeps `payments.refund` failing while it is on.
const REFUND_DOWN: &str = "refund_down";

/// An activity no worker hosts here: its task stays outstanding.
const MANUAL: &str = r#"
name = "manual"
version = 1
[[steps]]
name = "review"
activity = "manual.review"
"#;

/// Starts a server for `env` with `tokens` (`operate` tokens, named by position);
/// returns its base URL.
async fn serve(env: &TestEnv, tokens: &[&str], stop: &CancellationToken) -> String {
    let mut settings = env.settings.clone();
    settings.api.tokens = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| ApiToken::new(&format!("t{i}"), ApiRole::Operate, t))
        .collect();
    common::serve_api(env, &settings, stop).await
}

/// A client sending `X-Sagaflow-Request: 1`, which a tokenless API wants on every
/// request that changes something (tests/api_roles.rs checks that rule).
fn http_client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("x-sagaflow-request", "1".parse().unwrap());
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

async fn get(http: &reqwest::Client, url: String) -> (StatusCode, Value) {
    let r = http.get(url).send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn post(http: &reqwest::Client, url: String, body: Value) -> (StatusCode, Value) {
    let r = http.post(url).json(&body).send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Polls `GET /api/sagas/{id}` until the saga has `status`.
async fn wait_status(http: &reqwest::Client, base: &str, id: &str, status: &str) {
    eventually(&format!("{id} {status} over HTTP"), T, || async {
        let (_, v) = get(http, format!("{base}/api/sagas/{id}")).await;
        (v["state"]["status"] == status).then_some(()).ok_or(v)
    })
    .await
}

#[tokio::test]
async fn operator_api_end_to_end() {
    let files = [
        ("order.toml", ORDER),
        ("approval.toml", APPROVAL),
        ("manual.toml", MANUAL),
    ];
    let env = TestEnv::running(&files).await;
    let stop = CancellationToken::new();
    let base = serve(&env, &[], &stop).await;
    let http = http_client();

    let (code, v) = get(&http, format!("{base}/readyz")).await;
    assert_eq!(
        (code, v.clone()),
        (StatusCode::OK, json!({"postgres": true, "rabbitmq": true}))
    );

    // Start through POST, see it completed, read its history.
    for n in 1..=3 {
        let body =
            json!({"saga": "order_fulfillment", "id": format!("p-{n}"), "input": {"order_id": n}});
        let (code, v) = post(&http, format!("{base}/api/sagas"), body).await;
        assert_eq!(code, StatusCode::ACCEPTED, "{v}");
        assert_eq!(v["id"], format!("p-{n}"));
        // Distinct created_at order is not needed: ties break on id.
        wait_status(&http, &base, &format!("p-{n}"), "completed").await;
    }
    let (code, h) = get(&http, format!("{base}/api/sagas/p-1/history")).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(h["next_cursor"], Value::Null, "one page: {h}");
    let events: Vec<&str> = h["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(events.first(), Some(&"saga_started"));
    assert_eq!(events.last(), Some(&"saga_completed"));

    // Filters and two pages.
    let q = "saga=order_fulfillment&status=completed&id_prefix=p-&limit=2";
    let (code, page1) = get(&http, format!("{base}/api/sagas?{q}")).await;
    assert_eq!(code, StatusCode::OK, "{page1}");
    assert_eq!(page1["sagas"].as_array().unwrap().len(), 2);
    let cursor = page1["next_cursor"]
        .as_str()
        .expect("a second page")
        .to_string();
    let (_, page2) = get(&http, format!("{base}/api/sagas?{q}&cursor={cursor}")).await;
    assert_eq!(page2["sagas"].as_array().unwrap().len(), 1);
    assert!(page2["next_cursor"].is_null());
    let mut ids: Vec<String> = [&page1, &page2]
        .iter()
        .flat_map(|p| {
            p["sagas"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["id"].as_str().unwrap().to_string())
        })
        .collect();
    ids.sort();
    assert_eq!(ids, ["p-1", "p-2", "p-3"]);
    let (_, none) = get(&http, format!("{base}/api/sagas?saga=approval")).await;
    assert_eq!(none["sagas"], json!([]));
    let (code, bad) = get(&http, format!("{base}/api/sagas?limit=501")).await;
    assert_eq!(
        (code, bad["error"]["code"].clone()),
        (StatusCode::BAD_REQUEST, json!("bad_request"))
    );

    // Bad bodies are JSON 400s too.
    let (code, v) = post(&http, format!("{base}/api/sagas"), json!({"saga": "nope"})).await;
    assert_eq!(
        (code, v["error"]["code"].clone()),
        (StatusCode::BAD_REQUEST, json!("bad_request"))
    );
    let r = http
        .post(format!("{base}/api/sagas"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "bad_request"
    );

    // Signal one waiting saga, cancel another.
    for id in ["w-sig", "w-cancel"] {
        post(
            &http,
            format!("{base}/api/sagas"),
            json!({"saga": "approval", "id": id}),
        )
        .await;
    }
    for id in ["w-sig", "w-cancel"] {
        env.wait_history(id, "wait_started").await;
    }
    let (code, _) = post(
        &http,
        format!("{base}/api/sagas/w-sig/signal"),
        json!({"name": "approved", "payload": {"by": "ops"}}),
    )
    .await;
    assert_eq!(code, StatusCode::ACCEPTED);
    wait_status(&http, &base, "w-sig", "completed").await;
    let (code, _) = post(
        &http,
        format!("{base}/api/sagas/w-cancel/cancel"),
        json!({"reason": "test"}),
    )
    .await;
    assert_eq!(code, StatusCode::ACCEPTED);
    wait_status(&http, &base, "w-cancel", "cancelled").await;

    // 404 with its stable code, on reads and on commands.
    let (code, v) = get(&http, format!("{base}/api/sagas/nope")).await;
    assert_eq!(
        (code, v["error"]["code"].clone()),
        (StatusCode::NOT_FOUND, json!("saga_not_found"))
    );
    let (code, _) = post(&http, format!("{base}/api/sagas/nope/cancel"), json!({})).await;
    assert_eq!(code, StatusCode::NOT_FOUND);

    // A task no worker takes is outstanding work in the scaling signal and in /metrics.
    post(
        &http,
        format!("{base}/api/sagas"),
        json!({"saga": "manual", "id": "m-1"}),
    )
    .await;
    let s = eventually("an outstanding manual.review task", T, || async {
        let (_, s) = get(&http, format!("{base}/api/scaling?window=60")).await;
        (s["activities"]["manual.review"]["desired_workload"] == 1)
            .then_some(s.clone())
            .ok_or(s)
    })
    .await;
    assert_eq!(s["activities"]["manual.review"]["outstanding"], 1);
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("sagaflow_sagas{saga=\"order_fulfillment\",status=\"completed\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sagaflow_activity_outstanding{activity=\"manual.review\"} 1"),
        "{metrics}"
    );
    for expected in [
        "sagaflow_sagas_finished_total{saga=\"order_fulfillment\",status=\"completed\"} 3",
        "# TYPE sagaflow_step_duration_seconds histogram",
        "sagaflow_step_duration_seconds_count{activity=\"shipping.ship\"} 3",
        "sagaflow_step_duration_seconds_bucket{activity=\"shipping.ship\",le=\"+Inf\"} 3",
    ] {
        assert!(
            metrics.contains(expected),
            "{expected} missing in {metrics}"
        );
    }
    assert!(
        metrics.contains("sagaflow_task_queue_consumers{activity=\"inventory.reserve\"} 1"),
        "{metrics}"
    );

    // Queues: every task queue of the catalog and the coordinator's.
    let (code, q) = get(&http, format!("{base}/api/queues")).await;
    assert_eq!(code, StatusCode::OK);
    let acts: Vec<&str> = q
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["activity"].as_str().unwrap())
        .collect();
    assert!(
        acts.contains(&"coordinator") && acts.contains(&"manual.review"),
        "{q}"
    );
    let (code, d) = get(&http, format!("{base}/api/dead-letters")).await;
    assert_eq!(code, StatusCode::OK, "{d}");
    assert!(d["queues"].is_array());

    // The OpenAPI document served is the one generated from the routes (whose
    // coverage the unit tests in src/api/routes.rs check).
    let (code, doc) = get(&http, format!("{base}/api/openapi.json")).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        doc,
        serde_json::to_value(sagaflow::api::openapi::document()).unwrap()
    );

    // With tokens: 401 without one, 200 with it; probes stay open.
    let secured = serve(&env, &["t0ken"], &stop).await;
    let (code, v) = get(&http, format!("{secured}/api/sagas")).await;
    assert_eq!(
        (code, v["error"]["code"].clone()),
        (StatusCode::UNAUTHORIZED, json!("unauthorized"))
    );
    let r = http
        .get(format!("{secured}/api/sagas"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = http
        .get(format!("{secured}/api/sagas"))
        .bearer_auth("t0ken")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        get(&http, format!("{secured}/healthz")).await.0,
        StatusCode::OK
    );

    stop.cancel();
    env.cleanup().await;
}

#[tokio::test]
async fn operator_actions_dead_letters_and_schedules_over_http() {
    let nightly = r#"
name = "nightly"
version = 1
[[steps]]
name = "work"
activity = "inventory.reserve"
[[schedules]]
name = "midnight"
cron = "0 0 * * *"
"#;
    let env = TestEnv::running(&[("order.toml", ORDER), ("nightly.toml", nightly)]).await;
    let stop = CancellationToken::new();
    let base = serve(&env, &[], &stop).await;
    let http = http_client();
    let client = env.client().await;

    // A failed saga: retry is accepted only once it applies; skip is refused with 409.
    // The refund fails for good while the switch is on.
    set_switch(&env.pool, REFUND_DOWN, true).await.unwrap();
    let input = json!({"fail": {"shipping.ship": {"retryable": false}, "payments.refund": {"retryable": false, "while": REFUND_DOWN}}});
    let start = sagaflow::client::StartOptions {
        id: Some("f-http".into()),
        ..Default::default()
    };
    client
        .start("order_fulfillment", input, start)
        .await
        .unwrap();
    wait_status(&http, &base, "f-http", "failed").await;
    let (code, body) = post(
        &http,
        format!("{base}/api/sagas/f-http/actions"),
        json!({"action": "skip"}),
    )
    .await;
    assert_eq!(code, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "action_refused");
    let (code, _) = post(
        &http,
        format!("{base}/api/sagas/nope/actions"),
        json!({"action": "retry"}),
    )
    .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    // The outage ends: the retry's refund succeeds.
    set_switch(&env.pool, REFUND_DOWN, false).await.unwrap();
    // In bulk by filter: a dry run reports per saga and sends nothing.
    let (code, body) = post(&http, format!("{base}/api/sagas/actions"), json!({"action": {"action": "retry"}, "status": "failed", "id_prefix": "f-http", "dry_run": true})).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(
        (
            body["sent"].clone(),
            body["sagas"][0]["saga_id"].clone(),
            body["sagas"][0]["refused"].clone()
        ),
        (json!(0), json!("f-http"), json!(null))
    );
    let (code, _) = post(
        &http,
        format!("{base}/api/sagas/actions"),
        json!({"action": {"action": "retry"}}),
    )
    .await;
    assert_eq!(
        code,
        StatusCode::BAD_REQUEST,
        "a bulk action without a filter is refused"
    );
    let (code, body) = post(
        &http,
        format!("{base}/api/sagas/f-http/actions"),
        json!({"action": "retry"}),
    )
    .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{body}");
    wait_status(&http, &base, "f-http", "compensated").await;

    // A dead letter that names its saga: dry run, then replay; it leaves the queue.
    let task = json!({"saga_id": "f-http", "step": "ship_order", "activity": "shipping.ship", "attempt": 9});
    client
        .publish_raw(&env.names.dlx(), "coordinator", task.to_string().as_bytes())
        .await
        .unwrap();
    let dlq = env.names.dlq_coordinator();
    env.wait_depth(&dlq, 1).await;
    let (code, body) = post(
        &http,
        format!("{base}/api/dead-letters/coordinator/purge"),
        json!({"saga": "f-http", "dry_run": true}),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["messages"][0]["about"]["saga_id"], "f-http");
    assert_eq!(body["messages"][0]["applied"], false);
    assert_eq!(env.depth(&dlq).await, 1);
    let (_, body) = post(
        &http,
        format!("{base}/api/dead-letters/coordinator/purge"),
        json!({"saga": "f-http"}),
    )
    .await;
    assert_eq!(body["messages"][0]["applied"], true, "{body}");
    assert_eq!(env.depth(&dlq).await, 0);

    // Schedules: listed, paused, resumed, triggered; unknown ones are 404.
    let rows = eventually("the file schedule synced", T, || async {
        let (_, v) = get(&http, format!("{base}/api/schedules")).await;
        match v["schedules"].as_array() {
            Some(a) if !a.is_empty() => Ok(v["schedules"].clone()),
            _ => Err(v),
        }
    })
    .await;
    assert_eq!(rows[0]["name"], "nightly.midnight");
    for op in ["pause", "resume", "trigger"] {
        let (code, body) = post(
            &http,
            format!("{base}/api/schedules/nightly.midnight/{op}"),
            json!({}),
        )
        .await;
        assert_eq!(code, StatusCode::OK, "{op}: {body}");
    }
    let (code, body) = post(&http, format!("{base}/api/schedules/nope/pause"), json!({})).await;
    assert_eq!(
        (code, body["error"]["code"].clone()),
        (StatusCode::NOT_FOUND, json!("schedule_not_found"))
    );
    let (code, _) = post(
        &http,
        format!("{base}/api/schedules/nightly.midnight/explode"),
        json!({}),
    )
    .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    stop.cancel();
    env.cleanup().await;
}

/// `GET /api/overview` on a database with known sagas: counts per definition and
/// status, the sagas started and ended in each minute of the last hour (not before),
/// and the open sagas oldest first.
#[tokio::test]
async fn overview_counts_and_buckets_sagas_by_minute() {
    use chrono::{DurationRound, TimeDelta, Utc};
    let env = TestEnv::database_only(&[("order.toml", ORDER)]).await;
    let now = Utc::now();
    common::overview_sagas(&env, now).await;
    let stop = CancellationToken::new();
    let base = serve(&env, &[], &stop).await;
    let (code, v) = get(&http_client(), format!("{base}/api/overview")).await;
    assert_eq!(code, StatusCode::OK, "{v}");

    let count = |status: &str| {
        v["counts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["saga"] == "order_fulfillment" && c["status"] == status)
            .map_or(0, |c| c["count"].as_i64().unwrap())
    };
    let counts: Vec<i64> = [
        "completed",
        "failed",
        "compensated",
        "running",
        "compensating",
    ]
    .iter()
    .map(|s| count(s))
    .collect();
    assert_eq!(counts, [3, 1, 1, 2, 1], "{v:#}");
    assert_eq!(v["stuck"], 0);

    let minutes = v["throughput"].as_array().unwrap();
    assert_eq!(minutes.len(), 60, "{v:#}");
    let at = |m: &Value| {
        m["minute"]
            .as_str()
            .unwrap()
            .parse::<chrono::DateTime<Utc>>()
            .unwrap()
    };
    for pair in minutes.windows(2) {
        assert_eq!(
            at(&pair[1]) - at(&pair[0]),
            TimeDelta::minutes(1),
            "{pair:?}"
        );
    }
    let minute = |ago: i64| {
        let t = (now - TimeDelta::minutes(ago))
            .duration_trunc(TimeDelta::minutes(1))
            .unwrap();
        minutes
            .iter()
            .find(|m| at(m) == t)
            .unwrap_or_else(|| panic!("no bucket {t} in {v:#}"))
    };
    let sum = |k: &str| minutes.iter().map(|m| m[k].as_i64().unwrap()).sum::<i64>();
    // The two sagas of two and three hours ago are outside the hour.
    assert_eq!(sum("started"), 6, "{v:#}");
    assert_eq!(
        [
            sum("completed"),
            sum("failed"),
            sum("compensated"),
            sum("cancelled")
        ],
        [2, 1, 1, 0]
    );
    assert_eq!(minute(5)["started"], 3);
    assert_eq!(minute(3)["completed"], 2);
    assert_eq!(minute(2)["failed"], 1);
    assert_eq!(minute(9)["compensated"], 1);

    let oldest: Vec<&str> = v["oldest_open"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(oldest, ["ov-run-120", "ov-compensating-50", "ov-run-30"]);
    stop.cancel();
    env.cleanup().await;
}
