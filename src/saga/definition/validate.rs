//! Semantic checks shared by the TOML and code paths, error collection and value provenance
//! (where each resolved value was written, so errors point at the line to fix).

use std::collections::{BTreeMap, HashSet};

use super::cron_expr::check_cron;
use super::durations::human;
use super::*;

/// Collects problems for one file, dropping exact duplicates (a bad `[defaults]` value is
/// inherited by many steps but must be reported once).
pub(super) struct Problems {
    file: String,
    list: Vec<DefinitionError>,
}

impl Problems {
    pub(super) fn new(file: &str) -> Self {
        Problems {
            file: file.to_string(),
            list: Vec::new(),
        }
    }

    pub(super) fn push(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        let err = DefinitionError {
            file: self.file.clone(),
            field: field.into(),
            reason: reason.into(),
        };
        if !self.list.contains(&err) {
            self.list.push(err);
        }
    }

    pub(super) fn fields(&self) -> HashSet<String> {
        self.list.iter().map(|e| e.field.clone()).collect()
    }

    pub(super) fn into_vec(self) -> Vec<DefinitionError> {
        self.list
    }
}

/// Where a resolved value came from: its field path and how specific that place is
/// (0 built-in, 1 `defaults.retry`/`defaults`, 2 `defaults.compensate_retry`, 3 the step).
#[derive(Debug, Clone)]
pub(super) struct Source {
    rank: u8,
    path: String,
}

const RANK_BUILTIN: u8 = 0;
pub(super) const RANK_DEFAULTS: u8 = 1;
pub(super) const RANK_DEFAULTS_COMPENSATE: u8 = 2;
pub(super) const RANK_STEP: u8 = 3;

impl Source {
    pub(super) fn new(rank: u8, path: String) -> Self {
        Source { rank, path }
    }

    pub(super) fn builtin() -> Self {
        Source::new(RANK_BUILTIN, String::new())
    }

    /// How a message names this place when pointing at it from another field.
    fn describe(&self) -> String {
        if self.rank == RANK_BUILTIN {
            "built-in default".to_string()
        } else {
            format!("set at {}", self.path)
        }
    }
}

/// Sources of the five retry keys.
#[derive(Debug, Clone)]
pub(super) struct RetrySources {
    pub(super) initial_interval: Source,
    pub(super) backoff_coefficient: Source,
    pub(super) max_interval: Source,
    pub(super) max_attempts: Source,
    pub(super) non_retryable: Source,
}

impl RetrySources {
    /// Every key written at `prefix` (the code path, where everything is explicit).
    pub(super) fn at(prefix: &str, rank: u8) -> Self {
        let s = |key: &str| Source::new(rank, format!("{prefix}.{key}"));
        RetrySources {
            initial_interval: s("initial_interval"),
            backoff_coefficient: s("backoff_coefficient"),
            max_interval: s("max_interval"),
            max_attempts: s("max_attempts"),
            non_retryable: s("non_retryable"),
        }
    }
}

/// Sources of the four timeout keys.
#[derive(Debug, Clone)]
pub(super) struct TimeoutSources {
    pub(super) schedule_to_start: Source,
    pub(super) start_to_close: Source,
    pub(super) schedule_to_close: Source,
    pub(super) heartbeat: Source,
}

impl TimeoutSources {
    pub(super) fn at(prefix: &str, rank: u8) -> Self {
        let s = |key: &str| Source::new(rank, format!("{prefix}.{key}"));
        TimeoutSources {
            schedule_to_start: s("schedule_to_start"),
            start_to_close: s("start_to_close"),
            schedule_to_close: s("schedule_to_close"),
            heartbeat: s("heartbeat"),
        }
    }
}

/// Sources of one step's resolved policies.
#[derive(Debug, Clone)]
pub(super) struct StepSources {
    pub(super) retry: RetrySources,
    pub(super) compensate_retry: RetrySources,
    pub(super) timeouts: TimeoutSources,
    /// A parallel step's branches, indexed like its `StepKind::Parallel` list.
    pub(super) branches: Vec<StepSources>,
}

impl StepSources {
    /// The step at `at` (`steps[2]`, `steps[0].parallel[1]`) with every value written
    /// on the step itself.
    pub(super) fn code(at: &str) -> Self {
        StepSources {
            retry: RetrySources::at(&format!("{at}.retry"), RANK_STEP),
            compensate_retry: RetrySources::at(&format!("{at}.compensate_retry"), RANK_STEP),
            timeouts: TimeoutSources::at(at, RANK_STEP),
            branches: Vec::new(),
        }
    }

