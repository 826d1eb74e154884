//! A task the broker (delivery limit, a reject) or a worker (unparsable, no handler)
//! dead-lettered comes back to the coordinator as a failed attempt, so its saga goes
//! through the retry policy and then compensation instead of waiting for an answer
//! nobody will send. The coordinator queue is bound to `<ns>.dlx` under every
//! activity's dead-letter key; the operator's copy stays in `<ns>.dlq.<activity>`.
//! Pure, so every shape is a unit test.

use serde::Deserialize;

use crate::messages::{ErrorInfo, Outcome, ResultMessage};

use super::input::Input;

/// The error code of an attempt whose task was dead-lettered.
pub const DEAD_LETTERED: &str = "dead_lettered";

/// The fields of a task body needed to name its attempt; the rest may be broken.
#[derive(Debug, Deserialize)]
struct TaskRef {
    task_id: String,
    saga_id: String,
    attempt: u32,
}

/// The failed attempt a dead-lettered task stands for, or why it names none (then
/// this copy goes to `<ns>.dlq.coordinator` like any input the coordinator refuses).
pub fn parse(routing_key: &str, body: &[u8], reason: Option<String>) -> Result<Input, String> {
    let Some(activity) = routing_key.strip_prefix("task.") else {
        return Err(format!(
            "dead letter with routing key `{routing_key}` names no task"
        ));
    };
    let t: TaskRef = serde_json::from_slice(body)
        .map_err(|e| format!("dead-lettered task of `{activity}` names no attempt: {e}"))?;
    let why = reason.unwrap_or_else(|| "no reason given".into());
    Ok(Input::Result(ResultMessage {
        task_id: t.task_id,
        saga_id: t.saga_id,
        attempt: Some(t.attempt),
        outcome: Outcome::Error,
        output: None,
        error: Some(ErrorInfo {
            code: DEAD_LETTERED.into(),
            message: format!("the task of `{activity}` was dead-lettered: {why}"),
            retryable: true,
        }),
        details: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_dead_task_is_a_retryable_failure_of_its_attempt() {
        let body =
            json!({"task_id": "s:charge:action#1", "saga_id": "s", "attempt": 2, "input": {}})
                .to_string();
        let Input::Result(r) = parse(
            "task.payments.charge",
            body.as_bytes(),
            Some("delivery_limit".into()),
        )
        .unwrap() else {
            panic!("a result")
        };
        assert_eq!(
            (r.task_id.as_str(), r.saga_id.as_str(), r.attempt),
            ("s:charge:action#1", "s", Some(2))
        );
        let e = r.error.unwrap();
        assert_eq!(e.code, DEAD_LETTERED);
        assert!(e.retryable);
        assert!(e.message.contains("payments.charge"), "{}", e.message);
        assert!(e.message.contains("delivery_limit"), "{}", e.message);
    }

    #[test]
    fn a_dead_letter_naming_no_attempt_is_refused_with_why() {
        assert!(parse("coordinator", b"{}", None)
            .unwrap_err()
            .contains("names no task"));
        assert!(parse("task.a", b"{not json", None)
            .unwrap_err()
            .contains("names no attempt"));
        assert!(parse("task.a", br#"{"task_id": "t"}"#, None)
            .unwrap_err()
            .contains("names no attempt"));
    }
}
