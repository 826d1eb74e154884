//! Turning a coordinator delivery (exchange, routing key, body) into an input, or a
//! reason to dead-letter it. Pure, so every malformed shape is a unit test.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use crate::broker::Names;
use crate::messages::{Outcome, ResultMessage, StartEvent};
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
    /// stood when it was decided.
    Operator {
        saga_id: String,
        action: OperatorAction,
        issued_for: IssuedFor,
    },
}

impl Input {
    pub fn saga_id(&self) -> &str {
        match self {
            Input::Start { id, .. } => id,
            Input::Result(r) => &r.saga_id,
            Input::Signal { saga_id, .. }
            | Input::Cancel { saga_id, .. }
            | Input::Operator { saga_id, .. } => saga_id,
        }
    }
}

/// A message on `<ns>.signals`: a named signal, a cancel request or an operator action.
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
    #[serde(default)]
    operator: Option<OperatorAction>,
    #[serde(default)]
    issued_for: Option<IssuedFor>,
}

/// Parses one delivery. `message_id` (an AMQP property) names the saga when a start
/// event has no `id`, so a redelivered start cannot create a second saga.
pub fn parse(
    names: &Names,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    message_id: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Input, String> {
    if exchange == names.start() {
        return parse_start(routing_key, body, message_id, now);
    }
    if exchange == names.results() {
        let r: ResultMessage =
            serde_json::from_slice(body).map_err(|e| format!("result body: {e}"))?;
        check_id("saga_id", &r.saga_id)?;
        if r.outcome == Outcome::Error && r.error.is_none() {
            return Err("result body: outcome \"error\" without an \"error\" object".into());
        }
        return Ok(Input::Result(r));
    }
    if exchange == names.signals() {
        return parse_signal(body);
    }
    Err(format!("unexpected exchange `{exchange}`"))
}

fn parse_start(
    routing_key: &str,
    body: &[u8],
    message_id: Option<&str>,
    now: DateTime<Utc>,
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
    check_id("id", &id)?;
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
    })
}

fn parse_signal(body: &[u8]) -> Result<Input, String> {
    let m: SignalMessage = serde_json::from_slice(body).map_err(|e| format!("signal body: {e}"))?;
    check_id("saga_id", &m.saga_id)?;
    if let Some(action) = m.operator {
        if m.cancel || m.signal.is_some() {
            return Err("an operator message carries only `operator` and `issued_for`".into());
        }
        let Some(issued_for) = m.issued_for else {
            return Err("an operator message needs `issued_for` (the step, generation and task it was decided for), so a redelivered action cannot apply twice".into());
        };
        return Ok(Input::Operator {
            saga_id: m.saga_id,
            action,
            issued_for,
        });
    }
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

fn check_id(field: &str, id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 200 || id.chars().any(char::is_control) {
        return Err(format!("`{field}` must be 1 to 200 printable characters"));
    }
    Ok(())
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
                run_at: Some(now() + chrono::Duration::hours(36))
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
        let op = json!({"saga_id": "s", "operator": {"action": "resume_at", "step": "charge"},
            "issued_for": {"step": "ship", "generation": 0}})
        .to_string();
        assert_eq!(
            parse(&n(), "ns.signals", "", op.as_bytes(), None, now()).unwrap(),
            Input::Operator {
                saga_id: "s".into(),
                action: OperatorAction::ResumeAt {
                    step: "charge".into()
                },
                issued_for: IssuedFor {
                    step: "ship".into(),
                    generation: 0,
                    task_id: None
                }
            }
        );
        let unanchored = json!({"saga_id": "s", "operator": {"action": "retry"}}).to_string();
        assert!(
            parse(&n(), "ns.signals", "", unanchored.as_bytes(), None, now())
                .unwrap_err()
                .contains("issued_for")
        );
        let bad_op = json!({"saga_id": "s", "operator": {"action": "explode"}}).to_string();
        assert!(parse(&n(), "ns.signals", "", bad_op.as_bytes(), None, now()).is_err());
        let neither = json!({"saga_id": "s"}).to_string();
        assert!(parse(&n(), "ns.signals", "", neither.as_bytes(), None, now()).is_err());
    }

    #[test]
    fn unknown_exchange_is_refused() {
        assert!(parse(&n(), "elsewhere", "", b"{}", None, now())
            .unwrap_err()
            .contains("elsewhere"));
    }
}
