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
use crate::saga::definition::{ActivityStep, Definition, OnTimeout, RetryPolicy, StepKind};
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

/// One line of the saga's audit trail.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    pub at: DateTime<Utc>,
    pub event: &'static str,
    pub step: Option<String>,
    pub attempt: Option<u32>,
    pub detail: Value,
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
    };
    let mut run = Run::new(def, state, now);
    match run_at.filter(|at| *at > now) {
        Some(at) => {
            run.state.status = SagaStatus::Scheduled;
            run.state.run_at = Some(at);
            run.record("saga_scheduled", None, None, json!({ "run_at": at }));
        }
        None => {
            run.record(
                "saga_started",
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

/// The four activity timeouts, in the order they are checked when several are due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timeout {
    ScheduleToClose,
    ScheduleToStart,
    StartToClose,
    Heartbeat,
}

impl Timeout {
    fn as_str(self) -> &'static str {
        match self {
            Timeout::ScheduleToClose => "schedule_to_close",
            Timeout::ScheduleToStart => "schedule_to_start",
            Timeout::StartToClose => "start_to_close",
            Timeout::Heartbeat => "heartbeat",
        }
    }
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
        event: &'static str,
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
                    "step_started",
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
                self.record("wait_started", Some(i), None, json!({ "signal": w.signal }));
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
        self.record("sleep_started", Some(i), None, json!({ "until": until }));
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

    fn complete_step(&mut self, i: usize, output: Value, event: &'static str) {
        self.complete_step_with(i, output, event, json!({}));
    }

    /// Completes step `i`, recording `detail` (activity steps: activity and duration).
    fn complete_step_with(&mut self, i: usize, output: Value, event: &'static str, detail: Value) {
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
            "step_failed",
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

    fn idempotency_key(&self, i: usize, kind: TaskKind) -> String {
        format!(
            "{}:{}:{}",
            self.state.id,
            self.def.steps[i].name,
            kind.as_str()
        )
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

    /// The deadlines of the active attempt that apply now. Schedule-to-close holds from
    /// the first attempt; the others need the attempt dispatched, and start-to-close
    /// and heartbeat need the worker's `started` report.
    fn deadlines(&self, a: &ActiveTask) -> Vec<(DateTime<Utc>, Timeout)> {
        let mut out = Vec::new();
        if let Some(d) = self.schedule_to_close(a) {
            out.push((d, Timeout::ScheduleToClose));
        }
        let Some(t) = self.activity(a.step).map(|s| &s.timeouts) else {
            return out;
        };
        if a.dispatch_at.is_some() {
            return out;
        }
        match a.started_at {
            None => {
                if let (Some(sts), Some(at)) = (t.schedule_to_start, a.scheduled_at) {
                    out.push((at + to_chrono(sts), Timeout::ScheduleToStart));
                }
            }
            Some(started) => {
                out.push((started + to_chrono(t.start_to_close), Timeout::StartToClose));
                if let Some(hb) = t.heartbeat {
                    let last = a.heartbeat_at.unwrap_or(started);
                    out.push((last + to_chrono(hb), Timeout::Heartbeat));
                }
            }
        }
        out
    }

    /// Records the earliest deadline of the active attempt, so `wake_at` covers it.
    fn arm_timeouts(&mut self) {
        let Some(a) = self.state.active.clone() else {
            return;
        };
        let at = self.deadlines(&a).into_iter().map(|(d, _)| d).min();
        if let Some(active) = self.state.active.as_mut() {
            active.timeout_at = at;
        }
    }

    /// The first timeout of the active attempt that has passed, if any.
    fn due_timeout(&self, a: &ActiveTask) -> Option<Timeout> {
        let mut due: Vec<(DateTime<Utc>, Timeout)> = self
            .deadlines(a)
            .into_iter()
            .filter(|(d, _)| *d <= self.now)
            .collect();
        due.sort_by_key(|(_, kind)| *kind as u8);
        due.first().map(|(_, kind)| *kind)
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
                self.complete_step_with(active.step, output, "step_completed", detail)
            }
            TaskKind::Compensation => {
                let i = active.step;
                self.state.steps[i].status = StepStatus::Compensated;
                self.state.active = None;
                let attempt = self.state.steps[i].comp_attempts;
                let mut detail = self.finished_detail(active);
                detail["output"] = output;
                self.record("compensation_completed", Some(i), Some(attempt), detail);
                self.continue_compensation(i.checked_sub(1));
            }
        }
    }

    fn on_task_error(&mut self, active: &ActiveTask, error: ErrorInfo) {
        let event = match active.kind {
            TaskKind::Action => "attempt_failed",
            TaskKind::Compensation => "compensation_attempt_failed",
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
            "retry_scheduled",
            Some(i),
            Some(attempt),
            json!({ "delay_ms": delay.as_millis() as u64, "kind": active.kind, "activity": active.activity }),
        );
        self.dispatch(delay);
    }

    // ----- compensation ----------------------------------------------------------

    fn begin_compensation(&mut self, from: Option<usize>, why: &str) {
        self.state.status = SagaStatus::Compensating;
        self.record("saga_compensating", None, None, json!({ "reason": why }));
        self.continue_compensation(from);
    }

    /// Undoes completed steps from `from` down to the first, one at a time.
    fn continue_compensation(&mut self, from: Option<usize>) {
        let mut next = from;
        while let Some(k) = next {
            if self.state.steps[k].status == StepStatus::Completed {
                if let Some(a) = self.activity(k) {
                    if a.compensate.is_some() {
                        self.state.cursor = k;
                        self.state.steps[k].status = StepStatus::Compensating;
                        self.state.steps[k].comp_attempts = 1;
                        self.record(
                            "compensation_started",
                            Some(k),
                            Some(1),
                            json!({ "activity": a.compensate }),
                        );
                        return self.begin_task(k, TaskKind::Compensation);
                    }
                    self.state.steps[k].status = StepStatus::NotCompensable;
                    self.record("step_not_compensable", Some(k), None, json!({}));
                }
            }
            next = k.checked_sub(1);
        }
        self.end_compensation();
    }

    fn end_compensation(&mut self) {
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

    fn fail_compensation(&mut self, i: usize, error: ErrorInfo, reason: &str) {
        self.state.steps[i].status = StepStatus::CompensationFailed;
        self.state.active = None;
        self.record(
            "compensation_failed",
            Some(i),
            None,
            json!({ "reason": reason, "error": error }),
        );
        self.state.error = Some(error);
        self.finish_saga(SagaStatus::Failed);
    }

    fn finish_saga(&mut self, status: SagaStatus) {
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

    // ----- time, signals, cancel -------------------------------------------------

    fn on_wake(&mut self) {
        let now = self.now;
        if self.state.status == SagaStatus::Scheduled {
            if self.state.run_at.is_some_and(|at| at <= now) {
                self.state.status = SagaStatus::Running;
                self.state.run_at = None;
                self.record(
                    "saga_started",
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
        }
        let i = self.state.cursor;
        let Some(st) = self.state.steps.get(i) else {
            return;
        };
        if st.until.is_none_or(|u| u > now) {
            return;
        }
        match st.status {
            StepStatus::Sleeping => self.complete_step(i, Value::Null, "sleep_completed"),
            StepStatus::Waiting => self.wait_timed_out(i),
            _ => {}
        }
    }

    /// An activity timeout fired: the attempt failed (schedule-to-close: the step).
    fn on_timeout(&mut self, active: &ActiveTask, kind: Timeout) {
        let error = ErrorInfo {
            code: format!("timeout.{}", kind.as_str()),
            message: format!("{} timeout of attempt {}", kind.as_str(), active.attempt),
            retryable: kind != Timeout::ScheduleToClose,
        };
        self.record(
            "attempt_timed_out",
            Some(active.step),
            Some(active.attempt),
            json!({ "timeout": kind.as_str(), "kind": active.kind, "activity": active.activity }),
        );
        if kind == Timeout::ScheduleToClose {
            return match active.kind {
                TaskKind::Action => self.fail_step(active.step, error, "schedule_to_close"),
                TaskKind::Compensation => {
                    self.fail_compensation(active.step, error, "schedule_to_close")
                }
            };
        }
        self.after_failure(active, error);
    }

    /// A `started` report or a heartbeat of the active attempt: moves its deadlines.
    fn on_progress(
        &mut self,
        task_id: &str,
        attempt: Option<u32>,
        details: Option<Value>,
        started: bool,
    ) {
        let Some(active) = self.current(task_id, attempt) else {
            return;
        };
        let now = self.now;
        if let Some(a) = self.state.active.as_mut() {
            if started && a.started_at.is_some() {
                return; // a redelivered report
            }
            a.started_at.get_or_insert(now);
            if !started {
                a.heartbeat_at = Some(now);
                if details.is_some() {
                    a.heartbeat_details = details;
                }
            }
        }
        if started {
            self.record(
                "attempt_started",
                Some(active.step),
                Some(active.attempt),
                json!({}),
            );
        }
        self.touched = true;
        self.arm_timeouts();
    }

    fn wait_timed_out(&mut self, i: usize) {
        let StepKind::Wait(w) = &self.def.steps[i].kind else {
            return;
        };
        match w.on_timeout {
            OnTimeout::Continue => self.complete_step(i, Value::Null, "wait_timed_out"),
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

    fn on_signal(&mut self, name: String, payload: Value) {
        let i = self.state.cursor;
        let waiting_for_it = self.state.status == SagaStatus::Running
            && self
                .state
                .steps
                .get(i)
                .is_some_and(|s| s.status == StepStatus::Waiting)
            && matches!(&self.def.steps[i].kind, StepKind::Wait(w) if w.signal == name);
        if waiting_for_it {
            self.record("signal_received", Some(i), None, json!({ "signal": name }));
            return self.complete_wait(i, payload);
        }
        self.record("signal_buffered", None, None, json!({ "signal": name }));
        self.state.signals.entry(name).or_default().push(payload);
    }

    fn take_buffered_signal(&mut self, name: &str) -> Option<Value> {
        let queue = self.state.signals.get_mut(name)?;
        let payload = (!queue.is_empty()).then(|| queue.remove(0));
        if queue.is_empty() {
            self.state.signals.remove(name);
        }
        payload
    }

    fn complete_wait(&mut self, i: usize, payload: Value) {
        self.complete_step(i, payload, "wait_completed");
    }

    fn on_cancel(&mut self, reason: String) {
        // A saga already undoing a failure ends `compensated`, not `cancelled`.
        if self.state.cancel_requested || self.state.status == SagaStatus::Compensating {
            return;
        }
        self.state.cancel_requested = true;
        self.record("cancel_requested", None, None, json!({ "reason": reason }));
        match self.state.status {
            SagaStatus::Scheduled => {
                self.state.run_at = None;
                self.finish_saga(SagaStatus::Cancelled)
            }
            _ => self.cancel_running(),
        }
    }

    fn cancel_running(&mut self) {
        let i = self.state.cursor;
        match self.state.steps.get(i).map(|s| s.status) {
            // An action is in flight: its effect may land, so wait for its answer.
            Some(StepStatus::Running)
                if self
                    .state
                    .active
                    .as_ref()
                    .is_some_and(|a| a.dispatch_at.is_none()) => {}
            _ => {
                if let Some(st) = self.state.steps.get_mut(i) {
                    if matches!(
                        st.status,
                        StepStatus::Running | StepStatus::Sleeping | StepStatus::Waiting
                    ) {
                        st.status = StepStatus::Pending;
                        st.until = None;
                    }
                }
                self.state.active = None;
                self.begin_compensation(i.checked_sub(1), "cancelled");
            }
        }
    }
}

fn terminal_event(status: SagaStatus) -> &'static str {
    match status {
        SagaStatus::Completed => "saga_completed",
        SagaStatus::Compensated => "saga_compensated",
        SagaStatus::Failed => "saga_failed",
        SagaStatus::Cancelled => "saga_cancelled",
        _ => "saga_status",
    }
}

fn to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

mod operator;
pub use operator::{operate, OperatorAction};

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
