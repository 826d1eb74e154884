//! Trace context through the real broker and database (issue 13): a saga started with
//! a `traceparent` is one trace, its child saga included; the coordinator records a
//! `saga.step` span per applied or timed-out attempt and the worker a `task` span per
//! handler run, both children of the start's span, with the same `saga.*` attribute
//! names. Spans go to the SDK's in-memory exporter,
//! installed once for this test binary as the global subscriber.

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use common::{eventually, TestEnv, ORDER};
use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use sagaflow::client::StartOptions;
use sagaflow::traceparent::TraceParent;
use serde_json::json;
use tracing_subscriber::layer::SubscriberExt;

const T: Duration = Duration::from_secs(30);

/// A parent saga whose second step runs the order as a child saga.
const WITH_CHILD: &str = r#"
name = "traced_parent"
version = 1
[[steps]]
name = "reserve"
activity = "inventory.reserve"
compensate = "inventory.release"
[[steps]]
name = "order"
saga = "order_fulfillment"
"#;

static SPANS: OnceLock<(InMemorySpanExporter, SdkTracerProvider)> = OnceLock::new();

fn exporter() -> &'static InMemorySpanExporter {
    &SPANS
        .get_or_init(|| {
            let exporter = InMemorySpanExporter::default();
            let provider = SdkTracerProvider::builder()
                .with_simple_exporter(exporter.clone())
                .build();
            let subscriber = tracing_subscriber::registry()
                .with(tracing_subscriber::EnvFilter::new(
                    "info,sqlx=warn,lapin=warn",
                ))
                .with(sagaflow::telemetry::layer(&provider));
            tracing::subscriber::set_global_default(subscriber).expect("first subscriber");
            (exporter, provider)
        })
        .0
}

