//! The wire contract: JSON bodies exchanged over RabbitMQ.
//!
//! These types are pure data (serde only, no broker code) so the state machine can
//! build outgoing tasks and tests can round-trip them. The README documents every
//! field for workers written in other languages; change both together.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Routing key (and `reply_to`) under which coordinators receive task results.
pub const COORDINATOR_REPLY_TO: &str = "coordinator";

/// Header naming why a message was dead-lettered by a sagaflow process.
pub const REASON_HEADER: &str = "x-sagaflow-reason";

/// A request to start a saga, published to `<ns>.start` with the saga name as routing key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartEvent {
    /// Saga name; when omitted the routing key names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saga: Option<String>,
    /// Business key; when omitted a UUID v7 is generated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Saga input handed to every step.
    #[serde(default = "empty_object")]
    pub input: Value,
    /// Humane delay (`36h`) before the saga runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<String>,
    /// Absolute time (RFC 3339) at which the saga runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<DateTime<Utc>>,
    /// Definition version to run; the newest loaded version when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// Signal-with-start: this signal is delivered in the transaction that starts the
    /// saga, or to the saga with this id if it exists (its input is then ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<StartSignal>,
    /// Set by a coordinator starting a child saga: the parent saga and the task
    /// chain of its step the child answers when it ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentLink>,
}

/// A child saga's link to its parent: the parent's id and the task chain of the
/// parent's step that waits for the child's outcome (the child answers it with an
/// ordinary result message).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParentLink {
    pub saga_id: String,
    pub task_id: String,
}

/// The signal of a signal-with-start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartSignal {
    pub name: String,
    #[serde(default)]
    pub payload: Value,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// Whether a task runs a step's action or undoes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    Action,
    Compensation,
}

impl TaskKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskKind::Action => "action",
            TaskKind::Compensation => "compensation",
        }
    }
}

/// One attempt of one activity, published to `<ns>.tasks` with the activity as routing key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskMessage {
    /// Identifies the attempt chain (stable across attempts of one step's action or compensation).
    pub task_id: String,
    pub saga_id: String,
    pub saga: String,
    pub step: String,
    pub activity: String,
    pub kind: TaskKind,
    /// 1-based attempt number; echo it in the result.
    pub attempt: u32,
    pub max_attempts: u32,
    /// `<saga_id>:<step>:<kind>`, the same for every attempt: hand it to outside systems.
    pub idempotency_key: String,
    /// `{"saga": <saga input>, "steps": {<step>: <output>, ...}}`; a compensation also gets
    /// `"output"`, the output of the step it undoes.
    pub input: Value,
    /// Routing key for the result on `<ns>.results`.
    pub reply_to: String,
    /// When this attempt was scheduled (after any retry delay).
    pub scheduled_at: DateTime<Utc>,
    pub deadlines: Deadlines,
    /// Details of the last heartbeat of an earlier attempt, so a retry can resume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_details: Option<Value>,
    /// A `for_each` task's element (action and compensation alike).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<Value>,
    /// A `for_each` task's element position in its array (0-based).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
}

impl TaskMessage {
    /// Whether the worker must report `started` (and heartbeats): only tasks whose
    /// deadlines the coordinator can enforce only by knowing when the attempt began.
    pub fn reports_progress(&self) -> bool {
        self.deadlines.schedule_to_start.is_some() || self.deadlines.heartbeat_ms.is_some()
    }
}

/// Time limits of one attempt (Temporal's meanings).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deadlines {
    /// The attempt must start before this instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_to_start: Option<DateTime<Utc>>,
    /// One attempt may run this many milliseconds.
    pub start_to_close_ms: u64,
    /// All attempts together must finish before this instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_to_close: Option<DateTime<Utc>>,
    /// A long activity must heartbeat at least this often.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_ms: Option<u64>,
}

/// An activity's error as reported by a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorInfo {
    pub code: String,
    #[serde(default)]
    pub message: String,
    #[serde(default = "default_true")]
    pub retryable: bool,
}

fn default_true() -> bool {
    true
}

/// What a message on the results exchange reports about an attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The attempt succeeded; `output` holds its value.
    Ok,
    /// The attempt failed; `error` says how.
    Error,
    /// The attempt began (sent when the task has `schedule_to_start` or `heartbeat_ms`
    /// deadlines, so the coordinator can enforce them).
    Started,
    /// A long attempt is alive; `details` is kept and handed to the next attempt.
    Heartbeat,
}

/// A worker's answer, published to `<ns>.results` with the task's `reply_to` as routing key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultMessage {
    pub task_id: String,
    pub saga_id: String,
    /// The attempt this answers; when absent the coordinator assumes the current attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    /// Heartbeat details (outcome `heartbeat`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

impl ResultMessage {
    /// The result of a finished attempt as a plain `Result`, or why the body is
    /// inconsistent (also for `started`/`heartbeat` reports, which are not results).
    pub fn into_outcome(self) -> Result<Result<Value, ErrorInfo>, String> {
        match (self.outcome, self.error) {
            (Outcome::Ok, _) => Ok(Ok(self.output.unwrap_or(Value::Null))),
            (Outcome::Error, Some(e)) => Ok(Err(e)),
            (Outcome::Error, None) => Err("outcome \"error\" without an \"error\" object".into()),
            (other, _) => Err(format!("outcome {other:?} is a report, not a result")),
        }
    }

    /// A `started` or `heartbeat` report for `task`.
    pub fn report(task: &TaskMessage, outcome: Outcome, details: Option<Value>) -> Self {
        ResultMessage {
            task_id: task.task_id.clone(),
            saga_id: task.saga_id.clone(),
            attempt: Some(task.attempt),
            outcome,
            output: None,
            error: None,
            details,
        }
    }
}

/// A saga outcome, published to `<ns>.events` with routing key `saga.<name>.<status>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaEvent {
    pub saga_id: String,
    pub saga: String,
    pub version: u32,
    pub status: String,
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn start_event_minimal_body_gets_defaults() {
        let e: StartEvent = serde_json::from_value(json!({})).unwrap();
        assert_eq!(e.input, json!({}));
        assert!(e.id.is_none() && e.saga.is_none() && e.delay.is_none());
    }

    #[test]
    fn start_event_refuses_unknown_fields() {
        let err = serde_json::from_value::<StartEvent>(json!({"inptu": {}})).unwrap_err();
        assert!(err.to_string().contains("inptu"), "{err}");
    }

    #[test]
    fn result_ok_without_output_is_null() {
        let r: ResultMessage =
            serde_json::from_value(json!({"task_id": "t", "saga_id": "s", "outcome": "ok"}))
                .unwrap();
        assert_eq!(r.into_outcome().unwrap(), Ok(Value::Null));
    }

    #[test]
    fn result_error_without_error_object_is_refused() {
        let r: ResultMessage =
            serde_json::from_value(json!({"task_id": "t", "saga_id": "s", "outcome": "error"}))
                .unwrap();
        assert!(r.into_outcome().is_err());
    }

    #[test]
    fn error_retryable_defaults_to_true() {
        let e: ErrorInfo = serde_json::from_value(json!({"code": "x"})).unwrap();
        assert!(e.retryable);
        assert_eq!(e.message, "");
    }
}
