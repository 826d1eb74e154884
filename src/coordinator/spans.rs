//! The coordinator's span per step attempt (docs/operations.md, "Tracing"): one
//! `saga.step` span each time a batch applies an attempt's result, a child of the
//! saga's trace context (`SagaState::traceparent`). Built only while spans are
//! exported (`crate::telemetry::enabled`).

use crate::saga::definition::{Definition, StepKind};
use crate::saga::machine::Event;
use crate::saga::state::SagaState;

/// What the span says about the attempt, read from the state before the result is
/// applied (the chain may be gone after).
pub(super) struct Attempt {
    step: String,
    kind: &'static str,
    attempt: u32,
    task_id: String,
    outcome: Result<(), (String, bool)>,
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
        kind: chain.kind.as_str(),
        attempt: attempt.unwrap_or(chain.attempt),
        task_id: task_id.clone(),
        outcome: match result {
            Ok(_) => Ok(()),
            Err(e) => Err((e.code.clone(), e.retryable)),
        },
    })
}

impl Attempt {
    /// Records the span, parented to the saga's trace.
    pub(super) fn record(self, state: &SagaState) {
        let (outcome, code, retryable, status) = match &self.outcome {
            Ok(()) => ("ok", None, None, "OK"),
            Err((code, retryable)) => ("error", Some(code.as_str()), Some(*retryable), "ERROR"),
        };
        let span = tracing::info_span!(
            "saga.step",
            otel.name = %format!("{} {}", state.saga, self.step),
            otel.status_code = status,
            saga.id = %state.id,
            saga.name = %state.saga,
            saga.version = i64::from(state.version),
            saga.status = state.status.as_str(),
            step = %self.step,
            kind = self.kind,
            attempt = i64::from(self.attempt),
            task_id = %self.task_id,
            outcome,
            error.code = code,
            error.retryable = retryable,
        );
        crate::telemetry::set_parent(&span, state.traceparent.as_deref());
        span.in_scope(|| {});
    }
}
