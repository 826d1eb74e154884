//! The pure saga state machine: `(definition, state, event, now) -> (state, commands, history)`.
//!
//! No I/O, no clock, no randomness: the coordinator feeds it events and performs the
//! commands it returns inside one Postgres transaction. Every event a saga can receive
//! is handled in every status; duplicates and stale events (a result for an attempt
//! that is no longer current, a wake-up with nothing due, anything after a terminal
//! status) return a decision with no history and no commands, which the coordinator
//! treats as "nothing to write".

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::messages::{
    Deadlines, ErrorInfo, SagaEvent, TaskKind, TaskMessage, COORDINATOR_REPLY_TO,
};
use crate::saga::definition::{ActivityStep, Definition, RetryPolicy, StepKind};
pub use crate::saga::history::{HistoryEntry, HistoryEvent};
use crate::saga::retry::{self, RetryDecision};
use crate::saga::state::{ActiveTask, SagaState, SagaStatus, StepState, StepStatus};

/// Retry waits up to this long ride RabbitMQ delay queues; longer ones are parked in
/// Postgres (`ActiveTask::dispatch_at`) because a message sitting in a queue for hours
/// is fragile and invisible.
pub const BROKER_DELAY_MAX: Duration = Duration::from_secs(3600);

/// Something that happened to an existing saga.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A worker answered a task attempt.
    Result {
        task_id: String,
        attempt: Option<u32>,
        result: Result<Value, ErrorInfo>,
    },
    /// The saga's `wake_at` passed: start, end a sleep, time out a wait, dispatch a parked retry.
    Wake,
    /// A named signal with its payload.
    Signal { name: String, payload: Value },
    /// Stop the saga and undo its completed steps.
    Cancel { reason: String },
    /// A worker began an attempt (reported for tasks with schedule-to-start or heartbeat).
    Started {
        task_id: String,
        attempt: Option<u32>,
    },
    /// A long attempt is alive.
    Heartbeat {
        task_id: String,
        attempt: Option<u32>,
        details: Option<Value>,
    },
}

/// An effect the coordinator performs after committing the decision.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Publish a task attempt, after `delay` (zero: now).
    Dispatch { task: TaskMessage, delay: Duration },
    /// Announce a terminal status on the events exchange.
    Publish(SagaEvent),
}

/// The machine's answer to one event.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub state: SagaState,
    pub commands: Vec<Command>,
    pub history: Vec<HistoryEntry>,
    /// The state changed without history (a heartbeat moved a deadline).
    pub touched: bool,
}

impl Decision {
    /// True when the event was a duplicate or stale and nothing must be written.
    pub fn is_noop(&self) -> bool {
        !self.touched && self.history.is_empty() && self.commands.is_empty()
    }
}

/// Creates a saga. With `run_at` in the future it is `scheduled` until a wake-up.
pub fn start(
    def: &Definition,
    id: &str,
    input: Value,
    run_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Decision {
    let state = SagaState {
        id: id.to_string(),
        saga: def.name.clone(),
        version: def.version,
        status: SagaStatus::Running,
        input,
        steps: def.steps.iter().map(|_| StepState::pending()).collect(),
        cursor: 0,
        active: None,
        run_at: None,
        error: None,
        signals: Default::default(),
        cancel_requested: false,
        generation: 0,
    };
    let mut run = Run::new(def, state, now);
    match run_at.filter(|at| *at > now) {
        Some(at) => {
            run.state.status = SagaStatus::Scheduled;
            run.state.run_at = Some(at);
            run.record(
                HistoryEvent::SagaScheduled,
                None,
                None,
                json!({ "run_at": at }),
            );
        }
        None => {
            run.record(
                HistoryEvent::SagaStarted,
                None,
                None,
                json!({ "version": def.version }),
            );
            run.enter_step(0);
        }
    }
    run.finish()
}

/// Applies one event to an existing saga.
pub fn apply(def: &Definition, state: SagaState, event: Event, now: DateTime<Utc>) -> Decision {
    let mut run = Run::new(def, state, now);
    if !run.state.status.is_terminal() {
        match event {
            Event::Result {
                task_id,
                attempt,
                result,
            } => run.on_result(&task_id, attempt, result),
            Event::Wake => run.on_wake(),
            Event::Signal { name, payload } => run.on_signal(name, payload),
            Event::Cancel { reason } => run.on_cancel(reason),
            Event::Started { task_id, attempt } => run.on_progress(&task_id, attempt, None, true),
            Event::Heartbeat {
                task_id,
                attempt,
                details,
            } => run.on_progress(&task_id, attempt, details, false),
        }
    }
    run.finish()
}

/// One application of the machine: the state being changed and what it produced.
struct Run<'a> {
    def: &'a Definition,
    state: SagaState,
    now: DateTime<Utc>,
    commands: Vec<Command>,
    history: Vec<HistoryEntry>,
    touched: bool,
}

