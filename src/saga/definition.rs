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

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

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
    pub steps: Vec<Step>,
    pub schedules: Vec<ScheduleSpec>,
}

/// One step of a saga, in execution order.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub name: String,
    pub kind: StepKind,
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
    /// Wait for a named signal.
    Wait(WaitStep),
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
    pub fn activities(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for step in &self.steps {
            if let StepKind::Activity(a) = &step.kind {
                out.insert(a.activity.clone());
                if let Some(c) = &a.compensate {
                    out.insert(c.clone());
                }
            }
        }
        out
    }

    /// Runs every semantic validation rule on a definition built in code (the TOML path calls
    /// this too). `origin` is what errors name as the file (e.g. "sagas/order.toml" or
    /// "<code>"). Returns the first problem; see [`Definition::validation_errors`] for all.
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
// Durations and cron
// ---------------------------------------------------------------------------------------------

const DURATION_HINT: &str = "expected a duration like 250ms, 30s, 5m, 36h or 7d";

/// Parses a humane duration (`250ms`, `30s`, `5m`, `36h`, `7d`, `1h 30m`).
///
/// Empty and negative inputs are refused, as is anything longer than [`MAX_DURATION`], so
/// callers can add the result to a timestamp without overflow checks. Zero is accepted here;
/// whether zero makes sense depends on the field and is checked there.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let trimmed = s.trim();
    if trimmed.is_empty() {
        return Err(format!("{DURATION_HINT}, got an empty string"));
    }
    if trimmed.starts_with('-') {
        return Err(format!(
            "{DURATION_HINT}, got `{trimmed}` (negative durations are not allowed)"
        ));
    }
    let parsed = humantime::parse_duration(trimmed)
        .map_err(|e| format!("{DURATION_HINT}, got `{trimmed}` ({e})"))?;
    if parsed > MAX_DURATION {
        return Err(format!(
            "`{trimmed}` is too long: at most 100 years is allowed"
        ));
    }
    Ok(parsed)
}

