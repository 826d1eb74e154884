//! API tokens and roles, over real sockets: which role reaches which route (401
//! without a token, 403 naming the role a route needs), the actor each operator action
//! records, and the rules of an API without tokens (loopback host names only, a header
//! on every change) and the dashboard's security headers.

mod common;

use std::time::Duration;

use common::{TestEnv, APPROVAL, ORDER};
use reqwest::StatusCode;
use sagaflow::api;
use sagaflow::config::{ApiRole, ApiToken};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(30);

const OPERATE: &str = "s-operate-0123456789";
const READ: &str = "s-read-0123456789";
const SCALING: &str = "s-scaling-0123456789";

fn tokens() -> Vec<ApiToken> {
    vec![
        ApiToken::new("ops-ann", ApiRole::Operate, OPERATE),
        ApiToken::new("dash", ApiRole::Read, READ),
        ApiToken::new("keda", ApiRole::Scaling, SCALING),
    ]
}

/// Serves `env` with `tokens`; returns `(base URL, port)`.
async fn serve(env: &TestEnv, tokens: Vec<ApiToken>, stop: &CancellationToken) -> (String, u16) {
    let mut settings = env.settings.clone();
    settings.api.tokens = tokens;
    let base = common::serve_api(env, &settings, stop).await;
    let port = base
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port");
    (base, port)
}

/// Every documented `/api` operation as (method, path template, concrete path).
fn api_routes() -> Vec<(String, String, String)> {
    let doc = serde_json::to_value(api::openapi::document()).unwrap();
    let mut out = vec![];
    for (path, item) in doc["paths"].as_object().unwrap() {
        if !path.starts_with("/api/") {
            continue;
        }
        for method in item.as_object().unwrap().keys() {
            let concrete = path
                .replace("{queue}", "coordinator")
                .replace("{id}", "no-such-saga")
                .replace("{name}", "no-such-schedule")
                .replace("{op}", "pause");
            out.push((method.to_uppercase(), path.clone(), concrete));
        }
    }
    out
}

/// What each route needs, said independently of the route table: the scaling signal
/// `scaling`, every other read `read`, every change `operate`.
fn needed(method: &str, path: &str) -> ApiRole {
    match (method, path) {
        ("GET", "/api/scaling") => ApiRole::Scaling,
        ("GET", _) => ApiRole::Read,
        _ => ApiRole::Operate,
    }
}

async fn call(
    http: &reqwest::Client,
    method: &str,
    url: &str,
    secret: Option<&str>,
) -> (StatusCode, Value, reqwest::header::HeaderMap) {
    let mut req = match method {
        "GET" => http.get(url),
        "POST" => http.post(url).json(&json!({})),
        other => panic!("no request for {other} yet"),
    };
    if let Some(s) = secret {
        req = req.bearer_auth(s);
    }
    let r = req.send().await.unwrap();
    let (status, headers) = (r.status(), r.headers().clone());
    (status, r.json().await.unwrap_or(Value::Null), headers)
}

/// Each role against every documented route: granted routes are reached (whatever
/// the handler then answers), the others are a 403 whose message names the token,
/// its role and the role needed; no token or an unknown one is a 401.
#[tokio::test]
async fn each_role_reaches_its_routes_and_is_refused_the_others() {
    let env = TestEnv::new(&[("order.toml", ORDER)]).await;
    let stop = CancellationToken::new();
    let (base, _) = serve(&env, tokens(), &stop).await;
    let http = reqwest::Client::new();
    let routes = api_routes();
    assert!(routes.len() >= 16, "{routes:?}");
    let mut table = vec![];
    for (method, template, path) in &routes {
        let url = format!("{base}{path}");
        let need = needed(method, template);
        table.push(format!("{method} {template}: {need}"));
        for (name, role, secret) in [
            ("ops-ann", ApiRole::Operate, OPERATE),
            ("dash", ApiRole::Read, READ),
            ("keda", ApiRole::Scaling, SCALING),
        ] {
            let (code, body, _) = call(&http, method, &url, Some(secret)).await;
            if role.grants(need) {
                assert!(
                    code != StatusCode::UNAUTHORIZED && code != StatusCode::FORBIDDEN,
                    "{name} ({role}) {method} {template}: {code} {body}"
                );
            } else {
                assert_eq!(
                    code,
                    StatusCode::FORBIDDEN,
                    "{name} {method} {template}: {body}"
                );
                assert_eq!(body["error"]["code"], "forbidden", "{body}");
                let msg = body["error"]["message"].as_str().unwrap();
                assert_eq!(
                    msg,
                    format!(
                        "token `{name}` has role `{role}`; {method} {template} needs role `{need}`"
                    )
                );
                assert!(!msg.contains(secret));
            }
        }
        let (code, body, headers) = call(&http, method, &url, None).await;
        assert_eq!(
            (code, &body["error"]["code"]),
            (StatusCode::UNAUTHORIZED, &json!("unauthorized"))
        );
        assert_eq!(headers["www-authenticate"], "Bearer");
        let (code, _, _) = call(&http, method, &url, Some("s-guess-0123456789")).await;
        assert_eq!(code, StatusCode::UNAUTHORIZED, "{method} {template}");
    }
    eprintln!("routes and the role they need:\n  {}", table.join("\n  "));
    // Probes and metrics stay open; a token changes nothing there.
    for open in ["/healthz", "/readyz", "/metrics"] {
        let r = http.get(format!("{base}{open}")).send().await.unwrap();
        assert_ne!(r.status(), StatusCode::UNAUTHORIZED, "{open}");
    }
    // With tokens, neither the host rule nor the request header applies (a bearer
    // token is what a cross-site request cannot send).
    let r = http
        .post(format!("{base}/api/sagas/no-such-saga/cancel"))
        .header("host", "sagaflow.example:443")
        .bearer_auth(OPERATE)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    stop.cancel();
    env.cleanup().await;
}