    /// The sources of a code-built step and of its branches.
    fn for_code(at: &str, step: &Step) -> Self {
        let mut sources = StepSources::code(at);
        if let StepKind::Parallel(branches) = &step.kind {
            sources.branches = branches
                .iter()
                .enumerate()
                .map(|(b, s)| StepSources::for_code(&format!("{at}.parallel[{b}]"), s))
                .collect();
        }
        sources
    }

    /// The sources of branch `b` of a parallel step.
    pub(super) fn branch(&self, at: &str, b: usize) -> StepSources {
        self.branches
            .get(b)
            .cloned()
            .unwrap_or_else(|| StepSources::code(&format!("{at}.parallel[{b}]")))
    }
}

/// Sources for every step, indexed like `Definition::steps`.
pub(super) struct Provenance {
    pub(super) steps: Vec<StepSources>,
}

impl Provenance {
    pub(super) fn for_code(def: &Definition) -> Self {
        Provenance {
            steps: def
                .steps
                .iter()
                .enumerate()
                .map(|(i, s)| StepSources::for_code(&format!("steps[{i}]"), s))
                .collect(),
        }
    }

    pub(super) fn step(&self, i: usize) -> StepSources {
        self.steps
            .get(i)
            .cloned()
            .unwrap_or_else(|| StepSources::code(&format!("steps[{i}]")))
    }
}

// ---------------------------------------------------------------------------------------------
// Semantic checks (shared by the TOML and code paths)
// ---------------------------------------------------------------------------------------------

/// Which characters a name may use.
#[derive(Clone, Copy)]
enum Charset {
    /// `[A-Za-z0-9_-]`: saga, step and schedule names. No dots: a saga name is one word of
    /// the `saga.<name>.<status>` topic routing key.
    Word,
    /// `[A-Za-z0-9_.-]`: activity and signal names (`payments.charge`).
    Dotted,
}

impl Charset {
    fn allows(self, c: char) -> bool {
        c.is_ascii_alphanumeric()
            || c == '_'
            || c == '-'
            || (c == '.' && matches!(self, Charset::Dotted))
    }

    fn describe(self) -> &'static str {
        match self {
            Charset::Word => {
                "only ASCII letters, digits, `_` and `-` are allowed (no dots: the name is \
                 used as one AMQP topic word)"
            }
            Charset::Dotted => "only ASCII letters, digits, `_`, `-` and `.` are allowed",
        }
    }
}

fn check_name(out: &mut Problems, field: &str, value: &str, charset: Charset) {
    if value.is_empty() {
        out.push(field, "must not be empty");
    } else if value.len() > MAX_NAME_LEN {
        out.push(
            field,
            format!(
                "is {} bytes long; at most {MAX_NAME_LEN} are allowed",
                value.len()
            ),
        );
    } else if let Some(bad) = value.chars().find(|c| !charset.allows(*c)) {
        out.push(
            field,
            format!("`{value}` contains {bad:?}; {}", charset.describe()),
        );
    }
}

/// A duration that must be > 0 (and, like all durations, at most [`MAX_DURATION`]).
fn check_positive(out: &mut Problems, field: &str, d: Duration) {
    if d.is_zero() {
        out.push(field, "must be greater than zero");
    }
    check_max(out, field, d);
}

/// A duration that may be zero but not absurdly long. Values from TOML are already capped by
/// [`parse_duration`]; code-built values are not.
fn check_max(out: &mut Problems, field: &str, d: Duration) {
    if d > MAX_DURATION {
        out.push(
            field,
            format!("{} is too long: at most 100 years is allowed", human(d)),
        );
    }
}

pub(super) fn check_retry(out: &mut Problems, p: &RetryPolicy, s: &RetrySources) {
    check_positive(out, &s.initial_interval.path, p.initial_interval);
    check_positive(out, &s.max_interval.path, p.max_interval);
    if p.max_attempts == 0 {
        out.push(
            &s.max_attempts.path,
            "must be at least 1 (it counts the first attempt; 1 means no retries)",
        );
    }
    check_coefficient(out, &s.backoff_coefficient.path, p.backoff_coefficient);
    check_interval_order(out, p, s);
    for (i, code) in p.non_retryable.iter().enumerate() {
        if code.trim().is_empty() {
            out.push(
                format!("{}[{i}]", s.non_retryable.path),
                "must not be empty (it is an error code to match)",
            );
        }
    }
}

