//! Turning a coordinator delivery (exchange, routing key, body) into an input, or a
//! reason to dead-letter it. Pure, so every malformed shape is a unit test.
//!
//! `[limits]` are enforced here, cheapest first: the body's size, then its nesting
//! (a byte scan), and only then serde; then each payload inside it and the saga id.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use crate::broker::Names;
use crate::config::Limits;
use crate::messages::{Outcome, ParentLink, ResultMessage, StartEvent, StartSignal};
use crate::saga::definition::parse_duration;
use crate::saga::machine::{IssuedFor, OperatorAction};

/// What a coordinator message asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Start {
        saga: String,
        id: String,
        version: Option<u32>,
        input: Value,
        run_at: Option<DateTime<Utc>>,
        /// Signal-with-start: delivered in the same batch, to the saga this starts or
        /// to the one that exists with this id.
        signal: Option<StartSignal>,
        /// Set when a parent saga's coordinator starts this one as its child.
        parent: Option<ParentLink>,
        /// The start message's `traceparent` header (W3C trace context), unchecked:
        /// the coordinator keeps it when valid and starts a new trace otherwise.
        traceparent: Option<String>,
    },
    Result(ResultMessage),
    Signal {
        saga_id: String,
        name: String,
        payload: Value,
    },
    Cancel {
        saga_id: String,
        reason: String,
    },
    /// An operator action (retry, resume_at, skip, compensate), with where the saga
    /// stood when it was decided and who sent it.
    Operator {
        saga_id: String,
        action: OperatorAction,
        issued_for: IssuedFor,
        /// Who issued it (an API token's name, `cli:<user>`), as the sender says; `None`
        /// from senders older than the field.
        actor: Option<String>,
    },
    /// A parent saga compensates: undo this completed child and answer `parent`.
    Undo {
        saga_id: String,
        parent: ParentLink,
    },
}

impl Input {
    pub fn saga_id(&self) -> &str {
        match self {
            Input::Start { id, .. } => id,
            Input::Result(r) => &r.saga_id,
            Input::Signal { saga_id, .. }
            | Input::Cancel { saga_id, .. }
            | Input::Operator { saga_id, .. }
            | Input::Undo { saga_id, .. } => saga_id,
        }
    }
}

/// A message on `<ns>.signals`: a named signal or a cancel request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignalMessage {
    saga_id: String,
    #[serde(default)]
    signal: Option<String>,
    #[serde(default)]
    payload: Value,
    #[serde(default)]
    cancel: bool,
    #[serde(default)]
    reason: Option<String>,
    /// Never accepted here: only to refuse it with a reason that says where it goes.
    #[serde(default)]
    operator: Option<Value>,
    #[serde(default)]
    issued_for: Option<Value>,
}

/// A message on `<ns>.operator`: an operator action, with where the saga stood when
/// it was decided and who issued it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OperatorMessage {
    saga_id: String,
    #[serde(default)]
    operator: Option<OperatorAction>,
    /// Sent by a parent saga's coordinator: undo this completed child saga.
    #[serde(default)]
    undo_for: Option<ParentLink>,
    #[serde(default)]
    issued_for: Option<IssuedFor>,
    /// Recorded in the saga's history with the action. Optional, so an action sent by
    /// an older client is still applied (its actor is recorded as `null`).
    #[serde(default)]
    actor: Option<String>,
}

/// Parses one delivery. `message_id` (an AMQP property) names the saga when a start
/// event has no `id`, so a redelivered start cannot create a second saga. Anything over
/// `limits` is refused with the limit named.
pub fn parse(
    names: &Names,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    message_id: Option<&str>,
    now: DateTime<Utc>,
    limits: &Limits,
) -> Result<Input, String> {
    let what = if exchange == names.start() {
        "start body"
    } else if exchange == names.results() {
        "result body"
    } else if exchange == names.signals() {
        "signal body"
    } else if exchange == names.operator() {
        "operator body"
    } else {
        return Err(format!("unexpected exchange `{exchange}`"));
    };
    limits
        .check_message(what, body)
        .map_err(|e| e.to_string())?;
    if exchange == names.start() {
        parse_start(routing_key, body, message_id, now, limits)
    } else if exchange == names.results() {
        parse_result(body, limits)
    } else if exchange == names.operator() {
        parse_operator(body, limits)
    } else {
        parse_signal(body, limits, &names.operator())
    }
}

