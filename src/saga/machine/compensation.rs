//! Compensation: undoing completed units latest-completed first, one at a time, once
//! no action is in flight any more, and ending the saga with the status that says
//! what happened.

use serde_json::json;

use super::units::Unit;
use super::{Command, HistoryEvent, Run};
use crate::messages::{ErrorInfo, SagaEvent, TaskKind};
use crate::saga::state::{SagaStatus, StepStatus};

impl Run<'_> {
    /// Leaves everything in flight as `left_as` without waiting for it (an operator's
    /// compensate: an action that may still land is abandoned, not undone), then
    /// compensates.
    pub(super) fn abandon_and_compensate(&mut self, left_as: StepStatus, why: &str) {
        // Running children undo themselves; their late answers will be stale here.
        self.cancel_children(why);
        for u in self.units_of(self.state.cursor) {
            let st = self.unit_state_mut(u);
            if matches!(
                st.status,
                StepStatus::Running | StepStatus::Sleeping | StepStatus::Waiting
            ) {
                st.status = left_as;
                st.until = None;
            }
        }
        self.state.tasks.clear();
        // Elements in flight are abandoned with the rest: they were not counted
        // completed, so they are not undone.
        let i = self.state.cursor;
        self.drop_idle_elements(i);
        if let Some(st) = self.state.steps.get_mut(i) {
            if st.fan_out.is_some() && st.status == StepStatus::Running {
                st.status = left_as;
            }
        }
        self.begin_compensation(why);
    }

    /// Stops going forward: sleeps, waits and parked retries of the current step are
    /// left (as `pending`), actions in flight are awaited, then completed units are
    /// undone.
    pub(super) fn begin_compensation(&mut self, why: &str) {
        self.state.status = SagaStatus::Compensating;
        self.record(
            HistoryEvent::SagaCompensating,
            None,
            None,
            json!({ "reason": why }),
        );
        self.cancel_children(why);
        let parked: Vec<Unit> = self
            .state
            .tasks
            .iter()
            .filter(|t| t.dispatch_at.is_some())
            .map(Unit::of)
            .collect();
        for u in parked {
            self.drop_tasks_of(u);
            self.unit_state_mut(u).status = StepStatus::Pending;
        }
        self.drop_idle_elements(self.state.cursor);
        for u in self.units_of(self.state.cursor) {
            let st = self.unit_state_mut(u);
            if matches!(st.status, StepStatus::Sleeping | StepStatus::Waiting) {
                st.status = StepStatus::Pending;
                st.until = None;
            }
        }
        if let Some(st) = self.state.steps.get_mut(self.state.cursor) {
            let group = !st.branches.is_empty() || st.fan_out.is_some();
            if group && st.status == StepStatus::Running {
                st.status = StepStatus::Failed;
            }
        }
        self.continue_compensation();
    }

    /// Starts the next compensation, latest-completed unit first, or ends the saga
    /// when nothing is left to undo. Waits while any action is in flight (its effect
    /// may still land and must then be undone too) or a compensation runs.
    pub(super) fn continue_compensation(&mut self) {
        if !self.state.tasks.is_empty() {
            // Undoing a fan-out's elements, several at a time: start more as slots free.
            let i = self.state.cursor;
            let undoing =
                self.state.tasks.iter().all(|t| {
                    t.step == i && t.element.is_some() && t.kind == TaskKind::Compensation
                });
            if undoing && self.state.steps[i].status == StepStatus::Compensating {
                self.undo_fan_out(i);
            }
            return;
        }
        let mut done: Vec<Unit> = self
            .all_units()
            .into_iter()
            .filter(|u| match self.for_each_of(u.step) {
                Some(_) if u.element.is_none() => self.fan_out_to_undo(u.step),
                _ => self.unit_state(*u).status == StepStatus::Completed,
            })
            .filter(|u| self.unit_def(*u).kind.is_leaf())
            .collect();
        // Latest-completed first; states from before completion numbers compensate
        // in reverse definition order, which was their completion order.
        done.sort_by_key(|u| std::cmp::Reverse((self.unit_state(*u).completed_seq, *u)));
        for u in done {
            if let Some(saga) = self.child_saga(u) {
                self.state.cursor = u.step;
                let st = self.unit_state_mut(u);
                st.status = StepStatus::Compensating;
                st.comp_attempts = 1;
                let child = self.child_id(u);
                let detail = json!({ "saga": saga, "child": child });
                self.record(HistoryEvent::CompensationStarted, Some(u), Some(1), detail);
                return self.begin_task(u, TaskKind::Compensation);
            }
            let Some(a) = self.activity_of(u) else {
                continue; // a sleep or a wait has nothing to undo
            };
            if a.compensate.is_some() && self.for_each_of(u.step).is_some() {
                return self.undo_fan_out(u.step);
            }
            if a.compensate.is_some() {
                self.state.cursor = u.step;
                let st = self.unit_state_mut(u);
                st.status = StepStatus::Compensating;
                st.comp_attempts = 1;
                self.record(
                    HistoryEvent::CompensationStarted,
                    Some(u),
                    Some(1),
                    json!({ "activity": a.compensate }),
                );
                return self.begin_task(u, TaskKind::Compensation);
            }
            self.unit_state_mut(u).status = StepStatus::NotCompensable;
            self.record(HistoryEvent::StepNotCompensable, Some(u), None, json!({}));
        }
        self.end_compensation();
    }

    pub(super) fn end_compensation(&mut self) {
        let stuck = self
            .all_units()
            .into_iter()
            .any(|u| self.unit_state(u).status == StepStatus::NotCompensable);
        let status = if stuck {
            SagaStatus::Failed
        } else if self.state.cancel_requested {
            SagaStatus::Cancelled
        } else {
            SagaStatus::Compensated
        };
        self.finish_saga(status);
    }

    pub(super) fn fail_compensation(&mut self, u: Unit, error: ErrorInfo, reason: &str) {
        self.unit_state_mut(u).status = StepStatus::CompensationFailed;
        self.drop_tasks_of(u);
        self.record(
            HistoryEvent::CompensationFailed,
            Some(u),
            None,
            json!({ "reason": reason, "error": error }),
        );
        self.state.error = Some(error);
        self.finish_saga(SagaStatus::Failed);
    }

    pub(super) fn finish_saga(&mut self, status: SagaStatus) {
        self.state.status = status;
        self.state.tasks.clear();
        self.reply_to_parent(status);
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
        SagaStatus::Cancelled => HistoryEvent::SagaCancelled,
        // finish_saga is only called with a terminal status.
        SagaStatus::Failed
        | SagaStatus::Scheduled
        | SagaStatus::Running
        | SagaStatus::Compensating => HistoryEvent::SagaFailed,
    }
}
