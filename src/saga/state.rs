//! The persisted state of one saga: what the machine reads and writes.
//!
//! Stored as JSONB in the `sagas` row; `status` and `wake_at` are also columns so
//! Postgres can filter and index them.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::messages::{ErrorInfo, ParentLink, TaskKind};

/// Where a saga is in its life. Terminal statuses never change again.
///
/// Who moves a saga out of each status: `scheduled` → the coordinator's wake-up scan
/// when the start time is due; `running`/`compensating` → task results, wake-ups
/// (sleeps, waits, long retry delays), signals and cancel requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SagaStatus {
    /// Created by a delayed start; runs at `run_at`.
    Scheduled,
    Running,
    Compensating,
    /// Every step completed.
    Completed,
    /// A step failed for good and every completed step was undone.
    Compensated,
    /// A compensation failed for good, or a completed step has no compensation:
    /// an operator must act.
    Failed,
    /// Cancelled on request; completed steps were undone.
    Cancelled,
}

impl SagaStatus {
    pub const ALL: [SagaStatus; 7] = [
        SagaStatus::Scheduled,
        SagaStatus::Running,
        SagaStatus::Compensating,
        SagaStatus::Completed,
        SagaStatus::Compensated,
        SagaStatus::Failed,
        SagaStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SagaStatus::Scheduled => "scheduled",
            SagaStatus::Running => "running",
            SagaStatus::Compensating => "compensating",
            SagaStatus::Completed => "completed",
            SagaStatus::Compensated => "compensated",
            SagaStatus::Failed => "failed",
            SagaStatus::Cancelled => "cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            SagaStatus::Completed
                | SagaStatus::Compensated
                | SagaStatus::Failed
                | SagaStatus::Cancelled
        )
    }
}

impl fmt::Display for SagaStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SagaStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SagaStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                let all: Vec<_> = SagaStatus::ALL.iter().map(|s| s.as_str()).collect();
                format!("unknown status `{s}`, expected one of {}", all.join(", "))
            })
    }
}

/// Where one step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Pending,
    Running,
    Sleeping,
    Waiting,
    Completed,
    Failed,
    Compensating,
    Compensated,
    CompensationFailed,
    /// Completed, but it names no compensation, so it could not be undone.
    NotCompensable,
    /// Its `when` did not hold when it was reached: it did not run (output `null`)
    /// and is never compensated.
    Skipped,
}

/// One step's record inside the saga state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepState {
    pub status: StepStatus,
    /// Attempts of the action so far.
    #[serde(default)]
    pub attempts: u32,
    /// Attempts of the compensation so far.
    #[serde(default)]
    pub comp_attempts: u32,
    /// Action task chains opened for this step; numbers task ids (`…#1`).
    #[serde(default)]
    pub action_chains: u32,
    /// Compensation task chains opened for this step.
    #[serde(default)]
    pub comp_chains: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    /// When a sleep ends or a wait times out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
    /// Position in the saga's completion order ([`SagaState::completions`]):
    /// compensation undoes the latest-completed first, across steps and branches.
    /// Absent in states written before parallel steps existed; they compensate in
    /// reverse step order, which was their completion order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_seq: Option<u32>,
    /// A parallel step's branches, in definition order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub branches: Vec<StepState>,
    /// A `for_each` step's progress. Finished elements live in rows of their own
    /// (`saga_elements`), so an answer never rewrites all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fan_out: Option<FanOut>,
    /// A `for_each` step's elements that are in flight (running or being undone) or
    /// whose compensation failed, by index: at most `max_concurrency` (plus failed
    /// compensations), whatever the array's length.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub elements: BTreeMap<u32, StepState>,
}

/// Counters of a `for_each` step: what the API shows and what tells the machine when
/// the step is done. Each element is counted once per state it reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FanOut {
    /// Elements of the array when the step was reached.
    pub total: u32,
    /// Elements started so far: the next one to start has this index.
    pub started: u32,
    pub completed: u32,
    pub failed: u32,
    pub compensated: u32,
    /// The saga's generation when the step ran: its element rows are keyed by it, so
    /// a re-run after an operator's `resume_at` starts from no rows.
    #[serde(default)]
    pub generation: u32,
}