fn parse_result(body: &[u8], limits: &Limits) -> Result<Input, String> {
    let r: ResultMessage = serde_json::from_slice(body).map_err(|e| format!("result body: {e}"))?;
    check_id(limits, "saga_id", &r.saga_id)?;
    if r.outcome == Outcome::Error && r.error.is_none() {
        return Err("result body: outcome \"error\" without an \"error\" object".into());
    }
    if let Some(output) = &r.output {
        check_payload(limits, "result output", output)?;
    }
    if let Some(details) = &r.details {
        check_payload(limits, "heartbeat details", details)?;
    }
    Ok(Input::Result(r))
}

fn parse_start(
    routing_key: &str,
    body: &[u8],
    message_id: Option<&str>,
    now: DateTime<Utc>,
    limits: &Limits,
) -> Result<Input, String> {
    let e: StartEvent = serde_json::from_slice(body).map_err(|e| format!("start body: {e}"))?;
    let saga = match e.saga {
        Some(s) if !routing_key.is_empty() && s != routing_key => {
            return Err(format!(
                "start body names saga `{s}` but the routing key is `{routing_key}`"
            ))
        }
        Some(s) => s,
        None if routing_key.is_empty() => {
            return Err("start event names no saga (no `saga` field, empty routing key)".into())
        }
        None => routing_key.to_string(),
    };
    let id = match e.id.or(message_id.map(str::to_string)) {
        Some(id) => id,
        None => uuid::Uuid::now_v7().to_string(),
    };
    check_id(limits, "id", &id)?;
    if crate::scheduler::decide::is_run_id(&id) {
        return Err(reserved_id(&id));
    }
    check_payload(limits, "start input", &e.input)?;
    if let Some(sig) = &e.signal {
        if sig.name.is_empty() {
            return Err("start event `signal` needs a `name`".into());
        }
        check_payload(limits, "signal payload", &sig.payload)?;
    }
    let run_at = match (e.delay, e.start_at) {
        (Some(_), Some(_)) => {
            return Err("start event has both `delay` and `start_at`; give one".into())
        }
        (Some(d), None) => {
            let d = parse_duration(&d).map_err(|r| format!("start event `delay`: {r}"))?;
            Some(
                now + chrono::Duration::from_std(d)
                    .map_err(|_| "start event `delay` is too long".to_string())?,
            )
        }
        (None, at) => at,
    };
    Ok(Input::Start {
        saga,
        id,
        version: e.version,
        input: e.input,
        run_at,
        signal: e.signal,
        parent: e.parent,
        traceparent: None,
    })
}

/// An operator action. Only `<ns>.operator` carries them: whoever may publish signals
/// (every service that talks to a saga) must not be able to skip a step with any
/// output or re-run a payment.
fn parse_operator(body: &[u8], limits: &Limits) -> Result<Input, String> {
    let m: OperatorMessage =
        serde_json::from_slice(body).map_err(|e| format!("operator body: {e}"))?;
    check_id(limits, "saga_id", &m.saga_id)?;
    let operator = match (m.operator, m.undo_for) {
        (Some(op), None) => op,
        (None, Some(parent)) => {
            check_id(limits, "undo_for.saga_id", &parent.saga_id)?;
            return Ok(Input::Undo {
                saga_id: m.saga_id,
                parent,
            });
        }
        _ => {
            return Err("an operator message needs exactly one of `operator` and `undo_for`".into())
        }
    };
    if let OperatorAction::Skip { output } = &operator {
        check_payload(limits, "skip output", output)?;
    }
    let Some(issued_for) = m.issued_for else {
        return Err("an operator message needs `issued_for` (the step, generation and task it was decided for), so a redelivered action cannot apply twice".into());
    };
    if let Some(actor) = &m.actor {
        check_id(limits, "actor", actor)?;
    }
    Ok(Input::Operator {
        saga_id: m.saga_id,
        action: operator,
        issued_for,
        actor: m.actor,
    })
}

