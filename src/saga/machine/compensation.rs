//! Compensation: undoing completed steps in reverse, one at a time, and ending the
//! saga with the status that says what happened.

use serde_json::json;

use super::{Command, HistoryEvent, Run};
use crate::messages::{ErrorInfo, SagaEvent, TaskKind};
use crate::saga::state::{SagaStatus, StepStatus};

impl Run<'_> {
    /// Leaves step `i` if it is in flight (running, sleeping or waiting) as `left_as`:
    /// an action that may still land is abandoned, not undone. Then undoes the steps
    /// before it. Cancel and the operator's compensate differ only in `left_as` and `why`.
    pub(super) fn abandon_and_compensate(&mut self, i: usize, left_as: StepStatus, why: &str) {
        if let Some(st) = self.state.steps.get_mut(i) {
            if matches!(
                st.status,
                StepStatus::Running | StepStatus::Sleeping | StepStatus::Waiting
            ) {
                st.status = left_as;
                st.until = None;
            }
        }
        self.state.active = None;
        self.begin_compensation(i.checked_sub(1), why);
    }

    pub(super) fn begin_compensation(&mut self, from: Option<usize>, why: &str) {
        self.state.status = SagaStatus::Compensating;
        self.record(
            HistoryEvent::SagaCompensating,
            None,
            None,
            json!({ "reason": why }),
        );
        self.continue_compensation(from);
    }

    /// Undoes completed steps from `from` down to the first, one at a time.
    pub(super) fn continue_compensation(&mut self, from: Option<usize>) {
        let mut next = from;
        while let Some(k) = next {
            if self.state.steps[k].status == StepStatus::Completed {
                if let Some(a) = self.activity(k) {
                    if a.compensate.is_some() {
                        self.state.cursor = k;
                        self.state.steps[k].status = StepStatus::Compensating;
                        self.state.steps[k].comp_attempts = 1;
                        self.record(
                            HistoryEvent::CompensationStarted,
                            Some(k),
                            Some(1),
                            json!({ "activity": a.compensate }),
                        );
                        return self.begin_task(k, TaskKind::Compensation);
                    }
                    self.state.steps[k].status = StepStatus::NotCompensable;
                    self.record(HistoryEvent::StepNotCompensable, Some(k), None, json!({}));
                }
            }
            next = k.checked_sub(1);
        }
        self.end_compensation();
    }

    pub(super) fn end_compensation(&mut self) {
        let stuck = self
            .state
            .steps
            .iter()
            .any(|s| s.status == StepStatus::NotCompensable);
        let status = if stuck {
            SagaStatus::Failed
        } else if self.state.cancel_requested {
            SagaStatus::Cancelled
        } else {
            SagaStatus::Compensated
        };
        self.finish_saga(status);
    }

    pub(super) fn fail_compensation(&mut self, i: usize, error: ErrorInfo, reason: &str) {
        self.state.steps[i].status = StepStatus::CompensationFailed;
        self.state.active = None;
        self.record(
            HistoryEvent::CompensationFailed,
            Some(i),
            None,
            json!({ "reason": reason, "error": error }),
        );
        self.state.error = Some(error);
        self.finish_saga(SagaStatus::Failed);
    }

    pub(super) fn finish_saga(&mut self, status: SagaStatus) {
        self.state.status = status;
        self.state.active = None;
        self.record(
            terminal_event(status),
            None,
            None,
            json!({ "error": self.state.error }),
        );
        self.commands.push(Command::Publish(SagaEvent {
            saga_id: self.state.id.clone(),
            saga: self.state.saga.clone(),
            version: self.state.version,
            status: status.as_str().to_string(),
            at: self.now,
            error: self.state.error.clone(),
        }));
    }
}

fn terminal_event(status: SagaStatus) -> HistoryEvent {
    match status {
        SagaStatus::Completed => HistoryEvent::SagaCompleted,
        SagaStatus::Compensated => HistoryEvent::SagaCompensated,
        SagaStatus::Failed => HistoryEvent::SagaFailed,
        SagaStatus::Cancelled => HistoryEvent::SagaCancelled,
        // finish_saga is only called with a terminal status.
        SagaStatus::Scheduled | SagaStatus::Running | SagaStatus::Compensating => {
            HistoryEvent::SagaFailed
        }
    }
}