/// Who acted is in the history: the token's name for the API, `cli:<user>` for the
/// CLI; never a secret. A role that may not act sends nothing.
#[tokio::test]
async fn operator_actions_record_their_actor() {
    let env = TestEnv::running(&[("approval.toml", APPROVAL)]).await;
    let stop = CancellationToken::new();
    let (base, _) = serve(&env, tokens(), &stop).await;
    let http = reqwest::Client::new();
    let client = env.client().await;
    for id in ["ap-api", "ap-cli", "ap-bulk-1"] {
        client
            .start("approval", json!({}), common::id(id))
            .await
            .unwrap();
        env.wait_history(id, "wait_started").await;
    }
    let skip = json!({"action": "skip", "output": {"approved": true}});

    // A read token may not; nothing is sent.
    let url = format!("{base}/api/sagas/ap-api/actions");
    let r = http
        .post(&url)
        .bearer_auth(READ)
        .json(&skip)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = http
        .post(&url)
        .bearer_auth(OPERATE)
        .json(&skip)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    env.wait_status("ap-api", "completed", T).await;

    let bulk = json!({"action": {"action": "skip", "output": null}, "id_prefix": "ap-bulk-"});
    let r = http
        .post(format!("{base}/api/sagas/actions"))
        .bearer_auth(OPERATE)
        .json(&bulk)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    env.wait_status("ap-bulk-1", "completed", T).await;

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sagaflow"))
        .args(["sagas", "skip", "ap-cli", "--output", "{}"])
        .envs(env.child_env())
        .env("USER", "ann")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.wait_status("ap-cli", "completed", T).await;

    for (id, actor) in [
        ("ap-api", "ops-ann"),
        ("ap-bulk-1", "ops-ann"),
        ("ap-cli", "cli:ann"),
    ] {
        let history = sagaflow::store::history::all(&env.pool, id).await.unwrap();
        let actions: Vec<&Value> = history
            .iter()
            .filter(|h| h.event == "operator_action")
            .map(|h| &h.detail)
            .collect();
        assert_eq!(
            actions.len(),
            1,
            "{id}: one action, the refused one was never sent"
        );
        assert_eq!(actions[0]["actor"], actor, "{id}: {}", actions[0]);
        assert_eq!(actions[0]["action"]["action"], "skip");
        let all =
            serde_json::to_string(&history.iter().map(|h| &h.detail).collect::<Vec<_>>()).unwrap();
        assert!(!all.contains(OPERATE), "a secret in the history of {id}");
    }
    // Shown by the API too.
    let r = http
        .get(format!("{base}/api/sagas/ap-api/history"))
        .bearer_auth(READ)
        .send()
        .await
        .unwrap();
    let h: Value = r.json().await.unwrap();
    let action = h["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "operator_action")
        .unwrap();
    assert_eq!(action["detail"]["actor"], "ops-ann");

    client.close().await;
    stop.cancel();
    env.cleanup().await;
}

/// Without tokens: only loopback host names (DNS rebinding), a header on every change
/// (cross-site forms); and the dashboard's Content-Security-Policy and framing ban.
#[tokio::test]
async fn without_tokens_loopback_hosts_and_marked_changes_only() {
    let env = TestEnv::new(&[("order.toml", ORDER)]).await;
    let stop = CancellationToken::new();
    let (base, port) = serve(&env, vec![], &stop).await;
    let http = reqwest::Client::new();

    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        "localhost".to_string(),
    ] {
        let r = http
            .get(format!("{base}/api/sagas"))
            .header("host", &host)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "Host: {host}");
    }
    for host in [
        format!("evil.example:{port}"),
        "evil.example".to_string(),
        format!("localhost.evil.example:{port}"),
        format!("127.0.0.1.nip.io:{port}"),
    ] {
        for path in ["/api/sagas", "/", "/app.js", "/metrics", "/healthz"] {
            let r = http
                .get(format!("{base}{path}"))
                .header("host", &host)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::FORBIDDEN, "Host: {host} {path}");
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["error"]["code"], "host_not_allowed", "{body}");
        }
    }

    // A change without the header is refused before it reaches the handler; reads
    // need no header.
    // (An unknown saga: the handler answers 400 once it is reached.)
    let start = json!({"saga": "nope"});
    let r = http
        .post(format!("{base}/api/sagas"))
        .json(&start)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "request_header_required", "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("X-Sagaflow-Request: 1"));
    // A form post (what another site can make a browser send) is refused the same way.
    let r = http
        .post(format!("{base}/api/schedules/nightly/trigger"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("a=1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = http
        .post(format!("{base}/api/sagas"))
        .header("x-sagaflow-request", "1")
        .json(&start)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // The dashboard: no framing, only its own script, style and API.
    for path in ["/", "/app.js", "/style.css"] {
        let r = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let h = r.headers();
        let csp = h["content-security-policy"].to_str().unwrap();
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
    }
    let js = http
        .get(format!("{base}/app.js"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        js.contains("\"X-Sagaflow-Request\": \"1\""),
        "the dashboard sends the header"
    );

    stop.cancel();
    env.cleanup().await;
}