fn attr(s: &SpanData, key: &str) -> Option<String> {
    s.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

/// The finished spans of `trace` from the coordinator (`saga.step`, which says the
/// saga's status after the attempt) or from the worker (`task`, which does not).
fn spans(trace: TraceId, coordinator: bool) -> Vec<SpanData> {
    let all = exporter().get_finished_spans().expect("spans");
    all.into_iter()
        .filter(|s| s.span_context.trace_id() == trace)
        .filter(|s| attr(s, "saga.id").is_some())
        .filter(|s| attr(s, "saga.status").is_some() == coordinator)
        .collect()
}

/// (saga, step, attempt, outcome) per span, sorted.
fn summary(spans: &[SpanData]) -> Vec<(String, String, String, String)> {
    let mut v: Vec<_> = spans
        .iter()
        .map(|s| {
            (
                attr(s, "saga.id").unwrap_or_default(),
                attr(s, "saga.step").unwrap_or_default(),
                attr(s, "saga.attempt").unwrap_or_default(),
                attr(s, "saga.outcome").unwrap_or_default(),
            )
        })
        .collect();
    v.sort();
    v
}

fn start(id: &str, traceparent: Option<&str>) -> StartOptions {
    StartOptions {
        id: Some(id.into()),
        traceparent: traceparent.map(str::to_string),
        ..Default::default()
    }
}

async fn stored_traceparent(env: &TestEnv, id: &str) -> Option<String> {
    sqlx::query_scalar("SELECT state->>'traceparent' FROM sagas WHERE id = $1")
        .bind(id)
        .fetch_one(&env.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_saga_is_one_trace_with_a_span_per_attempt_in_coordinator_and_worker() {
    exporter();
    let env = TestEnv::running(&[("order.toml", ORDER)]).await;
    let given = TraceParent::fresh();
    let header = given.to_string();
    // The charge fails once (retryable): four attempts over three steps.
    let input = json!({"fail": {"payments.charge": {"code": "gateway_timeout", "times": 1}}});
    env.client()
        .await
        .start("order_fulfillment", input, start("t-1", Some(&header)))
        .await
        .unwrap();
    env.wait_status("t-1", "completed", T).await;
    assert_eq!(
        stored_traceparent(&env, "t-1").await.as_deref(),
        Some(header.as_str())
    );

    let trace = TraceId::from(given.trace_id);
    let parent = SpanId::from(given.parent_id);
    let coordinator = eventually("4 coordinator spans", T, || async {
        let s = spans(trace, true);
        if s.len() == 4 {
            Ok(s)
        } else {
            Err(s.len())
        }
    })
    .await;
    let attempt = |saga: &str, step: &str, n: &str, outcome: &str| {
        (
            saga.to_string(),
            step.to_string(),
            n.to_string(),
            outcome.to_string(),
        )
    };
    assert_eq!(
        summary(&coordinator),
        vec![
            attempt("t-1", "charge_payment", "1", "error"),
            attempt("t-1", "charge_payment", "2", "ok"),
            attempt("t-1", "reserve_inventory", "1", "ok"),
            attempt("t-1", "ship_order", "1", "ok"),
        ]
    );
    for s in &coordinator {
        // `saga.step`, shown as `<saga> <step>`.
        let step = attr(s, "saga.step").unwrap_or_default();
        assert_eq!(s.name, format!("order_fulfillment {step}"), "{s:?}");
        assert_eq!(s.parent_span_id, parent, "{s:?}");
        assert!(s.parent_span_is_remote);
    }
    let failed = coordinator
        .iter()
        .find(|s| attr(s, "saga.outcome").as_deref() == Some("error"))
        .unwrap();
    assert_eq!(
        attr(failed, "error.code").as_deref(),
        Some("gateway_timeout")
    );

    let worker = eventually("4 worker spans", T, || async {
        let s = spans(trace, false);
        if s.len() == 4 {
            Ok(s)
        } else {
            Err(s.len())
        }
    })
    .await;
    assert_eq!(
        summary(&worker),
        vec![
            attempt("t-1", "charge_payment", "1", "error"),
            attempt("t-1", "charge_payment", "2", "ok"),
            attempt("t-1", "reserve_inventory", "1", "ok"),
            attempt("t-1", "ship_order", "1", "ok"),
        ]
    );
    for s in &worker {
        assert_eq!(s.parent_span_id, parent, "the task's traceparent: {s:?}");
        assert!(s.name.ends_with(" action"), "{s:?}");
        assert_eq!(attr(s, "saga.task.kind").as_deref(), Some("action"));
        assert_eq!(attr(s, "saga.name").as_deref(), Some("order_fulfillment"));
    }
    // The coordinator's and the worker's span of one attempt name the same task.
    let ids = |spans: &[SpanData]| {
        let mut v: Vec<_> = spans.iter().map(|s| attr(s, "saga.task.id")).collect();
        v.sort();
        v
    };
    assert_eq!(ids(&coordinator), ids(&worker));
    env.cleanup().await;
}

#[tokio::test]
async fn a_child_saga_joins_its_parents_trace() {
    exporter();
    let env = TestEnv::running(&[("order.toml", ORDER), ("parent.toml", WITH_CHILD)]).await;
    let given = TraceParent::fresh();
    env.client()
        .await
        .start(
            "traced_parent",
            json!({}),
            start("t-p", Some(&given.to_string())),
        )
        .await
        .unwrap();
    env.wait_status("t-p", "completed", T).await;
    assert_eq!(
        stored_traceparent(&env, "t-p/order").await,
        Some(given.to_string()),
        "the child start carried the parent's traceparent"
    );
    let trace = TraceId::from(given.trace_id);
    // Parent: reserve, and the child step answered by the child saga; child: 3 steps.
    let coordinator = eventually("5 coordinator spans", T, || async {
        let s = spans(trace, true);
        if s.len() == 5 {
            Ok(s)
        } else {
            Err(s.len())
        }
    })
    .await;
    let sagas: Vec<String> = summary(&coordinator)
        .into_iter()
        .map(|(saga, step, _, _)| format!("{saga} {step}"))
        .collect();
    assert_eq!(
        sagas,
        [
            "t-p order",
            "t-p reserve",
            "t-p/order charge_payment",
            "t-p/order reserve_inventory",
            "t-p/order ship_order"
        ]
    );
    eventually("4 worker spans", T, || async {
        let n = spans(trace, false).len();
        if n == 4 {
            Ok(())
        } else {
            Err(n)
        }
    })
    .await;
    env.cleanup().await;
}

/// One step no worker here serves: each attempt ends by the coordinator's
/// schedule-to-start deadline.
const UNSERVED: &str = r#"
name = "traced_timeout"
version = 1
[[steps]]
name = "unserved"
activity = "tracing.unserved"
schedule_to_start = "300ms"
retry = { initial_interval = "100ms", max_attempts = 2 }
"#;

#[tokio::test]
async fn an_attempt_the_coordinator_times_out_has_a_span_too() {
    exporter();
    let mut env = TestEnv::new(&[("unserved.toml", UNSERVED)]).await;
    env.start_coordinator().await; // and no worker
    let given = TraceParent::fresh();
    env.client()
        .await
        .start(
            "traced_timeout",
            json!({}),
            start("t-late", Some(&given.to_string())),
        )
        .await
        .unwrap();
    env.wait_status("t-late", "compensated", T).await;
    let trace = TraceId::from(given.trace_id);
    let coordinator = eventually("2 timed-out spans", T, || async {
        let s = spans(trace, true);
        if s.len() == 2 {
            Ok(s)
        } else {
            Err(s.len())
        }
    })
    .await;
    assert_eq!(
        summary(&coordinator),
        vec![
            (
                "t-late".into(),
                "unserved".into(),
                "1".into(),
                "timed_out".into()
            ),
            (
                "t-late".into(),
                "unserved".into(),
                "2".into(),
                "timed_out".into()
            ),
        ]
    );
    for s in &coordinator {
        assert_eq!(
            attr(s, "error.code").as_deref(),
            Some("timeout.schedule_to_start")
        );
        assert_eq!(
            attr(s, "saga.activity").as_deref(),
            Some("tracing.unserved")
        );
        assert_eq!(s.parent_span_id, SpanId::from(given.parent_id));
    }
    assert!(spans(trace, false).is_empty(), "no worker ran an attempt");
    env.cleanup().await;
}

#[tokio::test]
async fn a_malformed_or_missing_traceparent_starts_a_new_trace() {
    exporter();
    let env = TestEnv::running(&[("order.toml", ORDER)]).await;
    let client = env.client().await;
    client
        .start(
            "order_fulfillment",
            json!({}),
            start("t-bad", Some("00-not-a-trace")),
        )
        .await
        .unwrap();
    client
        .start("order_fulfillment", json!({}), start("t-none", None))
        .await
        .unwrap();
    env.wait_terminal(&["t-bad".into(), "t-none".into()], T)
        .await;
    for id in ["t-bad", "t-none"] {
        assert_eq!(env.status(id).await.as_deref(), Some("completed"));
        let stored = stored_traceparent(&env, id).await.expect("a trace context");
        let tp = TraceParent::parse(&stored).expect("valid");
        let trace = TraceId::from(tp.trace_id);
        eventually(&format!("{id}: 3 spans each side"), T, || async {
            let (c, w) = (spans(trace, true).len(), spans(trace, false).len());
            if (c, w) == (3, 3) {
                Ok(())
            } else {
                Err((c, w))
            }
        })
        .await;
    }
    env.cleanup().await;
}

#[tokio::test]
async fn the_http_traceparent_header_starts_the_saga_in_the_callers_trace() {
    exporter();
    let env = TestEnv::running(&[("order.toml", ORDER)]).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let base = common::serve_api(&env, &env.settings, &stop).await;
    let given = TraceParent::fresh().to_string();
    let r = reqwest::Client::new()
        .post(format!("{base}/api/sagas"))
        .header("x-sagaflow-request", "1")
        .header("traceparent", &given)
        .json(&json!({"saga": "order_fulfillment", "id": "t-http"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::ACCEPTED);
    env.wait_status("t-http", "completed", T).await;
    assert_eq!(stored_traceparent(&env, "t-http").await, Some(given));
    stop.cancel();
    env.cleanup().await;
}
