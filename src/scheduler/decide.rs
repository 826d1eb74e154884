//! What a pass does with one locked schedule row, no I/O: the manual trigger, the
//! due ticks (via [`super::cron`]), the overlap policy (via [`super::overlap`]), and
//! the row's new state.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

use super::cron::{parse_timezone, Cron};
use super::overlap::{self, Outcome};
use crate::saga::definition::OverlapPolicy;
use crate::store::schedules::{Advance, ScheduleRow};

/// Ticks of one schedule started per pass; the rest stay due for the next pass, so a
/// catch-up over a wide window cannot make one transaction huge.
pub const TICKS_PER_PASS: usize = 100;

/// One saga to start.
#[derive(Debug, Clone, PartialEq)]
pub struct Start {
    pub id: String,
    pub saga: String,
    pub input: Value,
}

/// The decision for one row: sagas to start and the row update (`None`: unchanged).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Decision {
    pub starts: Vec<Start>,
    pub advance: Option<Advance>,
}

/// The saga id of a tick: `<schedule>@<tick, RFC 3339 UTC, whole seconds>`.
pub fn tick_id(schedule: &str, tick: DateTime<Utc>) -> String {
    format!("{schedule}@{}", rfc3339(tick))
}

/// The saga id of a manual run: `<schedule>@manual-<request time>`.
pub fn manual_id(schedule: &str, requested: DateTime<Utc>) -> String {
    format!("{schedule}@manual-{}", rfc3339(requested))
}

/// Whether `id` has the form of a schedule run's id (`<schedule>@<time>` or
/// `<schedule>@manual-<time>`, the time in RFC 3339). Start events may not use such
/// ids: whoever can publish starts could otherwise create a schedule's next run ahead
/// of it (with a far-future `start_at`), and the real run would be ignored as a
/// duplicate.
pub fn is_run_id(id: &str) -> bool {
    let Some((schedule, at)) = id.rsplit_once('@') else {
        return false;
    };
    let at = at.strip_prefix("manual-").unwrap_or(at);
    !schedule.is_empty() && DateTime::parse_from_rfc3339(at).is_ok()
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The schedule's input with `scheduled_at` set to the tick, when the input is an
/// object; any other JSON value is passed as it is (there is nowhere to put the tick).
pub fn run_input(input: &Value, tick: DateTime<Utc>) -> Value {
    let mut input = input.clone();
    if let Value::Object(map) = &mut input {
        map.insert("scheduled_at".into(), Value::String(rfc3339(tick)));
    }
    input
}

/// Parses the stored overlap spelling.
pub fn parse_overlap(s: &str) -> Result<OverlapPolicy, String> {
    [
        OverlapPolicy::Skip,
        OverlapPolicy::BufferOne,
        OverlapPolicy::AllowAll,
    ]
    .into_iter()
    .find(|p| p.as_str() == s)
    .ok_or_else(|| format!("unknown overlap policy `{s}`: expected skip, buffer_one or allow_all"))
}

/// Decides one row. `previous_open`: the last run's saga exists and is not terminal.
/// `min_window` is the smallest catch-up window applied, so the polling lag alone
/// never turns a tick into a missed one. Errors name a row that cannot be read (a
/// cron, zone or policy written by hand); the caller leaves such a row alone.
pub fn decide(
    row: &ScheduleRow,
    previous_open: bool,
    now: DateTime<Utc>,
    min_window: Duration,
) -> Result<Decision, String> {
    let policy = parse_overlap(&row.overlap)?;
    let mut starts = vec![];
    let mut open = previous_open;
    // A manual run first: the operator asked for it now, whatever the policy says.
    if let Some(at) = row.trigger_requested_at {
        starts.push((manual_id(&row.name, at), at));
        open = true;
    }
    let mut next = row.next_fire_at;
    let mut missed = 0;
    let mut outcome = Outcome {
        buffered: row.buffered_tick,
        ..Outcome::default()
    };
    if !row.paused {
        let mut due = vec![];
        if let Some(at) = row.next_fire_at.filter(|at| *at <= now) {
            let cron = Cron::parse(&row.cron, parse_timezone(&row.timezone)?)?;
            let window =
                Duration::from_millis(row.catch_up_window_ms.max(0) as u64).max(min_window);
            let plan = cron.plan(at, now, window, TICKS_PER_PASS);
            (due, missed, next) = (plan.fire, plan.missed, plan.next);
        }
        outcome = overlap::resolve(policy, open, row.buffered_tick, &due);
    }
    starts.extend(outcome.starts.iter().map(|t| (tick_id(&row.name, *t), *t)));
    let unchanged = starts.is_empty()
        && missed == 0
        && outcome.skipped == 0
        && next == row.next_fire_at
        && outcome.buffered == row.buffered_tick;
    if unchanged {
        return Ok(Decision::default());
    }
    let advance = Advance {
        name: row.name.clone(),
        next_fire_at: next,
        last_fire: starts.last().map(|(id, at)| (*at, id.clone())),
        missed: i64::try_from(missed).unwrap_or(i64::MAX),
        skipped: outcome.skipped as i64,
        buffered_tick: outcome.buffered,
        trigger_done: row.trigger_requested_at.is_some(),
    };
    let starts = starts
        .into_iter()
        .map(|(id, at)| Start {
            id,
            saga: row.saga.clone(),
            input: run_input(&row.input, at),
        })
        .collect();
    Ok(Decision {
        starts,
        advance: Some(advance),
    })
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