fn check_coefficient(out: &mut Problems, field: &str, c: f64) {
    if !c.is_finite() {
        out.push(field, format!("must be a finite number, got {c}"));
    } else if c < 1.0 {
        out.push(
            field,
            format!("must be at least 1.0 (got {c}); below 1 the delays would shrink"),
        );
    }
}

/// `max_interval >= initial_interval`. The two may come from different places; the error
/// goes to the more specific one, since that is the value the author most likely just wrote.
fn check_interval_order(out: &mut Problems, p: &RetryPolicy, s: &RetrySources) {
    if p.initial_interval.is_zero() || p.max_interval.is_zero() {
        return; // already reported as zero
    }
    if p.max_interval >= p.initial_interval {
        return;
    }
    let (init, max) = (human(p.initial_interval), human(p.max_interval));
    if s.initial_interval.rank > s.max_interval.rank {
        out.push(
            &s.initial_interval.path,
            format!(
                "initial_interval ({init}) is longer than max_interval ({max}, {})",
                s.max_interval.describe()
            ),
        );
    } else {
        out.push(
            &s.max_interval.path,
            format!(
                "max_interval ({max}) is shorter than initial_interval ({init}, {})",
                s.initial_interval.describe()
            ),
        );
    }
}

pub(super) fn check_timeouts(out: &mut Problems, t: &Timeouts, s: &TimeoutSources) {
    check_positive(out, &s.start_to_close.path, t.start_to_close);
    let optional = [
        (t.schedule_to_start, &s.schedule_to_start),
        (t.schedule_to_close, &s.schedule_to_close),
        (t.heartbeat, &s.heartbeat),
    ];
    for (value, source) in optional {
        if let Some(d) = value {
            check_positive(out, &source.path, d);
        }
    }
}

pub(super) fn check_definition(def: &Definition, prov: &Provenance, out: &mut Problems) {
    check_name(out, "name", &def.name, Charset::Word);
    if def.version == 0 {
        out.push("version", "must be at least 1");
    }
    if def.steps.is_empty() {
        out.push("steps", "at least one [[steps]] entry is required");
    }
    check_step_names(def, out);
    let names: Vec<&str> = def.steps.iter().map(|s| s.name.as_str()).collect();
    for (i, step) in def.steps.iter().enumerate() {
        let at = format!("steps[{i}]");
        check_step(out, &at, step, &prov.step(i), &names[..i]);
        if let StepKind::Parallel(branches) = &step.kind {
            check_parallel(out, &at, branches, &prov.step(i), &names[..i]);
        }
    }
    check_schedules(def, out);
}

/// Step and branch names are unique across the definition: both name task ids and
/// idempotency keys.
fn check_step_names(def: &Definition, out: &mut Problems) {
    let mut seen: BTreeMap<&str, String> = BTreeMap::new();
    for (at, step) in def.units() {
        let field = format!("{at}.name");
        check_name(out, &field, &step.name, Charset::Word);
        if step.name.is_empty() {
            continue;
        }
        if let Some(first) = seen.get(step.name.as_str()) {
            out.push(
                field,
                format!(
                    "duplicate step name `{}` (first used by {first})",
                    step.name
                ),
            );
        } else {
            seen.insert(&step.name, at);
        }
    }
}

/// A parallel step's branches: at least one, none parallel itself, each checked like
/// a step that sees the same earlier steps as the group (not its sibling branches).
fn check_parallel(
    out: &mut Problems,
    at: &str,
    branches: &[Step],
    sources: &StepSources,
    earlier: &[&str],
) {
    if branches.is_empty() {
        out.push(format!("{at}.parallel"), "needs at least one branch");
    }
    for (b, branch) in branches.iter().enumerate() {
        let branch_at = format!("{at}.parallel[{b}]");
        if matches!(branch.kind, StepKind::Parallel(_)) {
            out.push(
                format!("{branch_at}.parallel"),
                "a branch cannot itself be parallel: put the inner group in a child saga",
            );
            continue;
        }
        if branch.for_each.is_some() {
            out.push(
                format!("{branch_at}.for_each"),
                "a branch cannot fan out: make the for_each a step of a child saga and the branch `saga = …`",
            );
        }
        check_step(out, &branch_at, branch, &sources.branch(at, b), earlier);
    }
}

