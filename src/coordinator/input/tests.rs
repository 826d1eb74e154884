//! Tests through [`parse`](super::parse) as the coordinator calls it: the limits
//! every exchange shares, and the helpers the per-exchange tests use.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::Input;
use crate::broker::Names;
use crate::config::Limits;

pub(super) fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

pub(super) fn n() -> Names {
    Names::new("ns")
}

/// `super::parse` with the default limits (the limit tests pass their own).
pub(super) fn parse(
    names: &Names,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    message_id: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Input, String> {
    super::parse(
        names,
        exchange,
        routing_key,
        body,
        message_id,
        now,
        &Limits::default(),
    )
}

fn limited(exchange: &str, body: &str, limits: &Limits) -> Result<Input, String> {
    super::parse(
        &n(),
        exchange,
        "order",
        body.as_bytes(),
        None,
        now(),
        limits,
    )
}

fn small() -> Limits {
    Limits {
        payload_bytes: 16,
        message_bytes: 200,
        json_depth: 4,
        id_bytes: 8,
    }
}

#[test]
fn a_body_over_message_bytes_is_refused_before_parsing() {
    // Not even JSON: the size is checked first, so the reason is the size.
    let body = "x".repeat(201);
    for (ex, what) in [
        ("ns.start", "start body"),
        ("ns.results", "result body"),
        ("ns.signals", "signal body"),
    ] {
        assert_eq!(
            limited(ex, &body, &small()).unwrap_err(),
            format!("{what} is 201 bytes; limits.message_bytes is 200")
        );
    }
    let head = r#"{"id": "a", "delay": "1s""#;
    let at_limit = format!("{head}{}}}", " ".repeat(200 - head.len() - 1));
    assert_eq!(at_limit.len(), 200);
    assert!(limited("ns.start", &at_limit, &small()).is_ok());
}

#[test]
fn a_body_nested_deeper_than_json_depth_is_refused_before_parsing() {
    // Depth 4 is allowed (the envelope counts: {"input": [[[ ]]]} is 4).
    let ok = json!({"id": "a", "input": [[[1]]]}).to_string();
    assert!(limited("ns.start", &ok, &small()).is_ok());
    let deep = json!({"id": "a", "input": [[[[1]]]]}).to_string();
    assert_eq!(
        limited("ns.start", &deep, &small()).unwrap_err(),
        "start body is nested more than 4 levels deep; limits.json_depth is 4"
    );
    // Deeper than serde_json could parse at all: still the limit, not a parser error.
    let abyss = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let big = Limits {
        message_bytes: 1 << 20,
        ..small()
    };
    let err = limited("ns.signals", &abyss, &big).unwrap_err();
    assert!(err.contains("limits.json_depth is 4"), "{err}");
    // Brackets in strings are not nesting.
    let text = json!({"id": "a", "input": {"s": "[[[[{{"}}).to_string();
    assert!(limited("ns.start", &text, &small()).is_ok());
}

#[test]
fn payloads_over_payload_bytes_are_refused_with_the_limit() {
    let l = small();
    // {"k":"0123456789"} is 18 bytes; {"k":"01234567"} is 16.
    let big = json!({"k": "0123456789"});
    let fits = json!({"k": "01234567"});
    let cases = [
        (
            "ns.start",
            json!({"id": "a", "input": big}),
            json!({"id": "a", "input": fits}),
            "start input",
        ),
        (
            "ns.signals",
            json!({"saga_id": "a", "signal": "go", "payload": big}),
            json!({"saga_id": "a", "signal": "go", "payload": fits}),
            "signal payload",
        ),
        (
            "ns.results",
            json!({"task_id": "t", "saga_id": "a", "outcome": "ok", "output": big}),
            json!({"task_id": "t", "saga_id": "a", "outcome": "ok", "output": fits}),
            "result output",
        ),
        (
            "ns.results",
            json!({"task_id": "t", "saga_id": "a", "outcome": "heartbeat", "details": big}),
            json!({"task_id": "t", "saga_id": "a", "outcome": "heartbeat", "details": fits}),
            "heartbeat details",
        ),
        (
            "ns.operator",
            json!({"saga_id": "a", "operator": {"action": "skip", "output": big},
                "issued_for": {"step": "s", "generation": 0}}),
            json!({"saga_id": "a", "operator": {"action": "skip", "output": fits},
                "issued_for": {"step": "s", "generation": 0}}),
            "skip output",
        ),
    ];
    for (ex, over, ok, what) in cases {
        assert_eq!(
            limited(ex, &over.to_string(), &l).unwrap_err(),
            format!("{what} is 18 bytes; limits.payload_bytes is 16"),
            "{over}"
        );
        assert!(limited(ex, &ok.to_string(), &l).is_ok(), "{ok}");
    }
}

#[test]
fn saga_ids_over_id_bytes_are_refused() {
    let l = small();
    assert!(limited("ns.start", r#"{"id": "12345678"}"#, &l).is_ok());
    assert_eq!(
        limited("ns.start", r#"{"id": "123456789"}"#, &l).unwrap_err(),
        "`id` is 9 bytes; limits.id_bytes is 8"
    );
    let sig = json!({"saga_id": "123456789", "cancel": true}).to_string();
    assert!(limited("ns.signals", &sig, &l)
        .unwrap_err()
        .contains("`saga_id` is 9 bytes"));
    let res = json!({"task_id": "t", "saga_id": "123456789", "outcome": "ok"}).to_string();
    assert!(limited("ns.results", &res, &l)
        .unwrap_err()
        .contains("limits.id_bytes is 8"));
    // The default stays 200, as before limits were configurable.
    let id = "x".repeat(201);
    let err = start("order", json!({"id": id})).unwrap_err();
    assert_eq!(err, "`id` is 201 bytes; limits.id_bytes is 200");
    assert!(start("order", json!({"id": "x".repeat(200)})).is_ok());
    // A message id used as the saga id is held to the same limit.
    let err = super::parse(
        &n(),
        "ns.start",
        "order",
        b"{}",
        Some("123456789"),
        now(),
        &l,
    )
    .unwrap_err();
    assert!(err.contains("limits.id_bytes"), "{err}");
}

pub(super) fn start(rk: &str, body: Value) -> Result<Input, String> {
    parse(
        &n(),
        "ns.start",
        rk,
        body.to_string().as_bytes(),
        None,
        now(),
    )
}

#[test]
fn unknown_exchange_is_refused() {
    assert!(parse(&n(), "elsewhere", "", b"{}", None, now())
        .unwrap_err()
        .contains("elsewhere"));
}
