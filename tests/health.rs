//! A coordinator serves its own probes, says why it is not ready, and stops promptly
//! on SIGTERM even while a broker hangs in the AMQP handshake.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{eventually, TestEnv};
use tokio::process::{Child, Command};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn coordinator(env: &TestEnv, extra: &[(&str, String)]) -> Child {
    let log = std::fs::File::create(env.dir.join("coordinator.log")).unwrap();
    Command::new(env!("CARGO_BIN_EXE_sagaflow"))
        .arg("coordinator")
        .envs(env.child_env())
        .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// GETs `url` until `ok` accepts (status, body) or `within` passes.
async fn poll(url: &str, within: Duration, ok: impl Fn(u16, &str) -> bool) -> (u16, String) {
    let what = format!("{url} answers as wanted");
    eventually(&what, within, || async {
        let r = reqwest::get(url)
            .await
            .map_err(|e| (0, format!("no answer: {e}")))?;
        let status = r.status().as_u16();
        let answer = (status, r.text().await.unwrap_or_default());
        if ok(answer.0, &answer.1) {
            Ok(answer)
        } else {
            Err(answer)
        }
    })
    .await
}

async fn sigterm_and_wait(child: &mut Child, within: Duration) -> Duration {
    let began = Instant::now();
    let pid = child.id().expect("running");
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    let status = tokio::time::timeout(within, child.wait())
        .await
        .unwrap_or_else(|_| panic!("still running {within:?} after SIGTERM"))
        .unwrap();
    assert!(status.success(), "{status}");
    began.elapsed()
}

#[tokio::test]
async fn the_coordinator_serves_its_own_probes() {
    let env = TestEnv::new(&[("order.toml", common::ORDER)]).await;
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = coordinator(
        &env,
        &[("SAGAFLOW__COORDINATOR__HEALTH_LISTEN", addr.clone())],
    );
    let (_, body) = poll(
        &format!("http://{addr}/readyz"),
        Duration::from_secs(30),
        |s, _| s == 200,
    )
    .await;
    assert!(body.contains("\"broker_connected\":true"), "{body}");
    let (_, live) = poll(
        &format!("http://{addr}/livez"),
        Duration::from_secs(5),
        |s, _| s == 200,
    )
    .await;
    assert_eq!(live, "ok");
    let (_, metrics) = poll(
        &format!("http://{addr}/metrics"),
        Duration::from_secs(5),
        |s, _| s == 200,
    )
    .await;
    assert!(
        metrics.contains("sagaflow_broker_connected{role=\"coordinator\"} 1"),
        "{metrics}"
    );
    sigterm_and_wait(&mut child, Duration::from_secs(15)).await;
    env.cleanup().await;
}

/// Every hop of a step's round trip inside the two processes is measured once per
/// batch or task: a 3-step saga leaves counts in each histogram.
#[tokio::test]
async fn coordinator_and_worker_measure_each_hop() {
    let mut env = TestEnv::new(&[("order.toml", common::ORDER)]).await;
    let coordinator = env.start_coordinator().await;
    let worker = env.start_worker().await;
    env.client()
        .await
        .start(
            "order_fulfillment",
            serde_json::json!({}),
            common::id("hops-1"),
        )
        .await
        .unwrap();
    env.wait_status("hops-1", "completed", Duration::from_secs(30))
        .await;
    let count = |text: &str, role: &str, hop: &str| -> u64 {
        let key = format!("sagaflow_hop_seconds_count{{role=\"{role}\",hop=\"{hop}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(key.as_str()))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let c = coordinator.metrics();
    // The start and three results: at least four batches, each with outbox rows.
    assert!(count(&c, "coordinator", "coordinator_commit") >= 4, "{c}");
    assert!(count(&c, "coordinator", "outbox_publish") >= 4, "{c}");
    let w = worker.metrics();
    assert_eq!(count(&w, "worker", "handler"), 3, "{w}");
    for hop in ["ledger_lookup", "ledger_write", "result_publish"] {
        assert!(count(&w, "worker", hop) >= 1, "{hop}: {w}");
    }
    env.cleanup().await;
}

#[tokio::test]
async fn a_broker_that_never_finishes_the_handshake_is_named_and_sigterm_still_stops() {
    let env = TestEnv::new(&[("order.toml", common::ORDER)]).await;
    // Accepts TCP and never says a word: what RabbitMQ does when out of file handles.
    let mute = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mute_url = format!("amqp://guest:guest@{}/%2f", mute.local_addr().unwrap());
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = coordinator(
        &env,
        &[
            ("SAGAFLOW__COORDINATOR__HEALTH_LISTEN", addr.clone()),
            ("SAGAFLOW__AMQP__URL", mute_url),
        ],
    );
    let (status, body) = poll(
        &format!("http://{addr}/readyz"),
        Duration::from_secs(40),
        |_, b| b.contains("handshake"),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert!(
        !body.contains("guest:guest"),
        "no password in the report: {body}"
    );
    // Mid-handshake again by now (it retries); SIGTERM must not wait for it.
    let took = sigterm_and_wait(&mut child, Duration::from_secs(5)).await;
    assert!(took < Duration::from_secs(5), "{took:?}");
    drop(mute);
    env.cleanup().await;
}
