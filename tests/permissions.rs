//! Least privilege on the real broker. The shipped
//! `deploy/rabbitmq/definitions.example.json` is rendered for a fresh vhost and this
//! test's namespace, imported with `rabbitmqctl import_definitions`, and the whole
//! system runs with it: the coordinator, the worker, a service and the operator API
//! each connect as their own user. Then each role tries what it must not do.
//!
//! The vhost and the four users are deleted when the test ends, failed or not (a
//! `Drop` guard); deleting the vhost deletes every queue the test declared in it.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use common::{id, pg_base, TestEnv, APPROVAL, ORDER};
use lapin::options::BasicConsumeOptions;
use lapin::types::FieldTable;
use sagaflow::broker::Subscription;
use sagaflow::client::{Client, ClientError};
use sagaflow::config::{ApiRole, ApiToken};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(30);

const DEFINITIONS: &str = include_str!("../deploy/rabbitmq/definitions.example.json");
const ROLES: [&str; 4] = ["coordinator", "worker", "service", "operator"];

/// A vhost and users of this test's own on the machine's broker, deleted on drop.
struct BrokerUsers {
    vhost: String,
    users: Vec<String>,
    /// role -> `amqp://user:password@host/vhost`
    urls: BTreeMap<&'static str, String>,
}

fn rabbitmqctl(args: &[&str]) -> Result<String, String> {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .current_dir("/tmp")
        .output()
        .map_err(|e| format!("cannot run rabbitmqctl (this test needs it): {e}"))?;
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("rabbitmqctl {}: {text}", args.join(" ")))
    }
}

impl Drop for BrokerUsers {
    fn drop(&mut self) {
        if let Err(e) = rabbitmqctl(&["delete_vhost", &self.vhost]) {
            eprintln!("cleanup: {e}");
        }
        for u in &self.users {
            if let Err(e) = rabbitmqctl(&["delete_user", u]) {
                eprintln!("cleanup: {e}");
            }
        }
    }
}

/// The shipped definitions with namespace `sagaflow`, vhost `sagaflow` and users
/// `sagaflow-<role>` replaced by this test's, and a fresh password per user.
fn render(ns: &str, vhost: &str, prefix: &str, password: &str) -> Value {
    let mut d: Value = serde_json::from_str(DEFINITIONS).expect("the shipped definitions are JSON");
    let user = |name: &str| {
        let role = name
            .strip_prefix("sagaflow-")
            .unwrap_or_else(|| panic!("user {name} is not sagaflow-<role>"));
        format!("{prefix}-{role}")
    };
    for v in d["vhosts"].as_array_mut().unwrap() {
        assert_eq!(v["name"], "sagaflow");
        v["name"] = json!(vhost);
    }
    for u in d["users"].as_array_mut().unwrap() {
        u["name"] = json!(user(u["name"].as_str().unwrap()));
        u["password"] = json!(password);
    }
    let escaped = ns.replace('.', "\\.");
    for p in d["permissions"].as_array_mut().unwrap() {
        p["user"] = json!(user(p["user"].as_str().unwrap()));
        assert_eq!(p["vhost"], "sagaflow");
        p["vhost"] = json!(vhost);
        for kind in ["configure", "write", "read"] {
            let re = p[kind].as_str().unwrap();
            // Every pattern is anchored on the namespace (or matches nothing).
            assert!(
                re == "^$" || re.starts_with("^sagaflow\\."),
                "{kind} of {}: {re}",
                p["user"]
            );
            p[kind] = json!(re.replacen("^sagaflow\\.", &format!("^{escaped}\\."), 1));
        }
    }
    d
}