impl FanOut {
    pub fn new(total: u32, generation: u32) -> FanOut {
        FanOut {
            total,
            started: 0,
            completed: 0,
            failed: 0,
            compensated: 0,
            generation,
        }
    }
}

impl StepState {
    pub fn pending() -> Self {
        StepState {
            status: StepStatus::Pending,
            attempts: 0,
            comp_attempts: 0,
            action_chains: 0,
            comp_chains: 0,
            output: None,
            error: None,
            until: None,
            completed_seq: None,
            branches: Vec::new(),
            fan_out: None,
            elements: BTreeMap::new(),
        }
    }
}

/// One task chain the saga waits on: a step's (or branch's) action or compensation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveTask {
    pub task_id: String,
    pub step: usize,
    /// The branch of a parallel step this chain runs, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<usize>,
    /// The element of a `for_each` step this chain runs, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub element: Option<u32>,
    /// The child saga this chain waits on (a `saga` step): it answers the chain
    /// itself, so the chain has no activity timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child: Option<String>,
    pub kind: TaskKind,
    /// The activity this chain runs (the step's action or its compensation), so
    /// operator queries can group outstanding work by activity in SQL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity: Option<String>,
    pub attempt: u32,
    /// When attempt 1 was scheduled: the start of schedule-to-close.
    pub first_scheduled_at: DateTime<Utc>,
    /// Set while a retry waits longer than the broker's delay levels allow:
    /// the wake-up scan dispatches the attempt at this instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispatch_at: Option<DateTime<Utc>>,
    /// When the current attempt was scheduled (after its retry delay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_at: Option<DateTime<Utc>>,
    /// When the worker reported the current attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// When the current attempt last heartbeated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_at: Option<DateTime<Utc>>,
    /// The last heartbeat details of this chain, handed to the next attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_details: Option<Value>,
    /// The earliest activity timeout of the current attempt, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_at: Option<DateTime<Utc>>,
}

/// Everything the machine knows about one saga.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaState {
    pub id: String,
    pub saga: String,
    pub version: u32,
    pub status: SagaStatus,
    /// Stored in a column of its own (written once); reads put it back here.
    #[serde(default, skip_serializing_if = "input_left_out")]
    pub input: Value,
    pub steps: Vec<StepState>,
    /// The step being run (running) or undone (compensating).
    pub cursor: usize,
    /// The task chains in flight: at most one outside parallel steps, one per
    /// running branch inside one. States written before parallel steps held a
    /// single `active` chain; it reads as a list of one.
    #[serde(
        default,
        alias = "active",
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub tasks: Vec<ActiveTask>,
    /// Steps and branches completed so far: numbers [`StepState::completed_seq`].
    #[serde(default, skip_serializing_if = "is_zero")]
    pub completions: u32,
    /// When a scheduled saga starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at: Option<DateTime<Utc>>,
    /// Why the saga is compensating or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    /// Signals that arrived before a step waited for them, oldest first.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub signals: BTreeMap<String, Vec<Value>>,
    /// A cancel arrived; compensation starts once the in-flight action answers.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancel_requested: bool,
    /// Bumped by each operator `resume_at`: the steps it re-runs get new idempotency
    /// keys (`<saga>:<step>:<kind>:g<generation>`), so a worker's ledger does not
    /// answer a step that was undone with the output of its first run.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub generation: u32,
    /// Set on a child saga: the parent and the task chain of its step this saga
    /// answers when it ends (or, once the parent asked for it, when its undo ends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentLink>,
    /// A completed child whose parent asked for it to be undone: its end answers the
    /// parent's compensation, `compensated` as success.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub undoing: bool,
    /// The W3C trace context (`traceparent`) of the saga's trace, set by the
    /// coordinator at the start (the start's own, or a new one): every task, result
    /// and child start of the saga carries it, so one saga and its children are one
    /// trace. A plain string here; `crate::traceparent` parses it. `None` in states
    /// written before tracing existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

