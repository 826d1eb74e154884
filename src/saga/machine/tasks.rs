//! Task chains: opening one for a unit's action or compensation, dispatching its
//! attempts (now, after a broker delay, or parked in Postgres), and what an answer
//! does: complete the unit, retry, or give up.

use std::time::Duration;

use serde_json::{json, Value};

use super::units::Unit;
use super::{to_chrono, Command, HistoryEvent, Run, BROKER_DELAY_MAX};
use crate::messages::{Deadlines, ErrorInfo, TaskKind, TaskMessage, COORDINATOR_REPLY_TO};
use crate::saga::definition::RetryPolicy;
use crate::saga::retry::{self, GiveUpReason, RetryDecision};
use crate::saga::state::{ActiveTask, SagaStatus, StepStatus};

impl<'a> Run<'a> {
    /// Opens a new attempt chain for `u` and dispatches attempt 1 now.
    pub(super) fn begin_task(&mut self, u: Unit, kind: TaskKind) {
        let st = self.unit_state_mut(u);
        let chains = match kind {
            TaskKind::Action => &mut st.action_chains,
            TaskKind::Compensation => &mut st.comp_chains,
        };
        *chains += 1;
        let n = *chains;
        let task_id = format!("{}#{n}", self.idempotency_key(u, kind));
        let activity = self.activity_of(u).and_then(|a| match kind {
            TaskKind::Action => Some(a.activity.clone()),
            TaskKind::Compensation => a.compensate.clone(),
        });
        let child = self.child_saga(u).map(|_| self.child_id(u));
        self.drop_tasks_of(u);
        self.state.tasks.push(ActiveTask {
            task_id: task_id.clone(),
            step: u.step,
            branch: u.branch,
            element: u.element,
            child,
            kind,
            activity,
            attempt: 1,
            first_scheduled_at: self.now,
            dispatch_at: None,
            scheduled_at: None,
            started_at: None,
            heartbeat_at: None,
            heartbeat_details: None,
            timeout_at: None,
        });
        self.dispatch(&task_id, Duration::ZERO);
    }

    /// `<saga>:<step or branch>:<kind>` (`<step>[<index>]` for an element), with
    /// `:g<n>` once an operator resumed the saga `n` times. Step and branch names are
    /// unique within a definition.
    fn idempotency_key(&self, u: Unit, kind: TaskKind) -> String {
        let key = format!("{}:{}:{}", self.state.id, self.unit_label(u), kind.as_str());
        match self.state.generation {
            0 => key,
            g => format!("{key}:g{g}"),
        }
    }

    /// Publishes the chain's current attempt after `delay`, or parks it in Postgres
    /// when the wait is longer than the broker's delay levels.
    pub(super) fn dispatch(&mut self, task_id: &str, delay: Duration) {
        let Some(idx) = self.task_index(task_id) else {
            return;
        };
        let now = self.now;
        let parked = delay > BROKER_DELAY_MAX;
        let a = &mut self.state.tasks[idx];
        a.dispatch_at = parked.then(|| now + to_chrono(delay));
        a.scheduled_at = (!parked).then(|| now + to_chrono(delay));
        a.started_at = None;
        a.heartbeat_at = None;
        self.arm_timeouts(task_id);
        let active = self.state.tasks[idx].clone();
        if let Some(saga) = self.child_saga(Unit::of(&active)) {
            return self.dispatch_child(&active, saga);
        }
        if !parked {
            if let Some(task) = self.task_message(&active, delay) {
                self.commands.push(Command::Dispatch { task, delay });
            }
        }
    }

    /// The message for the chain's current attempt; `None` only for a chain that
    /// does not run an activity, which the machine never opens.
    fn task_message(&self, active: &ActiveTask, delay: Duration) -> Option<TaskMessage> {
        let u = Unit::of(active);
        let a = self.activity_of(u)?;
        let activity = active.activity.clone()?;
        let policy = self.policy(active)?;
        let mut input = self.task_input(u).unwrap_or(Value::Null);
        if active.kind == TaskKind::Compensation {
            input["output"] = self.unit_state(u).output.clone().unwrap_or(Value::Null);
        }
        let scheduled_at = self.now + to_chrono(delay);
        let t = &a.timeouts;
        Some(TaskMessage {
            task_id: active.task_id.clone(),
            saga_id: self.state.id.clone(),
            saga: self.state.saga.clone(),
            step: self.unit_name(u).to_string(),
            activity,
            kind: active.kind,
            attempt: active.attempt,
            max_attempts: policy.max_attempts,
            idempotency_key: self.idempotency_key(u, active.kind),
            input,
            reply_to: COORDINATOR_REPLY_TO.to_string(),
            scheduled_at,
            deadlines: Deadlines {
                schedule_to_start: t.schedule_to_start.map(|d| scheduled_at + to_chrono(d)),
                start_to_close_ms: t.start_to_close.as_millis() as u64,
                schedule_to_close: self.schedule_to_close(active),
                heartbeat_ms: t.heartbeat.map(|d| d.as_millis() as u64),
            },
            heartbeat_details: active.heartbeat_details.clone(),
            item: self.item_of(u),
            index: u.element,
        })
    }

