//! The coordinator's span per step attempt (docs/operations.md, "Tracing"): one
//! `saga.step` span each time a batch applies an attempt's result, and one for each
//! attempt the machine timed out (no worker answers those), a child of the saga's
//! trace context (`SagaState::traceparent`). Built only while spans are exported
//! (`crate::telemetry::enabled`). Attribute names follow the one convention of
//! docs/operations.md (`saga.*`), shared with the worker's `task` span.

use crate::saga::definition::{Definition, StepKind};
use crate::saga::history::HistoryEvent;
use crate::saga::machine::{Event, HistoryEntry};
use crate::saga::state::SagaState;

/// What the span says about the attempt, read from the state before the result is
/// applied (the chain may be gone after).
pub(super) struct Attempt {
    step: String,
    element: Option<u32>,
    kind: String,
    activity: Option<String>,
    attempt: u32,
    task_id: Option<String>,
    outcome: Outcome,
}

/// How the attempt ended, as the span says it.
enum Outcome {
    Ok,
    /// A worker's (or a child saga's) error: its code and whether it is retryable.
    Error(String, bool),
    /// A coordinator-side deadline (`timeout.<kind>`): the attempt never answered.
    TimedOut(String),
}

/// The attempt `event` answers, when it is a result for a chain `state` waits on and
/// spans are exported.
pub(super) fn attempt(def: &Definition, state: &SagaState, event: &Event) -> Option<Attempt> {
    if !crate::telemetry::enabled() {
        return None;
    }
    let Event::Result {
        task_id,
        attempt,
        result,
    } = event
    else {
        return None;
    };
    let chain = state.tasks.iter().find(|t| &t.task_id == task_id)?;
    let step = def.steps.get(chain.step)?;
    let unit = match (&step.kind, chain.branch) {
        (StepKind::Parallel(branches), Some(b)) => branches.get(b).unwrap_or(step),
        _ => step,
    };
    Some(Attempt {
        step: unit.name.clone(),
        element: chain.element,
        kind: chain.kind.as_str().to_string(),
        activity: chain.activity.clone(),
        attempt: attempt.unwrap_or(chain.attempt),
        task_id: Some(task_id.clone()),
        outcome: match result {
            Ok(_) => Outcome::Ok,
            Err(e) => Outcome::Error(e.code.clone(), e.retryable),
        },
    })
}

/// Records a span for every attempt a decision's `history` timed out, once the
/// decision is taken (`state` is the saga after it).
pub(super) fn timeouts(state: &SagaState, history: &[HistoryEntry]) -> Vec<StepSpan> {
    if !crate::telemetry::enabled() {
        return vec![];
    }
    history
        .iter()
        .filter_map(timed_out)
        .map(|a| a.at(state))
        .collect()
}

/// The attempt an `attempt_timed_out` entry ended. A `for_each` element's entry
/// names its step in `detail.in` and its position in `detail.index` (its `step` is
/// the label `step[i]`); any other names the unit in `step`.
fn timed_out(h: &HistoryEntry) -> Option<Attempt> {
    if h.event != HistoryEvent::AttemptTimedOut {
        return None;
    }
    let text = |key: &str| {
        h.detail
            .get(key)
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    let element = h
        .detail
        .get("index")
        .and_then(|v| v.as_u64())
        .and_then(|i| u32::try_from(i).ok());
    let step = match element {
        Some(_) => text("in")?,
        None => h.step.clone()?,
    };
    Some(Attempt {
        step,
        element,
        kind: text("kind").unwrap_or_else(|| "action".into()),
        activity: text("activity"),
        attempt: h.attempt.unwrap_or(0),
        task_id: None,
        outcome: Outcome::TimedOut(format!("timeout.{}", text("timeout").unwrap_or_default())),
    })
}

impl Attempt {
    /// The span of this attempt as `state` (right after it) names the saga.
    pub(super) fn at(self, state: &SagaState) -> StepSpan {
        StepSpan {
            attempt: self,
            saga_id: state.id.clone(),
            saga: state.saga.clone(),
            version: state.version,
            status: state.status.as_str(),
            traceparent: state.traceparent.clone(),
        }
    }
}

/// A `saga.step` span to emit once its batch committed: a batch that is rolled back
/// or redone under lock (`batch::run_cached`) must not leave one behind.
pub struct StepSpan {
    attempt: Attempt,
    saga_id: String,
    saga: String,
    version: u32,
    status: &'static str,
    traceparent: Option<String>,
}

impl std::fmt::Debug for StepSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StepSpan({} {})", self.saga_id, self.attempt.step)
    }
}

impl StepSpan {
    /// The saga it belongs to.
    pub(super) fn saga_id(&self) -> &str {
        &self.saga_id
    }

    /// Records the span, parented to the saga's trace.
    pub fn emit(self) {
        let a = self.attempt;
        let (outcome, code, retryable, status) = match &a.outcome {
            Outcome::Ok => ("ok", None, None, "OK"),
            Outcome::Error(code, retryable) => {
                ("error", Some(code.as_str()), Some(*retryable), "ERROR")
            }
            Outcome::TimedOut(code) => ("timed_out", Some(code.as_str()), None, "ERROR"),
        };
        let span = tracing::info_span!(
            "saga.step",
            otel.name = %format!("{} {}", self.saga, a.step),
            otel.status_code = status,
            saga.id = %self.saga_id,
            saga.name = %self.saga,
            saga.version = i64::from(self.version),
            saga.status = self.status,
            saga.step = %a.step,
            saga.element = a.element.map(i64::from),
            saga.activity = a.activity.as_deref(),
            saga.task.kind = %a.kind,
            saga.task.id = a.task_id.as_deref(),
            saga.attempt = i64::from(a.attempt),
            saga.outcome = outcome,
            error.code = code,
            error.retryable = retryable,
        );
        crate::telemetry::set_parent(&span, self.traceparent.as_deref());
        span.in_scope(|| {});
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use serde_json::json;

    fn entry(event: HistoryEvent, step: &str) -> HistoryEntry {
        HistoryEntry {
            at: Utc::now(),
            event,
            step: Some(step.into()),
            attempt: Some(3),
            detail: json!({"timeout": "heartbeat", "kind": "compensation", "activity": "mail.recall"}),
        }
    }

    /// As the machine records an element's entry: the label, and `in`/`index`.
    fn element_entry(step: &str, index: u32) -> HistoryEntry {
        let mut h = entry(HistoryEvent::AttemptTimedOut, &format!("{step}[{index}]"));
        h.detail["in"] = json!(step);
        h.detail["index"] = json!(index);
        h
    }

    #[test]
    fn a_timed_out_element_attempt_names_its_step_and_index() {
        let a = timed_out(&element_entry("send_each", 41)).unwrap();
        assert_eq!(
            (a.step.as_str(), a.element, a.attempt),
            ("send_each", Some(41), 3)
        );
        assert_eq!(a.kind, "compensation");
        assert_eq!(a.activity.as_deref(), Some("mail.recall"));
        assert!(matches!(a.outcome, Outcome::TimedOut(ref c) if c == "timeout.heartbeat"));
        let b = timed_out(&entry(HistoryEvent::AttemptTimedOut, "charge")).unwrap();
        assert_eq!((b.step.as_str(), b.element), ("charge", None));
    }

    #[test]
    fn other_history_makes_no_span() {
        assert!(timed_out(&entry(HistoryEvent::AttemptFailed, "charge")).is_none());
    }
}
