//! Resolution of the raw TOML shapes: shape rules (exactly one step kind, keys valid for that
//! kind) and merging step > `[defaults]` > built-in values, recording the source of each value.

use super::raw::{RawDefaults, RawDefinition, RawDuration, RawOnTimeout, RawRetry, RawStep};
use super::validate::{
    check_retry, check_timeouts, Problems, Provenance, RetrySources, Source, StepSources,
    TimeoutSources, RANK_DEFAULTS, RANK_DEFAULTS_COMPENSATE, RANK_STEP,
};
use super::*;

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
pub(super) fn resolve(raw: RawDefinition, out: &mut Problems) -> (Definition, Provenance) {
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
        let (step, src) = resolve_step(&format!("steps[{i}]"), raw_step, &defaults, out);
        steps.push(step);
        sources.push(src);
    }
    let schedules = raw
        .schedules
        .into_iter()
        .enumerate()
        .map(|(i, s)| super::schedules::resolve_schedule(i, s, out))
        .collect();
    let def = Definition {
        name: raw.name.unwrap_or_default(),
        version: raw.version.unwrap_or(0),
        description: raw.description,
        retention: raw.retention.map(|d| d.0),
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
        ("sleep_until", s.sleep_until.is_some()),
        ("wait", s.wait.is_some()),
        ("parallel", s.parallel.is_some()),
        ("saga", s.saga.is_some()),
    ];
    keys.iter()
        .filter(|(_, set)| *set)
        .map(|(k, _)| *k)
        .collect()
}

fn refuse_keys(out: &mut Problems, at: &str, keys: &[&str], valid_on: &str, kind: &str) {
    for key in keys {
        out.push(
            format!("{at}.{key}"),
            format!("only valid on {valid_on} steps (this is a {kind} step)"),
        );
    }
}

fn resolve_step(
    at: &str,
    raw: RawStep,
    defaults: &RawDefaults,
    out: &mut Problems,
) -> (Step, StepSources) {
    if raw.name.is_none() {
        out.push(format!("{at}.name"), "is required");
    }
    let kinds = kind_keys(&raw);
    let placeholder = StepKind::Sleep(Duration::from_secs(1));
    let (kind, sources) = match kinds.as_slice() {
        ["activity"] => resolve_activity(at, &raw, defaults, out),
        ["sleep"] => {
            refuse_keys(out, at, &activity_only_keys(&raw), "activity", "sleep");
            refuse_keys(out, at, &wait_only_keys(&raw), "wait", "sleep");
            let d = raw.sleep.map_or(Duration::ZERO, |d| d.0);
            (StepKind::Sleep(d), StepSources::code(at))
        }
        ["sleep_until"] => {
            refuse_keys(
                out,
                at,
                &activity_only_keys(&raw),
                "activity",
                "sleep_until",
            );
            refuse_keys(out, at, &wait_only_keys(&raw), "wait", "sleep_until");
            let path = raw.sleep_until.clone().unwrap_or_default();
            (StepKind::SleepUntil(path), StepSources::code(at))
        }
        ["wait"] => {
            refuse_keys(out, at, &activity_only_keys(&raw), "activity", "wait");
            (
                StepKind::Wait(resolve_wait(at, &raw, out)),
                StepSources::code(at),
            )
        }
        ["parallel"] => resolve_parallel(at, &raw, defaults, out),
        ["saga"] => {
            refuse_keys(out, at, &activity_only_keys(&raw), "activity", "saga");
            refuse_keys(out, at, &wait_only_keys(&raw), "wait", "saga");
            let name = raw.saga.clone().unwrap_or_default();
            (StepKind::Saga(name), StepSources::code(at))
        }
        [] => {
            out.push(
                at.to_string(),
                "a step needs exactly one of `activity`, `sleep`, `sleep_until`, `wait`, `parallel` or `saga`; it has none",
            );
            (placeholder, StepSources::code(at))
        }
        many => {
            let list: Vec<String> = many.iter().map(|k| format!("`{k}`")).collect();
            out.push(
                at.to_string(),
                format!(
                    "a step needs exactly one of `activity`, `sleep`, `sleep_until`, `wait`, `parallel` or `saga`; it has {}",
                    list.join(" and ")
                ),
            );
            (placeholder, StepSources::code(at))
        }
    };
    let step = Step {
        name: raw.name.clone().unwrap_or_default(),
        kind,
        when: resolve_when(at, &raw, out),
        input: resolve_input(at, &raw, out),
        for_each: resolve_for_each(at, &raw, out),
    };
    (step, sources)
}

