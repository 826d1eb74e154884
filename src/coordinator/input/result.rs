//! `<ns>.results`: a worker's result (or heartbeat) for a task. The wire type is
//! `messages::ResultMessage`, shared with the worker; here only what the coordinator
//! additionally refuses: an error outcome without an error, payloads over the limits.

use super::{check_id, check_payload, Input};
use crate::config::Limits;
use crate::messages::{Outcome, ResultMessage};

pub(super) fn parse_result(body: &[u8], limits: &Limits) -> Result<Input, String> {
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::tests::{n, now, parse};
    use super::*;

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
}
