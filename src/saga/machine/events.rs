//! Wake-ups, signals and cancel requests: the events that are not task results.

use std::time::Duration;

use serde_json::{json, Value};

use super::units::Unit;
use super::{HistoryEvent, Run};
use crate::messages::ErrorInfo;
use crate::saga::definition::{OnTimeout, StepKind};
use crate::saga::state::{SagaStatus, StepStatus};

/// Bound on the due items one wake-up handles: each handled item moves its deadline
/// or ends its unit, so this only guards against a bug looping for ever.
const MAX_DUE_PER_WAKE: usize = 10_000;

/// Something whose time has come.
enum Due {
    Dispatch(String),
    Timeout(String, super::timeouts::Timeout),
    /// A chain stored without a deadline (an older version wrote it; the stuck-saga
    /// reconciler woke it): arm one now.
    Unarmed(String),
    SleepOver(Unit),
    WaitOver(Unit),
}

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
        for _ in 0..MAX_DUE_PER_WAKE {
            let Some(due) = self.next_due() else {
                return;
            };
            match due {
                Due::Dispatch(id) => self.dispatch(&id, Duration::ZERO),
                Due::Timeout(id, kind) => {
                    if let Some(a) = self.task_index(&id).map(|i| self.state.tasks[i].clone()) {
                        self.on_timeout(&a, kind);
                    }
                }
                Due::Unarmed(id) => {
                    self.arm_timeouts(&id);
                    let armed = self
                        .task_index(&id)
                        .is_some_and(|i| self.state.tasks[i].timeout_at.is_some());
                    self.touched |= armed;
                    if !armed {
                        return;
                    }
                }
                Due::SleepOver(u) => {
                    self.complete_unit(u, Value::Null, HistoryEvent::SleepCompleted, json!({}))
                }
                Due::WaitOver(u) => self.wait_timed_out(u),
            }
        }
    }

    /// The first thing due now: parked retries, then activity timeouts, then sleeps
    /// and waits of the current step, each in definition order.
    fn next_due(&self) -> Option<Due> {
        let now = self.now;
        for a in &self.state.tasks {
            if a.dispatch_at.is_some_and(|at| at <= now) {
                return Some(Due::Dispatch(a.task_id.clone()));
            }
            if let Some(kind) = self.due_timeout(a) {
                return Some(Due::Timeout(a.task_id.clone(), kind));
            }
            if a.timeout_at.is_none() && a.dispatch_at.is_none() && !self.deadlines(a).is_empty() {
                return Some(Due::Unarmed(a.task_id.clone()));
            }
        }
        if self.state.status != SagaStatus::Running {
            return None;
        }
        for u in self.units_of(self.state.cursor) {
            let st = self.unit_state(u);
            if st.until.is_none_or(|until| until > now) {
                continue;
            }
            match st.status {
                StepStatus::Sleeping => return Some(Due::SleepOver(u)),
                StepStatus::Waiting => return Some(Due::WaitOver(u)),
                _ => {}
            }
        }
        None
    }

    pub(super) fn wait_timed_out(&mut self, u: Unit) {
        let StepKind::Wait(w) = &self.unit_def(u).kind else {
            return;
        };
        match w.on_timeout {
            OnTimeout::Continue => {
                self.complete_unit(u, Value::Null, HistoryEvent::WaitTimedOut, json!({}))
            }
            OnTimeout::Fail => {
                let error = ErrorInfo {
                    code: "wait_timeout".into(),
                    message: format!("no signal `{}` before the timeout", w.signal),
                    retryable: false,
                };
                self.fail_unit(u, error, "wait_timeout");
            }
        }
    }

    /// Delivers a signal to the first unit of the current step waiting for it, or
    /// buffers it for a wait still to come.
    pub(super) fn on_signal(&mut self, name: String, payload: Value) {
        let waiting = if self.state.status == SagaStatus::Running {
            self.current_units_in(StepStatus::Waiting)
                .into_iter()
                .find(|u| matches!(&self.unit_def(*u).kind, StepKind::Wait(w) if w.signal == name))
        } else {
            None
        };
        if let Some(u) = waiting {
            self.record(
                HistoryEvent::SignalReceived,
                Some(u),
                None,
                json!({ "signal": name }),
            );
            return self.complete_unit(u, payload, HistoryEvent::WaitCompleted, json!({}));
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

    /// Stops the saga: a scheduled one ends at once; a running one compensates,
    /// waiting first for the answers of actions in flight (their effects may land).
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
            _ => self.begin_compensation("cancelled"),
        }
    }
}
