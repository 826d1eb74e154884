//! Saga definitions: the validated model, its TOML loader and the catalog of loaded versions.
//!
//! A definition reaches the rest of sagaflow only through [`parse`], [`Definition::validate`]
//! or [`Catalog`], so every consumer can rely on the invariants checked here (names usable as
//! AMQP words, positive timeouts, attempts >= 1, parseable cron, ...). The TOML path and the
//! code path share one set of semantic checks; the TOML path additionally remembers *where*
//! each resolved value was written, so an error points at the line the operator has to fix
//! (`defaults.retry.max_attempts`, not the step that merely inherited it).
//!
//! Loading works in three stages:
//! 1. serde into private `Raw*` structs (unknown fields refused, paths via `serde_path_to_error`);
//! 2. resolution: shape rules (exactly one step kind, keys valid for that kind) and merging of
//!    step > `[defaults]` > built-in values, recording the source path of each value;
//! 3. semantic checks on the resolved [`Definition`], shared with [`Definition::validate`].

mod catalog;
mod cron_expr;
mod durations;
mod raw;
mod resolve;
mod schedules;
mod validate;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

pub use catalog::Catalog;
pub use cron_expr::normalize_cron;
pub use durations::parse_duration;

pub use crate::saga::path::{Condition, ValuePath};

use raw::deserialize_raw;
use resolve::resolve;
use validate::{check_definition, Problems, Provenance};

/// Longest accepted name (saga, step, schedule, activity, signal). Names become parts of AMQP
/// queue names and routing keys, which are limited to 255 bytes including the namespace prefix.
pub const MAX_NAME_LEN: usize = 128;

/// Longest accepted duration (100 years). Far beyond any sensible timer, yet small enough that
/// adding it to "now" can never overflow a `chrono` timestamp elsewhere in the crate.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 31_557_600);

// ---------------------------------------------------------------------------------------------
// Public model
// ---------------------------------------------------------------------------------------------

/// A validated, fully resolved saga definition (one name, one version).
#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    pub name: String,
    pub version: u32,
    pub description: Option<String>,
    /// How long a saga is kept after it ends (`retention = "30d"`); zero keeps it for
    /// ever; `None` takes `retention.default` from the configuration.
    pub retention: Option<Duration>,
    pub steps: Vec<Step>,
    pub schedules: Vec<ScheduleSpec>,
}

/// One step of a saga, in execution order, or one branch of a parallel step.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Unique within the definition, across steps and branches: task ids and
    /// idempotency keys are built from it.
    pub name: String,
    pub kind: StepKind,
    /// Runs only when this holds at the moment the step is reached; otherwise the
    /// step is skipped (output `null`, never compensated).
    pub when: Option<Condition>,
    /// The values an activity's task carries instead of the saga input and every
    /// earlier output (`input = { order = "input.order_id" }`).
    pub input: Option<BTreeMap<String, ValuePath>>,
    /// Set on an activity step that runs once per element of an array
    /// (`for_each = "input.recipients"`), at most `max_concurrency` at a time.
    pub for_each: Option<ForEach>,
}

/// A fan-out: the step's activity runs once per element of the array at `items`.
#[derive(Debug, Clone, PartialEq)]
pub struct ForEach {
    /// Where the array is: `input.…` or `steps.<earlier step>.…`.
    pub items: ValuePath,
    /// Elements in flight at once (1..=[`MAX_CONCURRENCY`]).
    pub max_concurrency: u32,
}

/// `max_concurrency` when a `for_each` step does not set it.
pub const DEFAULT_CONCURRENCY: u32 = 10;

/// Most elements one `for_each` step may have in flight: every element in flight is
/// a task chain in the saga's stored state, so this bounds that state's size.
pub const MAX_CONCURRENCY: u32 = 1000;

/// Most elements one `for_each` array may have when the step is reached; a longer
/// array fails the step with `bad_input` (split the work into several sagas).
pub const MAX_ELEMENTS: usize = 100_000;

impl Step {
    /// A step that always runs and gets the default task input.
    pub fn new(name: impl Into<String>, kind: StepKind) -> Step {
        Step {
            name: name.into(),
            kind,
            when: None,
            input: None,
            for_each: None,
        }
    }
}