impl<'a> Run<'a> {
    fn new(def: &'a Definition, state: SagaState, now: DateTime<Utc>) -> Self {
        Run {
            def,
            state,
            now,
            commands: Vec::new(),
            history: Vec::new(),
            touched: false,
        }
    }

    fn finish(self) -> Decision {
        Decision {
            state: self.state,
            commands: self.commands,
            history: self.history,
            touched: self.touched,
        }
    }

    fn record(
        &mut self,
        event: HistoryEvent,
        step: Option<usize>,
        attempt: Option<u32>,
        detail: Value,
    ) {
        let step = step.map(|i| self.def.steps[i].name.clone());
        self.history.push(HistoryEntry {
            at: self.now,
            event,
            step,
            attempt,
            detail,
        });
    }

    fn activity(&self, step: usize) -> Option<&'a ActivityStep> {
        match &self.def.steps.get(step)?.kind {
            StepKind::Activity(a) => Some(a),
            _ => None,
        }
    }

    // ----- running forward -------------------------------------------------------

    /// Starts step `i`, or completes the saga when there is none.
    fn enter_step(&mut self, i: usize) {
        self.state.cursor = i;
        let Some(step) = self.def.steps.get(i) else {
            return self.finish_saga(SagaStatus::Completed);
        };
        match &step.kind {
            StepKind::Activity(a) => {
                self.state.steps[i].status = StepStatus::Running;
                self.state.steps[i].attempts = 1;
                self.record(
                    HistoryEvent::StepStarted,
                    Some(i),
                    Some(1),
                    json!({ "activity": a.activity }),
                );
                self.begin_task(i, TaskKind::Action);
            }
            StepKind::Sleep(d) => self.sleep(i, self.now + to_chrono(*d)),
            StepKind::SleepUntil(path) => match self.instant_at(path) {
                Ok(until) => self.sleep(i, until),
                Err(message) => {
                    let error = ErrorInfo {
                        code: "bad_sleep_until".into(),
                        message,
                        retryable: false,
                    };
                    self.fail_step(i, error, "bad_sleep_until");
                }
            },
            StepKind::Wait(w) => {
                self.state.steps[i].status = StepStatus::Waiting;
                self.state.steps[i].until = w.timeout.map(|t| self.now + to_chrono(t));
                self.record(
                    HistoryEvent::WaitStarted,
                    Some(i),
                    None,
                    json!({ "signal": w.signal }),
                );
                if let Some(payload) = self.take_buffered_signal(&w.signal) {
                    self.complete_wait(i, payload);
                }
            }
        }
    }

    /// Parks step `i` until `until` (at once when that has passed: the wake-up scan
    /// picks it up on its next poll).
    fn sleep(&mut self, i: usize, until: DateTime<Utc>) {
        self.state.steps[i].status = StepStatus::Sleeping;
        self.state.steps[i].until = Some(until);
        self.record(
            HistoryEvent::SleepStarted,
            Some(i),
            None,
            json!({ "until": until }),
        );
    }

    /// The RFC 3339 instant at a `sleep_until` path (`input.…` or `steps.<step>.…`).
    fn instant_at(&self, path: &str) -> Result<DateTime<Utc>, String> {
        let mut parts = path.split('.');
        let mut value = match parts.next() {
            Some("input") => &self.state.input,
            Some("steps") => {
                let step = parts.next().unwrap_or_default();
                let i = self
                    .def
                    .step_index(step)
                    .ok_or_else(|| format!("no step `{step}`"))?;
                self.state.steps[i]
                    .output
                    .as_ref()
                    .ok_or_else(|| format!("step `{step}` has no output"))?
            }
            _ => return Err(format!("bad path `{path}`")),
        };
        for field in parts {
            value = value
                .get(field)
                .ok_or_else(|| format!("`{path}` is missing"))?;
        }
        let text = value
            .as_str()
            .ok_or_else(|| format!("`{path}` is not a string"))?;
        DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| format!("`{path}` = `{text}` is not an RFC 3339 instant: {e}"))
    }

    fn complete_step(&mut self, i: usize, output: Value, event: HistoryEvent) {
        self.complete_step_with(i, output, event, json!({}));
    }

    /// Completes step `i`, recording `detail` (activity steps: activity and duration).
    fn complete_step_with(&mut self, i: usize, output: Value, event: HistoryEvent, detail: Value) {
        let st = &mut self.state.steps[i];
        st.status = StepStatus::Completed;
        st.until = None;
        let attempt = (st.attempts > 0).then_some(st.attempts);
        st.output = Some(output);
        self.state.active = None;
        self.record(event, Some(i), attempt, detail);
        if self.state.cancel_requested {
            self.begin_compensation(Some(i), "cancelled");
        } else {
            self.enter_step(i + 1);
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

    /// Step `i` failed for good: undo what completed before it.
    fn fail_step(&mut self, i: usize, error: ErrorInfo, reason: &str) {
        let st = &mut self.state.steps[i];
        st.status = StepStatus::Failed;
        st.until = None;
        st.error = Some(error.clone());
        self.state.active = None;
        self.record(
            HistoryEvent::StepFailed,
            Some(i),
            None,
            json!({ "reason": reason, "error": error }),
        );
        self.state.error = Some(error);
        let why = if self.state.cancel_requested {
            "cancelled"
        } else {
            "step_failed"
        };
        self.begin_compensation(i.checked_sub(1), why);
    }

    // ----- tasks -----------------------------------------------------------------

    /// Opens a new attempt chain for step `i` and dispatches attempt 1 now.
    fn begin_task(&mut self, i: usize, kind: TaskKind) {
        let st = &mut self.state.steps[i];
        let chains = match kind {
            TaskKind::Action => &mut st.action_chains,
            TaskKind::Compensation => &mut st.comp_chains,
        };
        *chains += 1;
        let n = *chains;
        let task_id = format!("{}#{n}", self.idempotency_key(i, kind));
        let activity = match (&self.def.steps[i].kind, kind) {
            (StepKind::Activity(a), TaskKind::Action) => Some(a.activity.clone()),
            (StepKind::Activity(a), TaskKind::Compensation) => a.compensate.clone(),
            _ => None,
        };
        self.state.active = Some(ActiveTask {
            task_id,
            step: i,
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
        self.dispatch(Duration::ZERO);
    }

    /// `<saga>:<step>:<kind>`, with `:g<n>` once an operator resumed the saga `n` times.
    fn idempotency_key(&self, i: usize, kind: TaskKind) -> String {
        let key = format!(
            "{}:{}:{}",
            self.state.id,
            self.def.steps[i].name,
            kind.as_str()
        );
        match self.state.generation {
            0 => key,
            g => format!("{key}:g{g}"),
        }
    }

    /// Publishes the active attempt after `delay`, or parks it in Postgres when the
    /// wait is longer than the broker's delay levels.
    fn dispatch(&mut self, delay: Duration) {
        let Some(active) = self.state.active.clone() else {
            return;
        };
        let now = self.now;
        let parked = delay > BROKER_DELAY_MAX;
        if let Some(a) = self.state.active.as_mut() {
            a.dispatch_at = parked.then(|| now + to_chrono(delay));
            a.scheduled_at = (!parked).then(|| now + to_chrono(delay));
            a.started_at = None;
            a.heartbeat_at = None;
        }
        self.arm_timeouts();
        if !parked {
            let task = self.task_message(&active, delay);
            self.commands.push(Command::Dispatch { task, delay });
        }
    }

    fn task_message(&self, active: &ActiveTask, delay: Duration) -> TaskMessage {
        let i = active.step;
        let a = self.activity(i).expect("active task on an activity step");
        let (activity, policy) = match active.kind {
            TaskKind::Action => (a.activity.clone(), &a.retry),
            TaskKind::Compensation => (
                a.compensate
                    .clone()
                    .expect("compensation task has an activity"),
                &a.compensate_retry,
            ),
        };
        let names: Vec<&str> = self.def.steps.iter().map(|s| s.name.as_str()).collect();
        let mut input = json!({
            "saga": self.state.input,
            "steps": self.state.outputs_before(&names, i),
        });
        if active.kind == TaskKind::Compensation {
            input["output"] = self.state.steps[i].output.clone().unwrap_or(Value::Null);
        }
        let scheduled_at = self.now + to_chrono(delay);
        let t = &a.timeouts;
        TaskMessage {
            task_id: active.task_id.clone(),
            saga_id: self.state.id.clone(),
            saga: self.state.saga.clone(),
            step: self.def.steps[i].name.clone(),
            activity,
            kind: active.kind,
            attempt: active.attempt,
            max_attempts: policy.max_attempts,
            idempotency_key: self.idempotency_key(i, active.kind),
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
        }
    }

    fn schedule_to_close(&self, active: &ActiveTask) -> Option<DateTime<Utc>> {
        let a = self.activity(active.step)?;
        a.timeouts
            .schedule_to_close
            .map(|d| active.first_scheduled_at + to_chrono(d))
    }

    fn policy(&self, active: &ActiveTask) -> &'a RetryPolicy {
        let a = self
            .activity(active.step)
            .expect("active task on an activity step");
        match active.kind {
            TaskKind::Action => &a.retry,
            TaskKind::Compensation => &a.compensate_retry,
        }
    }

    /// The active attempt, if `task_id`/`attempt` name it (anything else is a
    /// duplicate or stale message: a later attempt or chain is in charge).
    fn current(&self, task_id: &str, attempt: Option<u32>) -> Option<ActiveTask> {
        let active = self.state.active.as_ref()?;
        let current = active.task_id == task_id
            && attempt.is_none_or(|a| a == active.attempt)
            && active.dispatch_at.is_none();
        current.then(|| active.clone())
    }

    fn on_result(&mut self, task_id: &str, attempt: Option<u32>, result: Result<Value, ErrorInfo>) {
        let Some(active) = self.current(task_id, attempt) else {
            return;
        };
        match result {
            Ok(output) => self.on_task_ok(&active, output),
            Err(error) => self.on_task_error(&active, error),
        }
    }

    fn on_task_ok(&mut self, active: &ActiveTask, output: Value) {
        match active.kind {
            TaskKind::Action => {
                let detail = self.finished_detail(active);
                self.complete_step_with(active.step, output, HistoryEvent::StepCompleted, detail)
            }
            TaskKind::Compensation => {
                let i = active.step;
                self.state.steps[i].status = StepStatus::Compensated;
                self.state.active = None;
                let attempt = self.state.steps[i].comp_attempts;
                let mut detail = self.finished_detail(active);
                detail["output"] = output;
                self.record(
                    HistoryEvent::CompensationCompleted,
                    Some(i),
                    Some(attempt),
                    detail,
                );
                self.continue_compensation(i.checked_sub(1));
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
            Some(active.step),
            Some(active.attempt),
            json!({ "error": error, "activity": active.activity }),
        );
        self.after_failure(active, error);
    }

    /// Retries the failed attempt or gives the step (or compensation) up.
    fn after_failure(&mut self, active: &ActiveTask, error: ErrorInfo) {
        let stop_retrying = self.state.cancel_requested && active.kind == TaskKind::Action;
        let decision = if stop_retrying {
            RetryDecision::GiveUp(retry::GiveUpReason::NotRetryable)
        } else {
            let deadline = self.schedule_to_close(active);
            retry::decide(
                self.policy(active),
                active.attempt,
                &error,
                self.now,
                deadline,
            )
        };
        match decision {
            RetryDecision::Retry { attempt, delay } => self.retry(active, attempt, delay),
            RetryDecision::GiveUp(reason) => {
                let reason = if stop_retrying {
                    "cancelled"
                } else {
                    reason.as_str()
                };
                match active.kind {
                    TaskKind::Action => self.fail_step(active.step, error, reason),
                    TaskKind::Compensation => self.fail_compensation(active.step, error, reason),
                }
            }
        }
    }

    fn retry(&mut self, active: &ActiveTask, attempt: u32, delay: Duration) {
        let i = active.step;
        match active.kind {
            TaskKind::Action => self.state.steps[i].attempts = attempt,
            TaskKind::Compensation => self.state.steps[i].comp_attempts = attempt,
        }
        if let Some(a) = self.state.active.as_mut() {
            a.attempt = attempt;
        }
        self.record(
            HistoryEvent::RetryScheduled,
            Some(i),
            Some(attempt),
            json!({ "delay_ms": delay.as_millis() as u64, "kind": active.kind, "activity": active.activity }),
        );
        self.dispatch(delay);
    }
}

fn to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

mod compensation;
mod events;
mod operator;
mod timeouts;
pub use operator::{operate, IssuedFor, OperatorAction};
pub use timeouts::NO_ANSWER_ALLOWANCE;

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