/// Renders a duration the way users write them, for error messages.
fn human(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Normalises a cron expression to the 6/7-field form (seconds first, optional year) that
/// the `cron` crate parses, and checks that it parses.
///
/// * 6 or 7 fields and `@daily`-style shorthands are kept (whitespace collapsed). Their
///   day-of-week field uses the `cron` crate's numbering: 1 = Sunday ... 7 = Saturday.
/// * 5 fields are classic crontab (minute first): `0 ` is prepended for the seconds field and
///   a numeric day-of-week (crontab: 0 or 7 = Sunday, 1 = Monday ... 6 = Saturday) is
///   rewritten to the `cron` crate's numbering, so `0 9 * * 1-5` still means weekdays.
///   Crontab fires when day-of-month OR day-of-week match, the `cron` crate only when both
///   do; a 5-field expression restricting both is refused rather than silently changed.
pub fn normalize_cron(expr: &str) -> Result<String, String> {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    let normalised = match fields.as_slice() {
        [] => return Err("must not be empty".to_string()),
        [single] if single.starts_with('@') => (*single).to_string(),
        [minute, hour, dom, month, dow] => {
            if is_restricted(dom) && is_restricted(dow) {
                return Err(format!(
                    "`{expr}` restricts both day-of-month and day-of-week; crontab would fire \
                     when either matches, this scheduler only when both do. Restrict only one, \
                     or use the 6-field form (seconds first) where both must match"
                ));
            }
            let dow = crontab_dow_to_cron(dow)
                .map_err(|e| format!("invalid day-of-week in `{expr}`: {e}"))?;
            format!("0 {minute} {hour} {dom} {month} {dow}")
        }
        [_, _, _, _, _, _] | [_, _, _, _, _, _, _] => fields.join(" "),
        _ => {
            return Err(format!(
                "`{expr}` has {} fields; expected 5 (minute hour day-of-month month \
                 day-of-week) or 6/7 (seconds first, optional year)",
                fields.len()
            ))
        }
    };
    parse_cron(&normalised, expr)?;
    Ok(normalised)
}

/// True when a day field is more than a wildcard.
fn is_restricted(field: &str) -> bool {
    field != "*" && field != "?"
}

/// Rewrites a crontab day-of-week field (0/7 = Sunday) to the `cron` crate's numbering
/// (1 = Sunday). Fields without digits (`*`, `MON-FRI`) mean the same in both and are kept;
/// numeric fields are expanded to an explicit sorted list, which sidesteps ranges such as
/// `5-7` whose rewritten ends would wrap around.
fn crontab_dow_to_cron(field: &str) -> Result<String, String> {
    if !field.bytes().any(|b| b.is_ascii_digit()) {
        return Ok(field.to_string());
    }
    let mut days = BTreeSet::new();
    for item in field.split(',') {
        days.extend(crontab_dow_item(item)?);
    }
    let list: Vec<String> = days.iter().map(|d| (d + 1).to_string()).collect();
    Ok(list.join(","))
}

/// Expands one comma-separated crontab day-of-week item (`3`, `1-5`, `*/2`, `mon-fri/2`) to
/// crontab day numbers 0..=6.
fn crontab_dow_item(item: &str) -> Result<Vec<u32>, String> {
    let (range, step) = match item.split_once('/') {
        Some((r, s)) => {
            let step: u32 = s
                .parse()
                .map_err(|_| format!("`{item}`: step `{s}` is not a number"))?;
            if step == 0 {
                return Err(format!("`{item}`: step must be at least 1"));
            }
            (r, Some(step))
        }
        None => (item, None),
    };
    let (first, last) = match range.split_once('-') {
        _ if range == "*" || range == "?" => (0, 6),
        Some((a, b)) => (crontab_day(a)?, crontab_day(b)?),
        None => {
            let day = crontab_day(range)?;
            (day, if step.is_some() { 6 } else { day })
        }
    };
    if first > last {
        return Err(format!("`{item}`: range runs backwards"));
    }
    let step = step.unwrap_or(1) as usize;
    Ok((first..=last).step_by(step).map(|d| d % 7).collect())
}

/// One crontab day: 0..=7, or an English day name (three-letter or full, any case).
fn crontab_day(s: &str) -> Result<u32, String> {
    const NAMES: [(&str, &str); 7] = [
        ("sun", "sunday"),
        ("mon", "monday"),
        ("tue", "tuesday"),
        ("wed", "wednesday"),
        ("thu", "thursday"),
        ("fri", "friday"),
        ("sat", "saturday"),
    ];
    if let Ok(n) = s.parse::<u32>() {
        return if n <= 7 {
            Ok(n)
        } else {
            Err(format!("`{s}` is out of range (0-7, 0 and 7 are Sunday)"))
        };
    }
    let lower = s.to_ascii_lowercase();
    NAMES
        .iter()
        .position(|(short, long)| lower == *short || lower == *long)
        .map(|i| i as u32)
        .ok_or_else(|| format!("`{s}` is not a day of the week"))
}

/// Parses with the `cron` crate, turning its multi-line caret message into one line.
/// `written` is what the user wrote, named in the message when it differs.
fn parse_cron(expr: &str, written: &str) -> Result<cron::Schedule, String> {
    cron::Schedule::from_str(expr).map_err(|e| {
        let shown = if expr == written.trim() {
            format!("`{expr}`")
        } else {
            format!("`{expr}` (normalised from `{}`)", written.trim())
        };
        format!(
            "invalid cron expression {shown}: {}",
            describe_cron_error(&e)
        )
    })
}

/// The `cron` crate reports `expr\n   ^\nmessage`; keep the message and the position.
fn describe_cron_error(err: &cron::error::Error) -> String {
    let text = err.to_string();
    let lines: Vec<&str> = text.lines().collect();
    let caret = lines.get(1).and_then(|l| l.find('^'));
    let message = lines.get(2..).unwrap_or(&[]).join(" ");
    match (caret, message.trim()) {
        (Some(col), "") => format!("cannot parse at character {}", col + 1),
        (Some(col), msg) => format!("{msg} (at character {})", col + 1),
        (None, _) => text.replace('\n', " "),
    }
}

/// Checks a normalised cron expression: it must parse and fire at least once. The firing
/// check starts at 1970 (not "now") so that validity does not depend on the clock; it catches
/// impossible dates such as 31 February.
fn check_cron(expr: &str, tz: chrono_tz::Tz) -> Result<(), String> {
    let fields = expr.split_whitespace().count();
    let schedule = parse_cron(expr, expr).map_err(|e| {
        if fields == 5 {
            format!("{e}; 5-field crontab expressions must be converted with normalize_cron")
        } else {
            e
        }
    })?;
    let epoch = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH.with_timezone(&tz);
    if schedule.after(&epoch).next().is_none() {
        return Err(format!("cron expression `{expr}` never fires"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Error collection and value provenance
// ---------------------------------------------------------------------------------------------

/// Collects problems for one file, dropping exact duplicates (a bad `[defaults]` value is
/// inherited by many steps but must be reported once).
struct Problems {
    file: String,
    list: Vec<DefinitionError>,
}

impl Problems {
    fn new(file: &str) -> Self {
        Problems {
            file: file.to_string(),
            list: Vec::new(),
        }
    }

    fn push(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        let err = DefinitionError {
            file: self.file.clone(),
            field: field.into(),
            reason: reason.into(),
        };
        if !self.list.contains(&err) {
            self.list.push(err);
        }
    }

    fn fields(&self) -> HashSet<String> {
        self.list.iter().map(|e| e.field.clone()).collect()
    }

    fn into_vec(self) -> Vec<DefinitionError> {
        self.list
    }
}

/// Where a resolved value came from: its field path and how specific that place is
/// (0 built-in, 1 `defaults.retry`/`defaults`, 2 `defaults.compensate_retry`, 3 the step).
#[derive(Debug, Clone)]
struct Source {
    rank: u8,
    path: String,
}

const RANK_BUILTIN: u8 = 0;
const RANK_DEFAULTS: u8 = 1;
const RANK_DEFAULTS_COMPENSATE: u8 = 2;
const RANK_STEP: u8 = 3;

impl Source {
    fn new(rank: u8, path: String) -> Self {
        Source { rank, path }
    }

    fn builtin() -> Self {
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
struct RetrySources {
    initial_interval: Source,
    backoff_coefficient: Source,
    max_interval: Source,
    max_attempts: Source,
    non_retryable: Source,
}

impl RetrySources {
    /// Every key written at `prefix` (the code path, where everything is explicit).
    fn at(prefix: &str, rank: u8) -> Self {
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
struct TimeoutSources {
    schedule_to_start: Source,
    start_to_close: Source,
    schedule_to_close: Source,
    heartbeat: Source,
}

impl TimeoutSources {
    fn at(prefix: &str, rank: u8) -> Self {
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
struct StepSources {
    retry: RetrySources,
    compensate_retry: RetrySources,
    timeouts: TimeoutSources,
}

impl StepSources {
    /// Step `i` with every value written on the step itself.
    fn code(i: usize) -> Self {
        StepSources {
            retry: RetrySources::at(&format!("steps[{i}].retry"), RANK_STEP),
            compensate_retry: RetrySources::at(&format!("steps[{i}].compensate_retry"), RANK_STEP),
            timeouts: TimeoutSources::at(&format!("steps[{i}]"), RANK_STEP),
        }
    }
}

/// Sources for every step, indexed like `Definition::steps`.
struct Provenance {
    steps: Vec<StepSources>,
}

impl Provenance {
    fn for_code(def: &Definition) -> Self {
        Provenance {
            steps: (0..def.steps.len()).map(StepSources::code).collect(),
        }
    }

    fn step(&self, i: usize) -> StepSources {
        self.steps
            .get(i)
            .cloned()
            .unwrap_or_else(|| StepSources::code(i))
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

fn check_retry(out: &mut Problems, p: &RetryPolicy, s: &RetrySources) {
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

fn check_timeouts(out: &mut Problems, t: &Timeouts, s: &TimeoutSources) {
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

fn check_definition(def: &Definition, prov: &Provenance, out: &mut Problems) {
    check_name(out, "name", &def.name, Charset::Word);
    if def.version == 0 {
        out.push("version", "must be at least 1");
    }
    if def.steps.is_empty() {
        out.push("steps", "at least one [[steps]] entry is required");
    }
    check_step_names(def, out);
    for (i, step) in def.steps.iter().enumerate() {
        check_step(out, i, step, &prov.step(i));
    }
    check_schedules(def, out);
}

fn check_step_names(def: &Definition, out: &mut Problems) {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, step) in def.steps.iter().enumerate() {
        let field = format!("steps[{i}].name");
        check_name(out, &field, &step.name, Charset::Word);
        if step.name.is_empty() {
            continue;
        }
        if let Some(first) = seen.get(step.name.as_str()) {
            out.push(
                field,
                format!(
                    "duplicate step name `{}` (first used by steps[{first}])",
                    step.name
                ),
            );
        } else {
            seen.insert(&step.name, i);
        }
    }
}

fn check_step(out: &mut Problems, i: usize, step: &Step, sources: &StepSources) {
    match &step.kind {
        StepKind::Activity(a) => {
            check_name(
                out,
                &format!("steps[{i}].activity"),
                &a.activity,
                Charset::Dotted,
            );
            check_retry(out, &a.retry, &sources.retry);
            if let Some(c) = &a.compensate {
                check_name(out, &format!("steps[{i}].compensate"), c, Charset::Dotted);
                check_retry(out, &a.compensate_retry, &sources.compensate_retry);
            }
            check_timeouts(out, &a.timeouts, &sources.timeouts);
        }
        StepKind::Sleep(d) => check_positive(out, &format!("steps[{i}].sleep"), *d),
        StepKind::Wait(w) => {
            check_name(out, &format!("steps[{i}].wait"), &w.signal, Charset::Dotted);
            match w.timeout {
                Some(d) => check_positive(out, &format!("steps[{i}].timeout"), d),
                None if w.on_timeout != OnTimeout::Fail => out.push(
                    format!("steps[{i}].on_timeout"),
                    "needs `timeout`: without a timeout the wait never times out",
                ),
                None => {}
            }
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

// ---------------------------------------------------------------------------------------------
// TOML: raw serde layer
// ---------------------------------------------------------------------------------------------

/// A duration field, parsed while deserializing so that errors carry the field path.
#[derive(Debug, Clone, Copy)]
struct RawDuration(Duration);

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a duration string such as \"250ms\", \"30s\", \"5m\", \"36h\" or \"7d\"",
                )
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<RawDuration, E> {
                parse_duration(s).map(RawDuration).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

/// An IANA time zone name, parsed while deserializing.
#[derive(Debug, Clone, Copy)]
struct RawTz(chrono_tz::Tz);

impl<'de> Deserialize<'de> for RawTz {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawTz;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an IANA time zone name such as \"Europe/Berlin\" or \"UTC\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<RawTz, E> {
                s.parse::<chrono_tz::Tz>().map(RawTz).map_err(|_| {
                    E::custom(format!(
                        "unknown time zone `{s}`; expected an IANA name such as `Europe/Berlin` or `UTC`"
                    ))
                })
            }
        }
        d.deserialize_str(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefinition {
    name: Option<String>,
    version: Option<u32>,
    description: Option<String>,
    defaults: Option<RawDefaults>,
    steps: Option<Vec<RawStep>>,
    #[serde(default)]
    schedules: Vec<RawSchedule>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    start_to_close: Option<RawDuration>,
    schedule_to_start: Option<RawDuration>,
    schedule_to_close: Option<RawDuration>,
    heartbeat: Option<RawDuration>,
    retry: Option<RawRetry>,
    compensate_retry: Option<RawRetry>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    initial_interval: Option<RawDuration>,
    backoff_coefficient: Option<f64>,
    max_interval: Option<RawDuration>,
    max_attempts: Option<u32>,
    non_retryable: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    name: Option<String>,
    activity: Option<String>,
    sleep: Option<RawDuration>,
    wait: Option<String>,
    compensate: Option<String>,
    retry: Option<RawRetry>,
    compensate_retry: Option<RawRetry>,
    start_to_close: Option<RawDuration>,
    schedule_to_start: Option<RawDuration>,
    schedule_to_close: Option<RawDuration>,
    heartbeat: Option<RawDuration>,
    timeout: Option<RawDuration>,
    on_timeout: Option<RawOnTimeout>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RawOnTimeout {
    Fail,
    Continue,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    name: Option<String>,
    cron: Option<String>,
    timezone: Option<RawTz>,
    input: Option<toml::Value>,
    overlap: Option<RawOverlap>,
    catch_up_window: Option<RawDuration>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RawOverlap {
    Skip,
    BufferOne,
    AllowAll,
}

/// Deserializes the file, mapping serde/TOML errors to a field path (or `<toml>` for syntax
/// errors) and a reason with line and column.
fn deserialize_raw(file: &str, text: &str) -> Result<RawDefinition, DefinitionError> {
    serde_path_to_error::deserialize(toml::Deserializer::new(text)).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let message = inner
            .message()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        let location = inner
            .span()
            .and_then(|span| line_column(text, span.start))
            .map(|(line, col)| format!(" (line {line}, column {col})"))
            .unwrap_or_default();
        DefinitionError {
            file: file.to_string(),
            field: if path == "." {
                "<toml>".to_string()
            } else {
                path
            },
            reason: format!("{message}{location}"),
        }
    })
}

/// 1-based line and column (in characters) of a byte offset; None if the offset is not on
/// a character boundary.
fn line_column(text: &str, offset: usize) -> Option<(usize, usize)> {
    let before = text.get(..offset)?;
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..)?.chars().count() + 1;
    Some((line, column))
}

// ---------------------------------------------------------------------------------------------
// TOML: resolution (shape rules and merging with provenance)
// ---------------------------------------------------------------------------------------------

/// One layer of retry settings, most specific first in a resolution chain.
struct RetryLayer<'a> {
    raw: Option<&'a RawRetry>,
    prefix: &'a str,
    rank: u8,
}

/// Picks each key from the first layer that sets it, else the built-in default.
fn resolve_retry(layers: &[RetryLayer]) -> (RetryPolicy, RetrySources) {
    fn pick<T>(
        layers: &[RetryLayer],
        key: &str,
        get: impl Fn(&RawRetry) -> Option<T>,
        builtin: T,
    ) -> (T, Source) {
        for layer in layers {
            if let Some(value) = layer.raw.and_then(&get) {
                return (
                    value,
                    Source::new(layer.rank, format!("{}.{key}", layer.prefix)),
                );
            }
        }
        (builtin, Source::builtin())
    }
    let b = RetryPolicy::default();
    let (initial_interval, s_init) = pick(
        layers,
        "initial_interval",
        |r| r.initial_interval.map(|d| d.0),
        b.initial_interval,
    );
    let (backoff_coefficient, s_coef) = pick(
        layers,
        "backoff_coefficient",
        |r| r.backoff_coefficient,
        b.backoff_coefficient,
    );
    let (max_interval, s_max) = pick(
        layers,
        "max_interval",
        |r| r.max_interval.map(|d| d.0),
        b.max_interval,
    );
    let (max_attempts, s_att) = pick(layers, "max_attempts", |r| r.max_attempts, b.max_attempts);
    let (non_retryable, s_nr) = pick(
        layers,
        "non_retryable",
        |r| r.non_retryable.clone(),
        b.non_retryable,
    );
    let policy = RetryPolicy {
        initial_interval,
        backoff_coefficient,
        max_interval,
        max_attempts,
        non_retryable,
    };
    let sources = RetrySources {
        initial_interval: s_init,
        backoff_coefficient: s_coef,
        max_interval: s_max,
        max_attempts: s_att,
        non_retryable: s_nr,
    };
    (policy, sources)
}

/// The four timeout keys as written at one level.
#[derive(Clone, Copy)]
struct RawTimeouts {
    schedule_to_start: Option<RawDuration>,
    start_to_close: Option<RawDuration>,
    schedule_to_close: Option<RawDuration>,
    heartbeat: Option<RawDuration>,
}

impl RawTimeouts {
    fn of_defaults(d: &RawDefaults) -> Self {
        RawTimeouts {
            schedule_to_start: d.schedule_to_start,
            start_to_close: d.start_to_close,
            schedule_to_close: d.schedule_to_close,
            heartbeat: d.heartbeat,
        }
    }

    fn of_step(s: &RawStep) -> Self {
        RawTimeouts {
            schedule_to_start: s.schedule_to_start,
            start_to_close: s.start_to_close,
            schedule_to_close: s.schedule_to_close,
            heartbeat: s.heartbeat,
        }
    }
}

/// Timeouts: each key from the step, else `[defaults]`, else built-in.
fn resolve_timeouts(layers: &[(RawTimeouts, &str, u8)]) -> (Timeouts, TimeoutSources) {
    fn pick(
        layers: &[(RawTimeouts, &str, u8)],
        key: &str,
        get: impl Fn(&RawTimeouts) -> Option<RawDuration>,
    ) -> (Option<Duration>, Source) {
        for (raw, prefix, rank) in layers {
            if let Some(d) = get(raw) {
                return (Some(d.0), Source::new(*rank, format!("{prefix}.{key}")));
            }
        }
        (None, Source::builtin())
    }
    let (schedule_to_start, s_sts) = pick(layers, "schedule_to_start", |t| t.schedule_to_start);
    let (start_to_close, s_stc) = pick(layers, "start_to_close", |t| t.start_to_close);
    let (schedule_to_close, s_stcl) = pick(layers, "schedule_to_close", |t| t.schedule_to_close);
    let (heartbeat, s_hb) = pick(layers, "heartbeat", |t| t.heartbeat);
    let timeouts = Timeouts {
        schedule_to_start,
        start_to_close: start_to_close.unwrap_or(Timeouts::default().start_to_close),
        schedule_to_close,
        heartbeat,
    };
    let sources = TimeoutSources {
        schedule_to_start: s_sts,
        start_to_close: s_stc,
        schedule_to_close: s_stcl,
        heartbeat: s_hb,
    };
    (timeouts, sources)
}

/// Checks `[defaults]` on its own, so a bad default is refused even when no step inherits it.
fn check_defaults(d: &RawDefaults, out: &mut Problems) {
    let retry_layers = [RetryLayer {
        raw: d.retry.as_ref(),
        prefix: "defaults.retry",
        rank: RANK_DEFAULTS,
    }];
    let (retry, sources) = resolve_retry(&retry_layers);
    check_retry(out, &retry, &sources);
    let (comp, comp_sources) = resolve_retry(&compensate_layers(None, "", d));
    check_retry(out, &comp, &comp_sources);
    let (timeouts, t_sources) =
        resolve_timeouts(&[(RawTimeouts::of_defaults(d), "defaults", RANK_DEFAULTS)]);
    check_timeouts(out, &timeouts, &t_sources);
}

/// Resolution chain for compensations: step.compensate_retry > defaults.compensate_retry >
/// defaults.retry > built-in. The step's own `retry` is deliberately not in the chain: the
/// compensation is a different activity with its own failure modes.
fn compensate_layers<'a>(
    step: Option<&'a RawRetry>,
    step_prefix: &'a str,
    d: &'a RawDefaults,
) -> [RetryLayer<'a>; 3] {
    [
        RetryLayer {
            raw: step,
            prefix: step_prefix,
            rank: RANK_STEP,
        },
        RetryLayer {
            raw: d.compensate_retry.as_ref(),
            prefix: "defaults.compensate_retry",
            rank: RANK_DEFAULTS_COMPENSATE,
        },
        RetryLayer {
            raw: d.retry.as_ref(),
            prefix: "defaults.retry",
            rank: RANK_DEFAULTS,
        },
    ]
}

/// Builds the definition from the raw file, reporting shape problems. Missing values get
/// placeholders so that semantic checks can still run on the rest.
fn resolve(raw: RawDefinition, out: &mut Problems) -> (Definition, Provenance) {
    if raw.name.is_none() {
        out.push("name", "is required");
    }
    if raw.version.is_none() {
        out.push("version", "is required");
    }
    if raw.steps.is_none() {
        out.push("steps", "is required: at least one [[steps]] entry");
    }
    let defaults = raw.defaults.unwrap_or_default();
    check_defaults(&defaults, out);
    let mut steps = Vec::new();
    let mut sources = Vec::new();
    for (i, raw_step) in raw.steps.unwrap_or_default().into_iter().enumerate() {
        let (step, src) = resolve_step(i, raw_step, &defaults, out);
        steps.push(step);
        sources.push(src);
    }
    let schedules = raw
        .schedules
        .into_iter()
        .enumerate()
        .map(|(i, s)| resolve_schedule(i, s, out))
        .collect();
    let def = Definition {
        name: raw.name.unwrap_or_default(),
        version: raw.version.unwrap_or(0),
        description: raw.description,
        steps,
        schedules,
    };
    (def, Provenance { steps: sources })
}

/// Keys valid only on activity steps that this raw step sets.
fn activity_only_keys(s: &RawStep) -> Vec<&'static str> {
    let keys = [
        ("compensate", s.compensate.is_some()),
        ("retry", s.retry.is_some()),
        ("compensate_retry", s.compensate_retry.is_some()),
        ("start_to_close", s.start_to_close.is_some()),
        ("schedule_to_start", s.schedule_to_start.is_some()),
        ("schedule_to_close", s.schedule_to_close.is_some()),
        ("heartbeat", s.heartbeat.is_some()),
    ];
    keys.iter()
        .filter(|(_, set)| *set)
        .map(|(k, _)| *k)
        .collect()
}

/// Keys valid only on wait steps that this raw step sets.
fn wait_only_keys(s: &RawStep) -> Vec<&'static str> {
    let keys = [
        ("timeout", s.timeout.is_some()),
        ("on_timeout", s.on_timeout.is_some()),
    ];
    keys.iter()
        .filter(|(_, set)| *set)
        .map(|(k, _)| *k)
        .collect()
}

/// The step kinds this raw step sets (`activity`, `sleep`, `wait`).
fn kind_keys(s: &RawStep) -> Vec<&'static str> {
    let keys = [
        ("activity", s.activity.is_some()),
        ("sleep", s.sleep.is_some()),
        ("wait", s.wait.is_some()),
    ];
    keys.iter()
        .filter(|(_, set)| *set)
        .map(|(k, _)| *k)
        .collect()
}

fn refuse_keys(out: &mut Problems, i: usize, keys: &[&str], valid_on: &str, kind: &str) {
    for key in keys {
        out.push(
            format!("steps[{i}].{key}"),
            format!("only valid on {valid_on} steps (this is a {kind} step)"),
        );
    }
}

fn resolve_step(
    i: usize,
    raw: RawStep,
    defaults: &RawDefaults,
    out: &mut Problems,
) -> (Step, StepSources) {
    if raw.name.is_none() {
        out.push(format!("steps[{i}].name"), "is required");
    }
    let kinds = kind_keys(&raw);
    let placeholder = StepKind::Sleep(Duration::from_secs(1));
    let (kind, sources) = match kinds.as_slice() {
        ["activity"] => resolve_activity(i, &raw, defaults, out),
        ["sleep"] => {
            refuse_keys(out, i, &activity_only_keys(&raw), "activity", "sleep");
            refuse_keys(out, i, &wait_only_keys(&raw), "wait", "sleep");
            let d = raw.sleep.map_or(Duration::ZERO, |d| d.0);
            (StepKind::Sleep(d), StepSources::code(i))
        }
        ["wait"] => {
            refuse_keys(out, i, &activity_only_keys(&raw), "activity", "wait");
            (
                StepKind::Wait(resolve_wait(i, &raw, out)),
                StepSources::code(i),
            )
        }
        [] => {
            out.push(
                format!("steps[{i}]"),
                "a step needs exactly one of `activity`, `sleep` or `wait`; it has none",
            );
            (placeholder, StepSources::code(i))
        }
        many => {
            let list: Vec<String> = many.iter().map(|k| format!("`{k}`")).collect();
            out.push(
                format!("steps[{i}]"),
                format!(
                    "a step needs exactly one of `activity`, `sleep` or `wait`; it has {}",
                    list.join(" and ")
                ),
            );
            (placeholder, StepSources::code(i))
        }
    };
    let step = Step {
        name: raw.name.unwrap_or_default(),
        kind,
    };
    (step, sources)
}

fn resolve_activity(
    i: usize,
    raw: &RawStep,
    defaults: &RawDefaults,
    out: &mut Problems,
) -> (StepKind, StepSources) {
    refuse_keys(out, i, &wait_only_keys(raw), "wait", "activity");
    if raw.compensate_retry.is_some() && raw.compensate.is_none() {
        out.push(
            format!("steps[{i}].compensate_retry"),
            "needs `compensate`: this step has no compensation to retry",
        );
    }
    let retry_prefix = format!("steps[{i}].retry");
    let (retry, retry_sources) = resolve_retry(&[
        RetryLayer {
            raw: raw.retry.as_ref(),
            prefix: &retry_prefix,
            rank: RANK_STEP,
        },
        RetryLayer {
            raw: defaults.retry.as_ref(),
            prefix: "defaults.retry",
            rank: RANK_DEFAULTS,
        },
    ]);
    let comp_prefix = format!("steps[{i}].compensate_retry");
    let (compensate_retry, comp_sources) = resolve_retry(&compensate_layers(
        raw.compensate_retry.as_ref(),
        &comp_prefix,
        defaults,
    ));
    let step_prefix = format!("steps[{i}]");
    let (timeouts, timeout_sources) = resolve_timeouts(&[
        (RawTimeouts::of_step(raw), &step_prefix, RANK_STEP),
        (
            RawTimeouts::of_defaults(defaults),
            "defaults",
            RANK_DEFAULTS,
        ),
    ]);
    let kind = StepKind::Activity(ActivityStep {
        activity: raw.activity.clone().unwrap_or_default(),
        compensate: raw.compensate.clone(),
        retry,
        compensate_retry,
        timeouts,
    });
    let sources = StepSources {
        retry: retry_sources,
        compensate_retry: comp_sources,
        timeouts: timeout_sources,
    };
    (kind, sources)
}

fn resolve_wait(i: usize, raw: &RawStep, out: &mut Problems) -> WaitStep {
    if raw.on_timeout.is_some() && raw.timeout.is_none() {
        out.push(
            format!("steps[{i}].on_timeout"),
            "needs `timeout`: without a timeout the wait never times out",
        );
    }
    let on_timeout = match raw.on_timeout {
        Some(RawOnTimeout::Continue) => OnTimeout::Continue,
        Some(RawOnTimeout::Fail) | None => OnTimeout::Fail,
    };
    WaitStep {
        signal: raw.wait.clone().unwrap_or_default(),
        timeout: raw.timeout.map(|d| d.0),
        on_timeout,
    }
}

fn resolve_schedule(i: usize, raw: RawSchedule, out: &mut Problems) -> ScheduleSpec {
    if raw.name.is_none() {
        out.push(format!("schedules[{i}].name"), "is required");
    }
    let cron = match raw.cron.as_deref().map(normalize_cron) {
        Some(Ok(normalised)) => normalised,
        Some(Err(reason)) => {
            out.push(format!("schedules[{i}].cron"), reason);
            String::new()
        }
        None => {
            out.push(format!("schedules[{i}].cron"), "is required");
            String::new()
        }
    };
    let input_path = format!("schedules[{i}].input");
    let input = match raw.input {
        Some(value) => toml_to_json(value, &input_path, out),
        None => serde_json::Value::Object(serde_json::Map::new()),
    };
    ScheduleSpec {
        name: raw.name.unwrap_or_default(),
        cron,
        timezone: raw.timezone.map_or(chrono_tz::Tz::UTC, |t| t.0),
        input,
        overlap: match raw.overlap {
            None | Some(RawOverlap::Skip) => OverlapPolicy::Skip,
            Some(RawOverlap::BufferOne) => OverlapPolicy::BufferOne,
            Some(RawOverlap::AllowAll) => OverlapPolicy::AllowAll,
        },
        catch_up_window: raw
            .catch_up_window
            .map_or(Duration::from_secs(300), |d| d.0),
    }
}

/// Converts a TOML value to JSON. Datetimes become RFC 3339 strings; NaN and infinity, which
/// JSON cannot carry, are reported at their path.
fn toml_to_json(value: toml::Value, path: &str, out: &mut Problems) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        toml::Value::String(s) => J::String(s),
        toml::Value::Integer(n) => J::from(n),
        toml::Value::Float(f) => serde_json::Number::from_f64(f)
            .map(J::Number)
            .unwrap_or_else(|| {
                out.push(path, format!("{f} cannot be represented in JSON"));
                J::Null
            }),
        toml::Value::Boolean(b) => J::Bool(b),
        toml::Value::Datetime(dt) => J::String(dt.to_string()),
        toml::Value::Array(items) => J::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| toml_to_json(v, &format!("{path}[{i}]"), out))
                .collect(),
        ),
        toml::Value::Table(table) => J::Object(
            table
                .into_iter()
                .map(|(k, v)| {
                    let child = toml_to_json(v, &format!("{path}.{k}"), out);
                    (k, child)
                })
                .collect(),
        ),
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

// ---------------------------------------------------------------------------------------------
// Catalog
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Entry {
    def: Arc<Definition>,
    origin: String,
}

/// A set of loaded definitions; several versions of one name may coexist (a running saga
/// keeps the version it started with).
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    entries: BTreeMap<(String, u32), Entry>,
}

impl Catalog {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a definition after validating it (so the catalog only ever holds valid ones).
    /// Refuses a second definition with the same name and version; the error names both
    /// origins.
    pub fn insert(&mut self, def: Definition, origin: &str) -> Result<(), DefinitionError> {
        def.validate(origin)?;
        let key = (def.name.clone(), def.version);
        if let Some(existing) = self.entries.get(&key) {
            return Err(DefinitionError {
                file: origin.to_string(),
                field: "version".to_string(),
                reason: format!(
                    "`{}` version {} is already defined in {}",
                    def.name, def.version, existing.origin
                ),
            });
        }
        let entry = Entry {
            def: Arc::new(def),
            origin: origin.to_string(),
        };
        self.entries.insert(key, entry);
        Ok(())
    }

    pub fn get(&self, name: &str, version: u32) -> Option<Arc<Definition>> {
        self.entries
            .get(&(name.to_string(), version))
            .map(|e| Arc::clone(&e.def))
    }

    /// The highest loaded version of `name`.
    pub fn latest(&self, name: &str) -> Option<Arc<Definition>> {
        self.entries
            .range((name.to_string(), 0)..=(name.to_string(), u32::MAX))
            .next_back()
            .map(|(_, e)| Arc::clone(&e.def))
    }

    /// All definitions, ordered by name, then version.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Definition>> {
        self.entries.values().map(|e| &e.def)
    }

    /// Union of [`Definition::activities`] over all definitions.
    pub fn activities(&self) -> BTreeSet<String> {
        self.iter().flat_map(|d| d.activities()).collect()
    }

    pub fn names(&self) -> BTreeSet<String> {
        self.entries.keys().map(|(name, _)| name.clone()).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Loads every `*.toml` in `dir` (sorted by file name, not recursive). Returns ALL errors
    /// found, across files, so an operator can fix everything in one round.
    pub fn load_dir(dir: &Path) -> Result<Catalog, Vec<DefinitionError>> {
        let files = toml_files(dir).map_err(|e| vec![e])?;
        let mut catalog = Catalog::new();
        let mut errors = Vec::new();
        for path in files {
            let origin = path.display().to_string();
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) => {
                    errors.push(io_error(&origin, &e));
                    continue;
                }
            };
            match parse_all(&origin, &text) {
                Ok(def) => {
                    if let Err(e) = catalog.insert(def, &origin) {
                        errors.push(e);
                    }
                }
                Err(mut errs) => errors.append(&mut errs),
            }
        }
        if errors.is_empty() {
            Ok(catalog)
        } else {
            Err(errors)
        }
    }
}

fn io_error(origin: &str, e: &std::io::Error) -> DefinitionError {
    DefinitionError {
        file: origin.to_string(),
        field: "<io>".to_string(),
        reason: e.to_string(),
    }
}

/// Regular files (symlinks followed) ending in `.toml`, sorted by file name.
fn toml_files(dir: &Path) -> Result<Vec<std::path::PathBuf>, DefinitionError> {
    let origin = dir.display().to_string();
    let entries = std::fs::read_dir(dir).map_err(|e| io_error(&origin, &e))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_error(&origin, &e))?;
        let path = entry.path();
        let is_toml = path.extension().is_some_and(|ext| ext == "toml");
        if is_toml && path.is_file() {
            files.push(path);
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
#[path = "definition_tests.rs"]
mod tests;