/// What a step does.
// A definition holds a handful of steps, so the size gap between variants costs nothing;
// boxing `ActivityStep` would only make pattern matching clumsier for every consumer.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum StepKind {
    /// Run an activity on a worker, optionally with a compensation.
    Activity(ActivityStep),
    /// Durable timer.
    Sleep(Duration),
    /// Durable timer until an instant read from the saga input or an earlier step's
    /// output: a dotted path such as `input.send_at` or `steps.render.send_at` naming an
    /// RFC 3339 string.
    SleepUntil(String),
    /// Wait for a named signal.
    Wait(WaitStep),
    /// A child saga: the newest loaded version of the named definition, started with
    /// this saga's input; the step completes with the child's output.
    Saga(String),
    /// Branches that run at the same time; the step completes when every branch has
    /// completed, with an object of their outputs keyed by branch name. A branch is
    /// one step of any kind but `Parallel`.
    Parallel(Vec<Step>),
}

impl StepKind {
    /// Whether this kind runs by itself (everything but a parallel group, whose
    /// branches are what runs and what is compensated).
    pub fn is_leaf(&self) -> bool {
        !matches!(self, StepKind::Parallel(_))
    }
}

/// An activity step with its policies already resolved (step over defaults over built-in).
#[derive(Debug, Clone, PartialEq)]
pub struct ActivityStep {
    pub activity: String,
    pub compensate: Option<String>,
    pub retry: RetryPolicy,
    pub compensate_retry: RetryPolicy,
    pub timeouts: Timeouts,
}

/// A step that waits for a signal.
#[derive(Debug, Clone, PartialEq)]
pub struct WaitStep {
    pub signal: String,
    pub timeout: Option<Duration>,
    pub on_timeout: OnTimeout,
}

/// What happens when a wait step times out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnTimeout {
    /// The step fails, which compensates the saga.
    Fail,
    /// The saga goes on without the signal.
    Continue,
}

impl OnTimeout {
    /// The spelling used in definition files (`fail` / `continue`).
    pub fn as_str(self) -> &'static str {
        match self {
            OnTimeout::Fail => "fail",
            OnTimeout::Continue => "continue",
        }
    }
}

/// Activity timeouts with Temporal's meaning.
#[derive(Debug, Clone, PartialEq)]
pub struct Timeouts {
    /// How long a task may wait in the queue before a worker starts it.
    pub schedule_to_start: Option<Duration>,
    /// How long one attempt may run.
    pub start_to_close: Duration,
    /// How long all attempts together may take.
    pub schedule_to_close: Option<Duration>,
    /// How long a running attempt may go without heartbeating.
    pub heartbeat: Option<Duration>,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            schedule_to_start: None,
            start_to_close: Duration::from_secs(60),
            schedule_to_close: None,
            heartbeat: None,
        }
    }
}

/// Retry policy for one activity (action or compensation).
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Delay before the second attempt.
    pub initial_interval: Duration,
    /// Factor applied to the delay after every attempt (>= 1.0).
    pub backoff_coefficient: f64,
    /// Upper bound for the delay between attempts.
    pub max_interval: Duration,
    /// Total attempts including the first one (>= 1).
    pub max_attempts: u32,
    /// Error codes that are never retried.
    pub non_retryable: Vec<String>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_interval: Duration::from_secs(1),
            backoff_coefficient: 2.0,
            max_interval: Duration::from_secs(100),
            max_attempts: 5,
            non_retryable: Vec::new(),
        }
    }
}

/// A cron schedule that starts sagas of its definition.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleSpec {
    pub name: String,
    /// Normalised to the 6/7-field form (seconds first, optional year) that the `cron` crate
    /// parses; see [`normalize_cron`].
    pub cron: String,
    pub timezone: chrono_tz::Tz,
    /// Saga input for every tick; always a JSON object.
    pub input: serde_json::Value,
    pub overlap: OverlapPolicy,
    /// How far in the past a missed tick may lie and still be started (e.g. after downtime).
    pub catch_up_window: Duration,
}

/// What a schedule does when a tick arrives while the previous run is still going.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverlapPolicy {
    Skip,
    BufferOne,
    AllowAll,
}