/// `for_each` (a path) with its `max_concurrency`; the kind and range checks are
/// semantic and shared with definitions built in code (`validate.rs`).
fn resolve_for_each(at: &str, raw: &RawStep, out: &mut Problems) -> Option<ForEach> {
    let Some(text) = raw.for_each.as_deref() else {
        if raw.max_concurrency.is_some() {
            out.push(
                format!("{at}.max_concurrency"),
                "needs `for_each`: it bounds how many elements run at once",
            );
        }
        return None;
    };
    let items = ValuePath::parse(text)
        .map_err(|reason| out.push(format!("{at}.for_each"), reason))
        .ok()?;
    Some(ForEach {
        items,
        max_concurrency: raw.max_concurrency.unwrap_or(DEFAULT_CONCURRENCY),
    })
}

/// A parallel step: only `name`, `when` and its branches; each branch resolves like a
/// step (its policies fall back to `[defaults]` too).
fn resolve_parallel(
    at: &str,
    raw: &RawStep,
    defaults: &RawDefaults,
    out: &mut Problems,
) -> (StepKind, StepSources) {
    refuse_keys(out, at, &activity_only_keys(raw), "activity", "parallel");
    refuse_keys(out, at, &wait_only_keys(raw), "wait", "parallel");
    let mut sources = StepSources::code(at);
    let mut branches = Vec::new();
    for (b, raw_branch) in raw.parallel.iter().flatten().enumerate() {
        let branch_at = format!("{at}.parallel[{b}]");
        if raw_branch.parallel.is_some() {
            out.push(
                format!("{branch_at}.parallel"),
                "a branch cannot itself be parallel: put the inner group in a child saga",
            );
            continue;
        }
        let (branch, src) = resolve_step(&branch_at, raw_branch.clone(), defaults, out);
        branches.push(branch);
        sources.branches.push(src);
    }
    (StepKind::Parallel(branches), sources)
}

fn resolve_when(at: &str, raw: &RawStep, out: &mut Problems) -> Option<Condition> {
    let text = raw.when.as_deref()?;
    Condition::parse(text)
        .map_err(|reason| out.push(format!("{at}.when"), reason))
        .ok()
}

fn resolve_input(
    at: &str,
    raw: &RawStep,
    out: &mut Problems,
) -> Option<BTreeMap<String, ValuePath>> {
    let map = raw.input.as_ref()?;
    let mut paths = BTreeMap::new();
    for (key, text) in map {
        match ValuePath::parse(text) {
            Ok(path) => {
                paths.insert(key.clone(), path);
            }
            Err(reason) => out.push(format!("{at}.input.{key}"), reason),
        }
    }
    Some(paths)
}

fn resolve_activity(
    at: &str,
    raw: &RawStep,
    defaults: &RawDefaults,
    out: &mut Problems,
) -> (StepKind, StepSources) {
    refuse_keys(out, at, &wait_only_keys(raw), "wait", "activity");
    if raw.compensate_retry.is_some() && raw.compensate.is_none() {
        out.push(
            format!("{at}.compensate_retry"),
            "needs `compensate`: this step has no compensation to retry",
        );
    }
    let retry_prefix = format!("{at}.retry");
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
    let comp_prefix = format!("{at}.compensate_retry");
    let (compensate_retry, comp_sources) = resolve_retry(&compensate_layers(
        raw.compensate_retry.as_ref(),
        &comp_prefix,
        defaults,
    ));
    let step_prefix = at.to_string();
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
        branches: Vec::new(),
    };
    (kind, sources)
}

fn resolve_wait(at: &str, raw: &RawStep, out: &mut Problems) -> WaitStep {
    if raw.on_timeout.is_some() && raw.timeout.is_none() {
        out.push(
            format!("{at}.on_timeout"),
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