std::thread_local! {
    /// Set while [`SagaState::to_stored_json`] serialises on this thread.
    static INPUT_LEFT_OUT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn input_left_out(_: &Value) -> bool {
    INPUT_LEFT_OUT.with(std::cell::Cell::get)
}

impl SagaState {
    /// The JSON text stored in `sagas.state`: every field but `input`, which has a
    /// column of its own, written once. Serialised straight to text: building a
    /// `serde_json::Value` first to remove `input` from it, then dropping it, was a
    /// tenth of the coordinator's CPU in a burst (BENCHMARKS.md).
    pub fn to_stored_json(&self) -> String {
        /// Clears the flag however serialisation ends.
        struct Reset;
        impl Drop for Reset {
            fn drop(&mut self) {
                INPUT_LEFT_OUT.with(|f| f.set(false));
            }
        }
        INPUT_LEFT_OUT.with(|f| f.set(true));
        let _reset = Reset;
        // String keys and plain values only: serialising this type cannot fail.
        serde_json::to_string(self).expect("saga state serialises")
    }
}

/// `null`, one task object (the pre-parallel `active` field) or a list of them.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<ActiveTask>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        Many(Vec<ActiveTask>),
        One(Box<ActiveTask>),
    }
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        None => Vec::new(),
        Some(OneOrMany::Many(v)) => v,
        Some(OneOrMany::One(a)) => vec![*a],
    })
}

impl SagaState {
    /// The earliest instant at which a wake-up could change this saga, if any: the
    /// earliest of a delayed start, every sleep or wait of the current step and its
    /// branches, and every task chain's parked retry or timeout. The coordinator
    /// stores it in the indexed `wake_at` column.
    pub fn next_wake(&self) -> Option<DateTime<Utc>> {
        if self.status.is_terminal() {
            return None;
        }
        let current = self.steps.get(self.cursor);
        let units = current
            .into_iter()
            .chain(current.into_iter().flat_map(|s| s.branches.iter()));
        let untils = units.filter_map(|s| match s.status {
            StepStatus::Sleeping | StepStatus::Waiting => s.until,
            _ => None,
        });
        let tasks = self
            .tasks
            .iter()
            .filter_map(|a| a.dispatch_at.or(a.timeout_at));
        let start = self.run_at.filter(|_| self.status == SagaStatus::Scheduled);
        start.into_iter().chain(untils).chain(tasks).min()
    }

    /// What the saga produced: the output of its last step that completed with one
    /// (`None` before any did). What a caller waiting for the outcome gets.
    pub fn output(&self) -> Option<&Value> {
        self.steps
            .iter()
            .rev()
            .filter(|s| s.status == StepStatus::Completed)
            .find_map(|s| s.output.as_ref())
    }

    /// Outputs of the steps before `upto` (exclusive) that completed, by step name.
    pub fn outputs_before(&self, names: &[&str], upto: usize) -> serde_json::Map<String, Value> {
        self.steps
            .iter()
            .zip(names)
            .take(upto)
            .filter_map(|(s, n)| s.output.clone().map(|o| ((*n).to_string(), o)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    fn state() -> super::SagaState {
        let def = crate::saga::definition::parse(
            "t.toml",
            "name = \"t\"\nversion = 1\n[[steps]]\nname = \"a\"\nactivity = \"x\"\n",
        )
        .unwrap();
        let input = json!({"order": 7, "lines": ["a", "b"]});
        crate::saga::machine::start(&def, "s-1", input, None, chrono::Utc::now()).state
    }

    #[test]
    fn the_stored_json_is_the_state_without_its_input_and_reads_back() {
        let s = state();
        let stored: serde_json::Value = serde_json::from_str(&s.to_stored_json()).unwrap();
        let mut full = serde_json::to_value(&s).unwrap();
        assert_eq!(full["input"], json!({"order": 7, "lines": ["a", "b"]}));
        full.as_object_mut().unwrap().remove("input");
        assert_eq!(stored, full, "every other field, as serde writes them");
        let mut back: super::SagaState = serde_json::from_value(stored).unwrap();
        assert_eq!(back.input, serde_json::Value::Null);
        back.input = s.input.clone();
        assert_eq!(back, s);
        assert!(
            serde_json::to_string(&s).unwrap().contains("\"order\":7"),
            "serialising as usual afterwards keeps the input"
        );
    }
}