fn parse_signal(body: &[u8], limits: &Limits, operator_exchange: &str) -> Result<Input, String> {
    let m: SignalMessage = serde_json::from_slice(body).map_err(|e| format!("signal body: {e}"))?;
    if m.operator.is_some() || m.issued_for.is_some() {
        return Err(format!(
            "operator actions are not accepted on the signals exchange; they go to `{operator_exchange}`, which only operator credentials may publish to"
        ));
    }
    check_id(limits, "saga_id", &m.saga_id)?;
    check_payload(limits, "signal payload", &m.payload)?;
    match (m.cancel, m.signal) {
        (true, None) => Ok(Input::Cancel {
            saga_id: m.saga_id,
            reason: m.reason.unwrap_or_else(|| "cancel requested".into()),
        }),
        (false, Some(name)) if !name.is_empty() => Ok(Input::Signal {
            saga_id: m.saga_id,
            name,
            payload: m.payload,
        }),
        (true, Some(_)) => Err("signal message has both `cancel` and `signal`".into()),
        _ => Err("signal message needs `signal` (a name) or `cancel: true`".into()),
    }
}

/// Why a start may not use a schedule run's id.
pub fn reserved_id(id: &str) -> String {
    format!("id `{id}` has the form `<schedule>@<time>`, which only schedule runs may use")
}

fn check_id(limits: &Limits, field: &str, id: &str) -> Result<(), String> {
    limits.check_id(field, id).map_err(|e| e.to_string())
}

