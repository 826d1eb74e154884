//! `<ns>.start`: a start event. The saga comes from the routing key (or the body,
//! which must agree), the id from the body, the AMQP `message_id` or a fresh UUIDv7;
//! a delay or a start time, and an optional signal-with-start.

use chrono::{DateTime, Utc};

use super::{check_id, check_payload, Input};
use crate::config::Limits;
use crate::messages::StartEvent;
use crate::saga::definition::parse_duration;

pub(super) fn parse_start(
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

/// Why a start may not use a schedule run's id.
pub fn reserved_id(id: &str) -> String {
    format!("id `{id}` has the form `<schedule>@<time>`, which only schedule runs may use")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::tests::{n, now, parse, start};
    use super::*;
    use crate::messages::StartSignal;

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
}