impl OverlapPolicy {
    /// The spelling used in definition files (`skip` / `buffer_one` / `allow_all`).
    pub fn as_str(self) -> &'static str {
        match self {
            OverlapPolicy::Skip => "skip",
            OverlapPolicy::BufferOne => "buffer_one",
            OverlapPolicy::AllowAll => "allow_all",
        }
    }
}

/// Why a definition was refused: the file, the field path and the reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}: {field}: {reason}")]
pub struct DefinitionError {
    pub file: String,
    pub field: String,
    pub reason: String,
}

impl Definition {
    /// Index of the step with this name.
    pub fn step_index(&self, name: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.name == name)
    }

    /// Every activity name the definition uses (actions and compensations), sorted,
    /// deduplicated. Workers and the coordinator declare one task queue per entry.
    /// The definitions this one starts as child sagas (steps and branches).
    pub fn children(&self) -> BTreeSet<&str> {
        self.units()
            .into_iter()
            .filter_map(|(_, s)| match &s.kind {
                StepKind::Saga(name) => Some(name.as_str()),
                _ => None,
            })
            .collect()
    }

    pub fn activities(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for (_, step) in self.units() {
            if let StepKind::Activity(a) = &step.kind {
                out.insert(a.activity.clone());
                if let Some(c) = &a.compensate {
                    out.insert(c.clone());
                }
            }
        }
        out
    }

    /// Every step and every branch of a parallel step, in definition order, each with
    /// the field path errors name it by (`steps[1]`, `steps[1].parallel[0]`).
    pub fn units(&self) -> Vec<(String, &Step)> {
        let mut out = Vec::new();
        for (i, step) in self.steps.iter().enumerate() {
            let at = format!("steps[{i}]");
            if let StepKind::Parallel(branches) = &step.kind {
                for (b, branch) in branches.iter().enumerate() {
                    out.push((format!("{at}.parallel[{b}]"), branch));
                }
            }
            out.push((at, step));
        }
        out
    }

    /// Runs every semantic validation rule on a definition built in code (the TOML path calls
    /// this too). `origin` is what errors name as the file (e.g. "sagas/order.toml" or
    /// "`<code>`"). Returns the first problem; see [`Definition::validation_errors`] for all.
    pub fn validate(&self, origin: &str) -> Result<(), DefinitionError> {
        match self.validation_errors(origin).into_iter().next() {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    /// Every problem [`Definition::validate`] would report, in definition order.
    pub fn validation_errors(&self, origin: &str) -> Vec<DefinitionError> {
        let mut out = Problems::new(origin);
        check_definition(self, &Provenance::for_code(self), &mut out);
        out.into_vec()
    }
}

// ---------------------------------------------------------------------------------------------
// Entry points
// ---------------------------------------------------------------------------------------------

/// Parse and validate one definition file's text. `file` is used in errors. Returns the first
/// problem; [`parse_all`] returns every one.
pub fn parse(file: &str, text: &str) -> Result<Definition, DefinitionError> {
    parse_all(file, text).map_err(|errs| {
        // parse_all never returns an empty list; the fallback only avoids a panic path.
        errs.into_iter().next().unwrap_or_else(|| DefinitionError {
            file: file.to_string(),
            field: "<toml>".to_string(),
            reason: "refused".to_string(),
        })
    })
}

/// Like [`parse`], but reports every problem found (never an empty list on error). A TOML or
/// serde error stops at that error, since nothing after it can be trusted.
pub fn parse_all(file: &str, text: &str) -> Result<Definition, Vec<DefinitionError>> {
    let raw = deserialize_raw(file, text).map_err(|e| vec![e])?;
    let mut shape = Problems::new(file);
    let (def, prov) = resolve(raw, &mut shape);
    let mut semantic = Problems::new(file);
    check_definition(&def, &prov, &mut semantic);
    // A field already refused while resolving holds a placeholder; checking it again would
    // only add noise ("name: must not be empty" after "name: is required").
    let reported = shape.fields();
    for err in semantic.into_vec() {
        if !reported.contains(&err.field) {
            shape.push(err.field, err.reason);
        }
    }
    let errors = shape.into_vec();
    if errors.is_empty() {
        Ok(def)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests;
