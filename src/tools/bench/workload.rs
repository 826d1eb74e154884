//! What each benchmark saga does (`--workload`): its definition, how the demo
//! worker answers its tasks, and the status it must end with. Pure: the definition
//! text and the simulation through the machine are unit-tested without I/O, and the
//! simulation is what `--preload` copies, so preloaded sagas are exactly what the
//! machine writes for a real run.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::messages::{ErrorInfo, TaskMessage};
use crate::saga::definition::Definition;
use crate::saga::machine::{self, Command, Event, HistoryEntry};
use crate::saga::state::{SagaState, SagaStatus};
use crate::tools::demo::{bench_failure, FAIL_ACTIVITY, NOOP_ACTIVITY, UNDO_ACTIVITY};

/// The kinds of saga the benchmark runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Workload {
    /// K no-op steps; every saga completes.
    Happy,
    /// Two no-op steps with no-op compensations, then a step that fails every
    /// attempt (3 attempts, 100 ms then 200 ms apart): every saga retries, gives up
    /// and compensates both earlier steps.
    Compensate,
}

/// Steps of the compensate workload: the two compensable ones and the failing one.
pub const COMPENSATE_STEPS: usize = 3;

/// Attempts of the failing step (`max_attempts`).
const FAIL_ATTEMPTS: usize = 3;

impl Workload {
    /// The name of its definition (one definition per workload and step count).
    pub fn saga(self, steps: usize) -> String {
        match self {
            Workload::Happy => format!("bench_{steps}"),
            Workload::Compensate => "bench_compensate".into(),
        }
    }

    /// Why `steps` does not fit this workload, if it does not.
    pub fn check_steps(self, steps: usize) -> Result<(), String> {
        match self {
            Workload::Happy if steps == 0 => Err("--steps must be at least 1".into()),
            Workload::Compensate if steps != COMPENSATE_STEPS => Err(format!(
                "--workload compensate has {COMPENSATE_STEPS} steps (two compensable, then one \
                 that fails); --steps {steps} does not fit it"
            )),
            _ => Ok(()),
        }
    }

    /// The definition file (TOML, docs/definitions.md).
    pub fn definition(self, steps: usize) -> String {
        let mut s = format!(
            "name = \"{}\"\nversion = 1\n\n[defaults]\nstart_to_close = \"30s\"\n",
            self.saga(steps)
        );
        match self {
            Workload::Happy => {
                for i in 0..steps {
                    s.push_str(&step(i, NOOP_ACTIVITY, ""));
                }
            }
            Workload::Compensate => {
                let undo = format!("compensate = \"{UNDO_ACTIVITY}\"\n");
                s.push_str(&step(0, NOOP_ACTIVITY, &undo));
                s.push_str(&step(1, NOOP_ACTIVITY, &undo));
                let retry = format!(
                    "retry = {{ initial_interval = \"100ms\", backoff_coefficient = 2.0, \
                     max_attempts = {FAIL_ATTEMPTS} }}\n"
                );
                s.push_str(&step(2, FAIL_ACTIVITY, &retry));
            }
        }
        s
    }

    /// Tasks the worker runs per saga (attempts of actions and compensations).
    pub fn tasks_per_saga(self, steps: usize) -> usize {
        match self {
            Workload::Happy => steps,
            Workload::Compensate => 2 + FAIL_ATTEMPTS + 2,
        }
    }

    /// The status every saga of this workload must end with.
    pub fn expected_status(self) -> SagaStatus {
        match self {
            Workload::Happy => SagaStatus::Completed,
            Workload::Compensate => SagaStatus::Compensated,
        }
    }
}

fn step(i: usize, activity: &str, extra: &str) -> String {
    format!("\n[[steps]]\nname = \"s{i}\"\nactivity = \"{activity}\"\n{extra}")
}

/// What the demo worker answers to `task` (see `tools::demo::activities`).
pub fn answer(task: &TaskMessage) -> Result<Value, ErrorInfo> {
    if task.activity == FAIL_ACTIVITY {
        Err(bench_failure(task.attempt).into_info())
    } else {
        Ok(Value::Null)
    }
}

/// One saga run through the machine alone, as the coordinator would with the demo
/// worker answering.
#[derive(Debug, Clone)]
pub struct Simulated {
    /// The terminal state.
    pub state: SagaState,
    /// Every history entry, in order.
    pub history: Vec<HistoryEntry>,
    /// The tasks the worker answered, in order, with the answer.
    pub tasks: Vec<(TaskMessage, Result<Value, ErrorInfo>)>,
}

/// How long each hop (broker, worker, coordinator batch) takes in the simulation, so
/// history timestamps and durations look like a quick real run.
const HOP: chrono::Duration = chrono::Duration::milliseconds(2);

/// At most this many tasks before the simulation gives up (a workload that never ends
/// is a bug here, not a reason to loop for ever).
const MAX_TASKS: usize = 1000;

/// Runs saga `id` of `def` from its start at `now` until it ends, answering every task
/// with [`answer`] one hop (plus its retry delay) after it was dispatched.
pub fn simulate(def: &Definition, id: &str, now: DateTime<Utc>) -> Result<Simulated, String> {
    let mut d = machine::start(def, id, json!({}), None, now);
    let mut now = now;
    let mut history = std::mem::take(&mut d.history);
    let mut tasks = Vec::new();
    while !d.state.status.is_terminal() {
        let (task, delay) = dispatched(&d.commands)
            .ok_or_else(|| format!("saga {id} is {} with no task out", d.state.status))?;
        if tasks.len() == MAX_TASKS {
            return Err(format!("saga {id} did not end within {MAX_TASKS} tasks"));
        }
        now += chrono::Duration::from_std(delay).map_err(|e| e.to_string())? + HOP;
        let result = answer(&task);
        let event = Event::Result {
            task_id: task.task_id.clone(),
            attempt: Some(task.attempt),
            result: result.clone(),
        };
        tasks.push((task, result));
        d = machine::apply(def, d.state, event, now);
        history.append(&mut d.history);
    }
    Ok(Simulated {
        state: d.state,
        history,
        tasks,
    })
}

/// The one task a decision dispatches (steps run one at a time), with its delay.
fn dispatched(commands: &[Command]) -> Option<(TaskMessage, std::time::Duration)> {
    commands.iter().find_map(|c| match c {
        Command::Dispatch { task, delay } => Some((task.clone(), *delay)),
        _ => None,
    })
}

#[cfg(test)]
#[path = "workload_tests.rs"]
mod tests;