fn check_payload(limits: &Limits, what: &str, v: &Value) -> Result<(), String> {
    limits.check_payload(what, v).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn n() -> Names {
        Names::new("ns")
    }

    /// `super::parse` with the default limits (the limit tests pass their own).
    fn parse(
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

    fn start(rk: &str, body: Value) -> Result<Input, String> {
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
    fn start_takes_saga_from_routing_key_and_delay_from_body() {
        let i = start(
            "order",
            json!({"id": "o-1", "input": {"a": 1}, "delay": "36h"}),
        )
        .unwrap();
        assert_eq!(
            i,
            Input::Start {
                saga: "order".into(),
                id: "o-1".into(),
                version: None,
                input: json!({"a": 1}),
                run_at: Some(now() + chrono::Duration::hours(36)),
                signal: None,
                parent: None,
                traceparent: None,
            }
        );
    }

    #[test]
    fn start_without_id_uses_message_id_or_a_fresh_uuid() {
        let body = json!({}).to_string();
        let i = parse(
            &n(),
            "ns.start",
            "order",
            body.as_bytes(),
            Some("m-9"),
            now(),
        )
        .unwrap();
        assert_eq!(i.saga_id(), "m-9");
        let a = start("order", json!({})).unwrap();
        let b = start("order", json!({})).unwrap();
        assert_ne!(a.saga_id(), b.saga_id());
        assert!(uuid::Uuid::parse_str(a.saga_id()).is_ok());
    }

    #[test]
    fn a_start_may_carry_a_signal() {
        let i = start(
            "order",
            json!({"id": "o-1", "signal": {"name": "approve", "payload": {"by": "ann"}}}),
        )
        .unwrap();
        let Input::Start { signal, .. } = i else {
            panic!("{i:?}")
        };
        assert_eq!(
            signal,
            Some(StartSignal {
                name: "approve".into(),
                payload: json!({"by": "ann"})
            })
        );
        assert!(start("order", json!({"signal": {"name": ""}})).is_err());
        assert!(start("order", json!({"signal": {"name": "a", "extra": 1}})).is_err());
    }

    #[test]
    fn starts_may_not_take_a_schedule_run_id() {
        let e = start("nightly", json!({"id": "nightly@2026-03-01T02:00:00Z"})).unwrap_err();
        assert!(e.contains("only schedule runs may use"), "{e}");
        assert!(start("order", json!({"id": "ann@example.com"})).is_ok());
    }

    #[test]
    fn malformed_starts_say_why() {
        let cases = [
            ("order", json!({"saga": "other"}), "routing key"),
            ("", json!({}), "names no saga"),
            ("order", json!({"delay": "soon"}), "delay"),
            (
                "order",
                json!({"delay": "1h", "start_at": "2026-01-01T00:00:00Z"}),
                "both",
            ),
            ("order", json!({"id": ""}), "`id`"),
            ("order", json!({"inptu": 1}), "inptu"),
        ];
        for (rk, body, why) in cases {
            let err = start(rk, body.clone()).unwrap_err();
            assert!(err.contains(why), "{body}: {err}");
        }
        let err = parse(&n(), "ns.start", "order", b"{not json", None, now()).unwrap_err();
        assert!(err.contains("start body"), "{err}");
    }

    #[test]
    fn results_parse_and_inconsistent_ones_are_refused() {
        let ok = json!({"task_id": "t", "saga_id": "s", "outcome": "ok", "output": 1}).to_string();
        assert!(matches!(
            parse(
                &n(),
                "ns.results",
                "coordinator",
                ok.as_bytes(),
                None,
                now()
            ),
            Ok(Input::Result(_))
        ));
        let bad = json!({"task_id": "t", "saga_id": "s", "outcome": "error"}).to_string();
        assert!(parse(
            &n(),
            "ns.results",
            "coordinator",
            bad.as_bytes(),
            None,
            now()
        )
        .unwrap_err()
        .contains("error"));
        let weird = json!({"task_id": "t", "saga_id": "s", "outcome": "maybe"}).to_string();
        assert!(parse(
            &n(),
            "ns.results",
            "coordinator",
            weird.as_bytes(),
            None,
            now()
        )
        .is_err());
    }

    #[test]
    fn signals_and_cancels() {
        let sig = json!({"saga_id": "s", "signal": "approve", "payload": {"by": "a"}}).to_string();
        assert_eq!(
            parse(&n(), "ns.signals", "", sig.as_bytes(), None, now()).unwrap(),
            Input::Signal {
                saga_id: "s".into(),
                name: "approve".into(),
                payload: json!({"by": "a"})
            }
        );
        let cancel = json!({"saga_id": "s", "cancel": true}).to_string();
        assert!(matches!(
            parse(&n(), "ns.signals", "", cancel.as_bytes(), None, now()),
            Ok(Input::Cancel { .. })
        ));
        let neither = json!({"saga_id": "s"}).to_string();
        assert!(parse(&n(), "ns.signals", "", neither.as_bytes(), None, now()).is_err());
    }

    #[test]
    fn operator_actions_come_only_from_the_operator_exchange() {
        let op = json!({"saga_id": "s", "operator": {"action": "resume_at", "step": "charge"},
            "issued_for": {"step": "ship", "generation": 0}})
        .to_string();
        assert_eq!(
            parse(&n(), "ns.operator", "", op.as_bytes(), None, now()).unwrap(),
            Input::Operator {
                saga_id: "s".into(),
                action: OperatorAction::ResumeAt {
                    step: "charge".into()
                },
                issued_for: IssuedFor {
                    step: "ship".into(),
                    generation: 0,
                    task_id: None
                },
                actor: None,
            }
        );
        let signed = json!({"saga_id": "s", "operator": {"action": "retry"},
            "issued_for": {"step": "ship", "generation": 0}, "actor": "ops-ann"})
        .to_string();
        assert!(matches!(
            parse(&n(), "ns.operator", "", signed.as_bytes(), None, now()).unwrap(),
            Input::Operator { actor: Some(a), .. } if a == "ops-ann"
        ));
        let long = json!({"saga_id": "s", "operator": {"action": "retry"},
            "issued_for": {"step": "ship", "generation": 0}, "actor": "x".repeat(201)})
        .to_string();
        let e = parse(&n(), "ns.operator", "", long.as_bytes(), None, now()).unwrap_err();
        assert!(e.contains("actor") && e.contains("id_bytes"), "{e}");
        let unanchored = json!({"saga_id": "s", "operator": {"action": "retry"}}).to_string();
        assert!(
            parse(&n(), "ns.operator", "", unanchored.as_bytes(), None, now())
                .unwrap_err()
                .contains("issued_for")
        );
        let bad_op = json!({"saga_id": "s", "operator": {"action": "explode"}}).to_string();
        assert!(parse(&n(), "ns.operator", "", bad_op.as_bytes(), None, now()).is_err());
        let signal = json!({"saga_id": "s", "signal": "go"}).to_string();
        assert!(parse(&n(), "ns.operator", "", signal.as_bytes(), None, now()).is_err());
        // The forged skip of the issue: refused on the signals exchange, with where it goes.
        let forged =
            json!({"saga_id": "s", "operator": {"action": "skip", "output": {"forged": true}}})
                .to_string();
        let e = parse(&n(), "ns.signals", "", forged.as_bytes(), None, now()).unwrap_err();
        assert!(
            e.contains("not accepted on the signals exchange") && e.contains("ns.operator"),
            "{e}"
        );
        let e = parse(&n(), "ns.signals", "", op.as_bytes(), None, now()).unwrap_err();
        assert!(e.contains("ns.operator"), "{e}");
    }

    #[test]
    fn unknown_exchange_is_refused() {
        assert!(parse(&n(), "elsewhere", "", b"{}", None, now())
            .unwrap_err()
            .contains("elsewhere"));
    }
}