impl BrokerUsers {
    /// Imports the rendered definitions; returns once every user can connect.
    async fn create(ns: &str) -> BrokerUsers {
        let tag = &uuid::Uuid::now_v7().simple().to_string()[20..];
        let vhost = format!("sagaflow-perm-{tag}");
        let prefix = format!("sfperm{tag}");
        let password = uuid::Uuid::now_v7().simple().to_string();
        let host = common::amqp_url()
            .rsplit_once('@')
            .map(|(_, h)| h.to_string())
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let guard = BrokerUsers {
            vhost: vhost.clone(),
            users: ROLES.iter().map(|r| format!("{prefix}-{r}")).collect(),
            urls: ROLES
                .iter()
                .map(|r| (*r, format!("amqp://{prefix}-{r}:{password}@{host}/{vhost}")))
                .collect(),
        };
        let file = std::env::temp_dir().join(format!("{vhost}.json"));
        let defs = render(ns, &vhost, &prefix, &password);
        std::fs::write(&file, serde_json::to_vec_pretty(&defs).unwrap()).unwrap();
        let imported = rabbitmqctl(&["import_definitions", file.to_str().unwrap()]);
        let _ = std::fs::remove_file(&file);
        imported.unwrap();
        // The import is applied asynchronously: wait until every user gets in.
        for url in guard.urls.values() {
            let deadline = tokio::time::Instant::now() + T;
            while sagaflow::broker::connect(url, "perm-probe")
                .await
                .map(|c| c.is_connected())
                .is_err()
            {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the imported users never could connect"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        guard
    }

    fn url(&self, role: &str) -> &str {
        &self.urls[role]
    }
}

/// The broker refused this user the operation (403 ACCESS_REFUSED).
fn refused(e: &ClientError) -> bool {
    matches!(e, ClientError::Broker(b) if b.is_access_refused())
}

fn lapin_refused(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(p) if p.get_id() == 403)
}

#[tokio::test]
async fn each_role_runs_with_its_own_permissions_and_no_more() {
    let files = [("order.toml", ORDER), ("approval.toml", APPROVAL)];
    // The namespace is chosen before the users: their patterns name it.
    let mut env = TestEnv::on(&files, &common::amqp_url(), &pg_base()).await;
    let ns = env.names.namespace().to_string();
    let users = BrokerUsers::create(&ns).await;
    env.settings.amqp.url = users.url("coordinator").to_string();
    env.start_coordinator().await;
    env.settings.amqp.url = users.url("worker").to_string();
    env.start_worker().await;

    // A service: starts sagas and watches their outcome through a queue of its own.
    let svc = Client::connect(users.url("service"), &ns).await.unwrap();
    let watch = sagaflow::broker::connect(users.url("service"), "perm-watch")
        .await
        .unwrap();
    let mut events = Subscription::saga_events(&watch, &env.names, "order_fulfillment")
        .await
        .unwrap();
    // One failed attempt first: its retry goes through a delay queue, which the
    // coordinator declares on first use.
    let once = json!({"fail": {"inventory.reserve": {"times": 1}}});
    svc.start("order_fulfillment", once, id("ok-1"))
        .await
        .unwrap();
    let declined =
        json!({"fail": {"payments.charge": {"code": "card_declined", "retryable": false}}});
    svc.start("order_fulfillment", declined, id("comp-1"))
        .await
        .unwrap();
    svc.start("approval", json!({}), id("ap-1")).await.unwrap();
    let ends = env
        .wait_terminal(&["ok-1".into(), "comp-1".into()], T)
        .await;
    assert_eq!(ends["ok-1"], "completed");
    assert_eq!(ends["comp-1"], "compensated");
    assert!(env
        .history("ok-1")
        .await
        .contains(&"retry_scheduled".to_string()));
    let deadline = tokio::time::Instant::now() + T;
    let mut seen = BTreeMap::new();
    while seen.len() < 2 {
        let body = events.next_before(deadline).await.expect("two saga events");
        let e: sagaflow::messages::SagaEvent = serde_json::from_slice(&body).unwrap();
        seen.insert(e.saga_id, e.status);
    }
    assert_eq!(seen["ok-1"], "completed");
    assert_eq!(seen["comp-1"], "compensated");

    // The operator: `sagaflow serve` connected as the operator user, called with an
    // `operate` token: a start, an action on `<ns>.operator` (its history names the
    // token), queue counts, and a dead letter replayed and purged.
    env.wait_history("ap-1", "wait_started").await;
    let mut api_settings = env.settings.clone();
    api_settings.amqp.url = users.url("operator").to_string();
    api_settings.api.tokens = vec![ApiToken::new("ops-ann", ApiRole::Operate, "s-ann-01234")];
    let stop = CancellationToken::new();
    let base = format!(
        "{}/api",
        common::serve_api(&env, &api_settings, &stop).await
    );
    let http = reqwest::Client::new();
    let call = |method: reqwest::Method, path: &str, body: Option<Value>| {
        let req = http
            .request(method, format!("{base}{path}"))
            .bearer_auth("s-ann-01234");
        let req = match body {
            Some(b) => req.json(&b),
            None => req,
        };
        async move {
            let r = req.send().await.unwrap();
            let code = r.status();
            (code, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (code, v) = call(
        reqwest::Method::POST,
        "/sagas",
        Some(json!({"saga": "order_fulfillment", "id": "api-1"})),
    )
    .await;
    assert_eq!(code, reqwest::StatusCode::ACCEPTED, "{v}");
    let skip = json!({"action": "skip", "output": {"approved_by": "ann"}});
    let (code, v) = call(reqwest::Method::POST, "/sagas/ap-1/actions", Some(skip)).await;
    assert_eq!(code, reqwest::StatusCode::ACCEPTED, "{v}");
    env.wait_status("ap-1", "completed", T).await;
    env.wait_status("api-1", "completed", T).await;
    let history = sagaflow::store::history::all(&env.pool, "ap-1")
        .await
        .unwrap();
    let action = history
        .iter()
        .find(|h| h.event == "operator_action")
        .unwrap();
    assert_eq!(action.detail["actor"], "ops-ann");
    let (code, queues) = call(reqwest::Method::GET, "/queues", None).await;
    assert_eq!(code, reqwest::StatusCode::OK, "{queues}");
    assert!(
        queues
            .as_array()
            .unwrap()
            .iter()
            .any(|q| q["activity"] == "coordinator" && q["consumers"] == 1),
        "{queues}"
    );
    // A start the coordinator cannot read is dead-lettered; the operator replays it
    // (it comes back: still unreadable), then purges it.
    svc.publish_raw(&env.names.start(), "order_fulfillment", b"not json")
        .await
        .unwrap();
    let dlq = env.names.dlq_coordinator();
    let dead_depth = |n: u64| {
        let (call, dlq) = (&call, &dlq);
        async move {
            let deadline = tokio::time::Instant::now() + T;
            loop {
                let (_, v) = call(reqwest::Method::GET, "/dead-letters", None).await;
                let depth = v["queues"]
                    .as_array()
                    .and_then(|qs| qs.iter().find(|q| q["queue"] == dlq.as_str()))
                    .and_then(|q| q["messages"].as_u64());
                if depth == Some(n) {
                    return;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{dlq} never held {n}: {v}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    dead_depth(1).await;
    for (action, left) in [("replay", 1), ("purge", 0)] {
        let path = format!("/dead-letters/coordinator/{action}");
        let (code, v) = call(reqwest::Method::POST, &path, Some(json!({}))).await;
        assert_eq!(code, reqwest::StatusCode::OK, "{action}: {v}");
        assert_eq!(v["messages"][0]["applied"], true, "{action}: {v}");
        dead_depth(left).await;
    }
    stop.cancel();

    // What each role must not do. A refused publish closes the publisher's channel,
    // so each attempt gets a client of its own.
    for exchange in [env.names.operator(), env.names.results()] {
        let c = Client::connect(users.url("service"), &ns).await.unwrap();
        let e = c.publish_raw(&exchange, "", b"{}").await.unwrap_err();
        assert!(refused(&e), "service publishing to {exchange}: {e}");
        assert!(
            !c.is_connected(),
            "the refused publish closed the publishing channel"
        );
        c.close().await;
    }
    let raw = lapin::Connection::connect(users.url("service"), Default::default())
        .await
        .unwrap();
    let ch = raw.create_channel().await.unwrap();
    let task_q = env.names.task_queue("inventory.reserve");
    let e = ch
        .basic_consume(
            task_q.as_str().into(),
            "thief".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert!(lapin_refused(&e), "service consuming {task_q}: {e}");
    let _ = raw.close(200, "ok".into()).await;
    let w = Client::connect(users.url("worker"), &ns).await.unwrap();
    let e = w
        .start("order_fulfillment", json!({}), id("forged-1"))
        .await
        .unwrap_err();
    assert!(refused(&e), "worker publishing a start: {e}");
    w.close().await;
    assert_eq!(env.status("forged-1").await, None);

    svc.close().await;
    watch.close("ok").await;
    env.settings.amqp.url = users.url("coordinator").to_string();
    env.cleanup().await;
    drop(users);
}

/// The `rabbitmqctl set_permissions` recipe in docs/security.md grants what the
/// definitions file grants, pattern for pattern.
#[test]
fn the_documented_recipe_matches_the_definitions_file() {
    let doc = include_str!("../docs/security.md");
    let start = doc.find("rabbitmqctl set_permissions").expect("the recipe");
    let end = start + doc[start..].find("```").expect("the end of the recipe");
    let recipe = doc[start..end].replace("\\\n", " ");
    let mut documented = BTreeMap::new();
    for line in recipe.lines().filter(|l| l.contains("set_permissions")) {
        // `rabbitmqctl set_permissions -p "$VHOST" <user> "<c>" "<w>" "<r>"`
        let user = line.split_whitespace().nth(4).expect("a user").to_string();
        let quoted: Vec<String> = line
            .split('"')
            .skip(1)
            .step_by(2)
            .skip(1) // "$VHOST"
            .map(|q| q.replace("$NS", "sagaflow").replace("\\$", "$"))
            .collect();
        documented.insert(user, quoted);
    }
    let defs: Value = serde_json::from_str(DEFINITIONS).unwrap();
    let mut shipped = BTreeMap::new();
    for p in defs["permissions"].as_array().unwrap() {
        let patterns = ["configure", "write", "read"].map(|k| p[k].as_str().unwrap().to_string());
        shipped.insert(p["user"].as_str().unwrap().to_string(), patterns.to_vec());
    }
    assert_eq!(documented, shipped);
    assert_eq!(shipped.len(), ROLES.len());
}
