//! Wake-ups, signals and cancel requests: the events that are not task results.

use std::time::Duration;

use serde_json::{json, Value};

use super::{HistoryEvent, Run};
use crate::messages::ErrorInfo;
use crate::saga::definition::{OnTimeout, StepKind};
use crate::saga::state::{SagaStatus, StepStatus};

impl Run<'_> {
    pub(super) fn on_wake(&mut self) {
        let now = self.now;
        if self.state.status == SagaStatus::Scheduled {
            if self.state.run_at.is_some_and(|at| at <= now) {
                self.state.status = SagaStatus::Running;
                self.state.run_at = None;
                self.record(
                    HistoryEvent::SagaStarted,
                    None,
                    None,
                    json!({ "version": self.def.version }),
                );
                self.enter_step(0);
            }
            return;
        }
        if let Some(a) = self.state.active.clone() {
            if a.dispatch_at.is_some_and(|at| at <= now) {
                return self.dispatch(Duration::ZERO);
            }
            if let Some(kind) = self.due_timeout(&a) {
                return self.on_timeout(&a, kind);
            }
            // An attempt stored without a deadline (an older version wrote it; the
            // stuck-saga reconciler woke it): arm one now.
            if a.timeout_at.is_none() && a.dispatch_at.is_none() {
                self.arm_timeouts();
                self.touched = self
                    .state
                    .active
                    .as_ref()
                    .is_some_and(|a| a.timeout_at.is_some());
                return;
            }
        }
        let i = self.state.cursor;
        let Some(st) = self.state.steps.get(i) else {
            return;
        };
        if st.until.is_none_or(|u| u > now) {
            return;
        }
        match st.status {
            StepStatus::Sleeping => {
                self.complete_step(i, Value::Null, HistoryEvent::SleepCompleted)
            }
            StepStatus::Waiting => self.wait_timed_out(i),
            _ => {}
        }
    }

    pub(super) fn wait_timed_out(&mut self, i: usize) {
        let StepKind::Wait(w) = &self.def.steps[i].kind else {
            return;
        };
        match w.on_timeout {
            OnTimeout::Continue => self.complete_step(i, Value::Null, HistoryEvent::WaitTimedOut),
            OnTimeout::Fail => {
                let error = ErrorInfo {
                    code: "wait_timeout".into(),
                    message: format!("no signal `{}` before the timeout", w.signal),
                    retryable: false,
                };
                self.fail_step(i, error, "wait_timeout");
            }
        }
    }

    pub(super) fn on_signal(&mut self, name: String, payload: Value) {
        let i = self.state.cursor;
        let waiting_for_it = self.state.status == SagaStatus::Running
            && self
                .state
                .steps
                .get(i)
                .is_some_and(|s| s.status == StepStatus::Waiting)
            && matches!(&self.def.steps[i].kind, StepKind::Wait(w) if w.signal == name);
        if waiting_for_it {
            self.record(
                HistoryEvent::SignalReceived,
                Some(i),
                None,
                json!({ "signal": name }),
            );
            return self.complete_wait(i, payload);
        }
        self.record(
            HistoryEvent::SignalBuffered,
            None,
            None,
            json!({ "signal": name }),
        );
        self.state.signals.entry(name).or_default().push(payload);
    }

    pub(super) fn take_buffered_signal(&mut self, name: &str) -> Option<Value> {
        let queue = self.state.signals.get_mut(name)?;
        let payload = (!queue.is_empty()).then(|| queue.remove(0));
        if queue.is_empty() {
            self.state.signals.remove(name);
        }
        payload
    }

    pub(super) fn complete_wait(&mut self, i: usize, payload: Value) {
        self.complete_step(i, payload, HistoryEvent::WaitCompleted);
    }

    pub(super) fn on_cancel(&mut self, reason: String) {
        // A saga already undoing a failure ends `compensated`, not `cancelled`.
        if self.state.cancel_requested || self.state.status == SagaStatus::Compensating {
            return;
        }
        self.state.cancel_requested = true;
        self.record(
            HistoryEvent::CancelRequested,
            None,
            None,
            json!({ "reason": reason }),
        );
        match self.state.status {
            SagaStatus::Scheduled => {
                self.state.run_at = None;
                self.finish_saga(SagaStatus::Cancelled)
            }
            _ => self.cancel_running(),
        }
    }

    pub(super) fn cancel_running(&mut self) {
        let i = self.state.cursor;
        match self.state.steps.get(i).map(|s| s.status) {
            // An action is in flight: its effect may land, so wait for its answer.
            Some(StepStatus::Running)
                if self
                    .state
                    .active
                    .as_ref()
                    .is_some_and(|a| a.dispatch_at.is_none()) => {}
            _ => self.abandon_and_compensate(i, StepStatus::Pending, "cancelled"),
        }
    }
}
