//! `<ns>.operator`: operator actions (retry, resume_at, skip, compensate) and a
//! parent's request to undo a completed child. An exchange of its own so that only
//! operator credentials can send them; each action names where the saga stood when
//! it was decided (`issued_for`), so a redelivered action cannot apply twice.

use serde::Deserialize;

use super::{check_id, check_payload, Input};
use crate::config::Limits;
use crate::messages::ParentLink;
use crate::saga::machine::{IssuedFor, OperatorAction};

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

/// An operator action. Only `<ns>.operator` carries them: whoever may publish signals
/// (every service that talks to a saga) must not be able to skip a step with any
/// output or re-run a payment.
pub(super) fn parse_operator(body: &[u8], limits: &Limits) -> Result<Input, String> {
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::tests::{n, now, parse};
    use super::*;

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
}
