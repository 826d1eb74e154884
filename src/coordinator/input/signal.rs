//! `<ns>.signals`: a named signal or a cancel request. Every service that talks to a
//! saga may publish here, so this is also where an operator action sent to the wrong
//! exchange is refused, with a reason that says where it goes.

use serde::Deserialize;
use serde_json::Value;

use super::{check_id, check_payload, Input};
use crate::config::Limits;

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

pub(super) fn parse_signal(
    body: &[u8],
    limits: &Limits,
    operator_exchange: &str,
) -> Result<Input, String> {
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::tests::{n, now, parse};
    use super::*;

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
}
