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

use crate::messages::{ErrorInfo, ParentLink, ResultMessage, SagaEvent, StartEvent, TaskMessage};
use crate::saga::definition::{Definition, StepKind};
pub use crate::saga::history::{HistoryEntry, HistoryEvent};
use crate::saga::state::{SagaState, SagaStatus, StepState};
use units::Unit;

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
    /// The parent of this completed child saga compensates: undo the completed steps
    /// and answer `parent` (the parent's compensation chain) when done.
    Undo { parent: ParentLink },
    /// The coordinator's answer to [`Need::ElementOutputs`]: the outputs of every
    /// element of `for_each` step `step`, in element order.
    ElementOutputs { step: usize, outputs: Vec<Value> },
    /// The coordinator's answer to [`Need::ElementsToUndo`]: completed, not yet undone
    /// elements of `for_each` step `step`, latest-completed first.
    ElementsToUndo {
        step: usize,
        elements: Vec<CompletedElement>,
    },
}

/// An effect the coordinator performs after committing the decision.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Publish a task attempt, after `delay` (zero: now).
    Dispatch { task: TaskMessage, delay: Duration },
    /// Announce a terminal status on the events exchange.
    Publish(SagaEvent),
    /// Start a child saga (through the start exchange, so the child is created like
    /// any saga: idempotently by id, by whichever coordinator takes it).
    StartChild(StartEvent),
    /// Ask a running child saga to stop and undo itself (a cancel request).
    CancelChild { saga_id: String, reason: String },
    /// Ask a completed child saga to undo its completed steps.
    UndoChild { saga_id: String, parent: ParentLink },
    /// Answer the parent's task chain with this child saga's outcome.
    Reply(ResultMessage),
}

/// The machine's answer to one event.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub state: SagaState,
    pub commands: Vec<Command>,
    pub history: Vec<HistoryEntry>,
    /// The state changed without history (a heartbeat moved a deadline).
    pub touched: bool,
    /// Element rows to write in the same transaction as the state.
    pub elements: Vec<ElementWrite>,
    /// Stored element rows the machine must see to go on: the coordinator reads them
    /// (after writing `elements`) and applies the matching event in the same
    /// transaction, before anything else happens to the saga.
    pub need: Option<Need>,
}

impl Decision {
    /// True when the event was a duplicate or stale and nothing must be written.
    pub fn is_noop(&self) -> bool {
        !self.touched
            && self.history.is_empty()
            && self.commands.is_empty()
            && self.elements.is_empty()
            && self.need.is_none()
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
    start_child(def, id, input, run_at, None, now)
}

/// Creates a saga that answers `parent` when it ends (a child saga), or a plain one.
pub fn start_child(
    def: &Definition,
    id: &str,
    input: Value,
    run_at: Option<DateTime<Utc>>,
    parent: Option<ParentLink>,
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
        tasks: Vec::new(),
        completions: 0,
        run_at: None,
        error: None,
        signals: Default::default(),
        cancel_requested: false,
        generation: 0,
        parent,
        undoing: false,
        // Set by the coordinator, which reads it off the start message.
        traceparent: None,
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
    if let Event::Undo { parent } = &event {
        run.on_undo(parent);
    } else if !run.state.status.is_terminal() {
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
            Event::ElementOutputs { step, outputs } => run.on_element_outputs(step, outputs),
            Event::ElementsToUndo { step, elements } => run.on_elements_to_undo(step, elements),
            Event::Undo { .. } => {}
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
    elements: Vec<ElementWrite>,
    need: Option<Need>,
}

impl<'a> Run<'a> {
    fn new(def: &'a Definition, mut state: SagaState, now: DateTime<Utc>) -> Self {
        // States written before parallel steps existed have no branch records.
        for (st, step) in state.steps.iter_mut().zip(&def.steps) {
            if let StepKind::Parallel(branches) = &step.kind {
                if st.branches.len() != branches.len() {
                    st.branches = branches.iter().map(|_| StepState::pending()).collect();
                }
            }
        }
        Run {
            def,
            state,
            now,
            commands: Vec::new(),
            history: Vec::new(),
            touched: false,
            elements: Vec::new(),
            need: None,
        }
    }

    fn finish(self) -> Decision {
        Decision {
            state: self.state,
            commands: self.commands,
            history: self.history,
            touched: self.touched,
            elements: self.elements,
            need: self.need,
        }
    }

    /// Appends a history entry about `unit` (if any). A branch's entries name the
    /// branch and carry the parallel step it belongs to as `detail.in`.
    fn record(
        &mut self,
        event: HistoryEvent,
        unit: Option<Unit>,
        attempt: Option<u32>,
        mut detail: Value,
    ) {
        let step = unit.map(|u| self.unit_label(u));
        if let (Some(u), Value::Object(map)) = (unit, &mut detail) {
            if u.branch.is_some() || u.element.is_some() {
                let group = self.def.steps[u.step].name.clone();
                map.insert("in".into(), Value::String(group));
            }
            if let Some(i) = u.element {
                map.insert("index".into(), Value::from(i));
            }
        }
        self.history.push(HistoryEntry {
            at: self.now,
            event,
            step,
            attempt,
            detail,
        });
    }
}

fn to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

mod children;
mod compensation;
mod events;
mod fan_out;
mod forward;
mod operator;
mod tasks;
mod timeouts;
mod units;
pub use fan_out::{CompletedElement, ElementWrite, Need};
pub use operator::{operate, IssuedFor, OperatorAction};
pub use timeouts::NO_ANSWER_ALLOWANCE;

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "machine/flow_tests.rs"]
mod flow_tests;

#[cfg(test)]
#[path = "machine/fan_out_tests.rs"]
mod fan_out_tests;

#[cfg(test)]
mod table_tests;