    pub(super) fn schedule_to_close(
        &self,
        active: &ActiveTask,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        let a = self.activity_of(Unit::of(active))?;
        a.timeouts
            .schedule_to_close
            .map(|d| active.first_scheduled_at + to_chrono(d))
    }

    fn policy(&self, active: &ActiveTask) -> Option<&'a RetryPolicy> {
        let a = self.activity_of(Unit::of(active))?;
        Some(match active.kind {
            TaskKind::Action => &a.retry,
            TaskKind::Compensation => &a.compensate_retry,
        })
    }

    /// The chain `task_id` names, if `attempt` is its current one and it is not
    /// parked (anything else is a duplicate or stale message: a later attempt or
    /// chain is in charge).
    pub(super) fn current(&self, task_id: &str, attempt: Option<u32>) -> Option<ActiveTask> {
        let active = &self.state.tasks[self.task_index(task_id)?];
        let current = attempt.is_none_or(|a| a == active.attempt) && active.dispatch_at.is_none();
        current.then(|| active.clone())
    }

    pub(super) fn on_result(
        &mut self,
        task_id: &str,
        attempt: Option<u32>,
        result: Result<Value, ErrorInfo>,
    ) {
        let Some(active) = self.current(task_id, attempt) else {
            return;
        };
        match result {
            Ok(output) => self.on_task_ok(&active, output),
            Err(error) => self.on_task_error(&active, error),
        }
    }

    /// What a finished task chain records: its activity and how long the chain took
    /// from its first scheduling (queueing, attempts and retry waits included).
    fn finished_detail(&self, active: &ActiveTask) -> Value {
        let ms = (self.now - active.first_scheduled_at)
            .num_milliseconds()
            .max(0);
        json!({ "activity": active.activity, "duration_ms": ms })
    }

    fn on_task_ok(&mut self, active: &ActiveTask, output: Value) {
        let u = Unit::of(active);
        let mut detail = self.finished_detail(active);
        match active.kind {
            TaskKind::Action => self.complete_unit(u, output, HistoryEvent::StepCompleted, detail),
            TaskKind::Compensation if u.element.is_some() => {
                detail["output"] = output;
                self.element_compensated(u, detail);
            }
            TaskKind::Compensation => {
                self.unit_state_mut(u).status = StepStatus::Compensated;
                self.drop_tasks_of(u);
                let attempt = self.unit_state(u).comp_attempts;
                detail["output"] = output;
                self.record(
                    HistoryEvent::CompensationCompleted,
                    Some(u),
                    Some(attempt),
                    detail,
                );
                self.continue_compensation();
            }
        }
    }

    fn on_task_error(&mut self, active: &ActiveTask, error: ErrorInfo) {
        let event = match active.kind {
            TaskKind::Action => HistoryEvent::AttemptFailed,
            TaskKind::Compensation => HistoryEvent::CompensationAttemptFailed,
        };
        self.record(
            event,
            Some(Unit::of(active)),
            Some(active.attempt),
            json!({ "error": error, "activity": active.activity }),
        );
        self.after_failure(active, error);
    }

    /// Retries the failed attempt or gives the unit (or its compensation) up. An
    /// action that failed while the saga compensates is not retried: nothing will
    /// use its result, and compensation waits for it.
    pub(super) fn after_failure(&mut self, active: &ActiveTask, error: ErrorInfo) {
        let stop_retrying =
            self.state.status == SagaStatus::Compensating && active.kind == TaskKind::Action;
        let decision = match self.policy(active) {
            Some(policy) if !stop_retrying => retry::decide(
                policy,
                active.attempt,
                &error,
                self.now,
                self.schedule_to_close(active),
            ),
            _ => RetryDecision::GiveUp(GiveUpReason::NotRetryable),
        };
        let u = Unit::of(active);
        match decision {
            RetryDecision::Retry { attempt, delay } => self.retry(active, attempt, delay),
            RetryDecision::GiveUp(reason) => {
                let reason = match (stop_retrying, self.state.cancel_requested) {
                    (true, true) => "cancelled",
                    (true, false) => "compensating",
                    _ => reason.as_str(),
                };
                match active.kind {
                    TaskKind::Action => self.fail_unit(u, error, reason),
                    TaskKind::Compensation => self.fail_compensation(u, error, reason),
                }
            }
        }
    }

    fn retry(&mut self, active: &ActiveTask, attempt: u32, delay: Duration) {
        let u = Unit::of(active);
        let st = self.unit_state_mut(u);
        match active.kind {
            TaskKind::Action => st.attempts = attempt,
            TaskKind::Compensation => st.comp_attempts = attempt,
        }
        if let Some(i) = self.task_index(&active.task_id) {
            self.state.tasks[i].attempt = attempt;
        }
        self.record(
            HistoryEvent::RetryScheduled,
            Some(u),
            Some(attempt),
            json!({ "delay_ms": delay.as_millis() as u64, "kind": active.kind, "activity": active.activity }),
        );
        self.dispatch(&active.task_id, delay);
    }
}