fn check_step(out: &mut Problems, at: &str, step: &Step, sources: &StepSources, earlier: &[&str]) {
    match &step.kind {
        StepKind::Activity(a) => {
            check_name(out, &format!("{at}.activity"), &a.activity, Charset::Dotted);
            check_retry(out, &a.retry, &sources.retry);
            if let Some(c) = &a.compensate {
                check_name(out, &format!("{at}.compensate"), c, Charset::Dotted);
                check_retry(out, &a.compensate_retry, &sources.compensate_retry);
            }
            check_timeouts(out, &a.timeouts, &sources.timeouts);
        }
        StepKind::Sleep(d) => check_positive(out, &format!("{at}.sleep"), *d),
        StepKind::SleepUntil(path) => {
            let checked = ValuePath::parse(path).and_then(|p| p.check(earlier));
            if let Err(reason) = checked {
                out.push(format!("{at}.sleep_until"), reason);
            }
        }
        StepKind::Wait(w) => {
            check_name(out, &format!("{at}.wait"), &w.signal, Charset::Dotted);
            match w.timeout {
                Some(d) => check_positive(out, &format!("{at}.timeout"), d),
                None if w.on_timeout != OnTimeout::Fail => out.push(
                    format!("{at}.on_timeout"),
                    "needs `timeout`: without a timeout the wait never times out",
                ),
                None => {}
            }
        }
        StepKind::Saga(name) => check_name(out, &format!("{at}.saga"), name, Charset::Word),
        StepKind::Parallel(_) => {}
    }
    if let Some(when) = &step.when {
        if let Err(reason) = when.path.check(earlier) {
            out.push(format!("{at}.when"), reason);
        }
    }
    check_input(out, at, step, earlier);
    check_for_each(out, at, step, earlier);
}

/// A fan-out runs an activity per element: activity steps only, a bounded
/// concurrency, and an array path to the input or an earlier step.
fn check_for_each(out: &mut Problems, at: &str, step: &Step, earlier: &[&str]) {
    let Some(f) = &step.for_each else {
        return;
    };
    if !matches!(step.kind, StepKind::Activity(_)) {
        out.push(
            format!("{at}.for_each"),
            "only valid on activity steps: the activity runs once per element",
        );
    }
    if f.max_concurrency == 0 || f.max_concurrency > MAX_CONCURRENCY {
        out.push(
            format!("{at}.max_concurrency"),
            format!(
                "must be between 1 and {MAX_CONCURRENCY} (it is {}): every element in flight is kept in the saga's state",
                f.max_concurrency
            ),
        );
    }
    if let Err(reason) = f.items.check(earlier) {
        out.push(format!("{at}.for_each"), reason);
    }
}

/// A step's `input` map: activity steps only, keys usable as JSON field names that
/// leave `output` free (a compensation's input adds the action's output under it),
/// every path to an earlier step.
fn check_input(out: &mut Problems, at: &str, step: &Step, earlier: &[&str]) {
    let Some(map) = &step.input else {
        return;
    };
    if !matches!(step.kind, StepKind::Activity(_)) {
        out.push(
            format!("{at}.input"),
            "only valid on activity steps: it is what the activity's task carries",
        );
    }
    for (key, path) in map {
        let field = format!("{at}.input.{key}");
        check_name(out, &field, key, Charset::Word);
        if key == "output" {
            out.push(
                &field,
                "`output` is reserved: the compensation's input adds the action's output under it",
            );
        }
        if let Err(reason) = path.check(earlier) {
            out.push(field, reason);
        }
    }
}

fn check_schedules(def: &Definition, out: &mut Problems) {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, s) in def.schedules.iter().enumerate() {
        let field = format!("schedules[{i}].name");
        check_name(out, &field, &s.name, Charset::Word);
        if !s.name.is_empty() {
            if let Some(first) = seen.get(s.name.as_str()) {
                out.push(
                    field,
                    format!(
                        "duplicate schedule name `{}` (first used by schedules[{first}])",
                        s.name
                    ),
                );
            } else {
                seen.insert(&s.name, i);
            }
        }
        if let Err(reason) = check_cron(&s.cron, s.timezone) {
            out.push(format!("schedules[{i}].cron"), reason);
        }
        if !s.input.is_object() {
            out.push(
                format!("schedules[{i}].input"),
                "must be a table (a JSON object): it becomes the saga input",
            );
        }
        check_max(
            out,
            &format!("schedules[{i}].catch_up_window"),
            s.catch_up_window,
        );
    }
}
