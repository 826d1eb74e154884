//! Activity timeouts: which deadlines apply to the active attempt, arming the
//! earliest one in `wake_at`, and what happens when one passes; plus the worker's
//! `started` and heartbeat reports that move them.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::units::Unit;
use super::{to_chrono, HistoryEvent, Run};
use crate::messages::{ErrorInfo, TaskKind};
use crate::saga::state::ActiveTask;

/// The four activity timeouts, in the order they are checked when several are due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timeout {
    ScheduleToClose,
    ScheduleToStart,
    StartToClose,
    Heartbeat,
    /// The attempt never reported back at all (see [`NO_ANSWER_ALLOWANCE`]).
    NoAnswer,
}

/// How long past its start-to-close an attempt may go unanswered when nothing else
/// bounds it: a step without `schedule_to_start` gets no `started` report, so the
/// coordinator cannot tell queueing from running, and without this deadline a task
/// that was lost (its worker died with it, a broker lost it) would leave its saga
/// waiting for ever. The allowance covers queueing behind a backlog; a step that needs
/// a tighter bound sets `schedule_to_start`.
pub const NO_ANSWER_ALLOWANCE: std::time::Duration = std::time::Duration::from_secs(300);

impl Timeout {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Timeout::ScheduleToClose => "schedule_to_close",
            Timeout::ScheduleToStart => "schedule_to_start",
            Timeout::StartToClose => "start_to_close",
            Timeout::Heartbeat => "heartbeat",
            Timeout::NoAnswer => "no_answer",
        }
    }
}

impl Run<'_> {
    /// The deadlines of the active attempt that apply now. Schedule-to-close holds from
    /// the first attempt; the others need the attempt dispatched, and start-to-close
    /// and heartbeat need the worker's `started` report. Every dispatched attempt has
    /// at least one: schedule-to-start, or else the no-answer deadline.
    pub(super) fn deadlines(&self, a: &ActiveTask) -> Vec<(DateTime<Utc>, Timeout)> {
        let mut out = Vec::new();
        if let Some(d) = self.schedule_to_close(a) {
            out.push((d, Timeout::ScheduleToClose));
        }
        let Some(t) = self.activity_of(Unit::of(a)).map(|s| &s.timeouts) else {
            return out;
        };
        if a.dispatch_at.is_some() {
            return out;
        }
        match a.started_at {
            None => match (t.schedule_to_start, a.scheduled_at) {
                (Some(sts), Some(at)) => out.push((at + to_chrono(sts), Timeout::ScheduleToStart)),
                (None, Some(at)) => out.push((
                    at + to_chrono(t.start_to_close) + to_chrono(NO_ANSWER_ALLOWANCE),
                    Timeout::NoAnswer,
                )),
                (_, None) => {}
            },
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

    /// Records the earliest deadline of chain `task_id`, so `wake_at` covers it.
    pub(super) fn arm_timeouts(&mut self, task_id: &str) {
        let Some(i) = self.task_index(task_id) else {
            return;
        };
        let at = self
            .deadlines(&self.state.tasks[i])
            .into_iter()
            .map(|(d, _)| d)
            .min();
        self.state.tasks[i].timeout_at = at;
    }

    /// The first timeout of the active attempt that has passed, if any.
    pub(super) fn due_timeout(&self, a: &ActiveTask) -> Option<Timeout> {
        let mut due: Vec<(DateTime<Utc>, Timeout)> = self
            .deadlines(a)
            .into_iter()
            .filter(|(d, _)| *d <= self.now)
            .collect();
        due.sort_by_key(|(_, kind)| *kind as u8);
        due.first().map(|(_, kind)| *kind)
    }

    /// An activity timeout fired: the attempt failed (schedule-to-close: the step).
    pub(super) fn on_timeout(&mut self, active: &ActiveTask, kind: Timeout) {
        let error = ErrorInfo {
            code: format!("timeout.{}", kind.as_str()),
            message: format!("{} timeout of attempt {}", kind.as_str(), active.attempt),
            retryable: kind != Timeout::ScheduleToClose,
        };
        self.record(
            HistoryEvent::AttemptTimedOut,
            Some(Unit::of(active)),
            Some(active.attempt),
            json!({ "timeout": kind.as_str(), "kind": active.kind, "activity": active.activity }),
        );
        if kind == Timeout::ScheduleToClose {
            return match active.kind {
                TaskKind::Action => self.fail_unit(Unit::of(active), error, "schedule_to_close"),
                TaskKind::Compensation => {
                    self.fail_compensation(Unit::of(active), error, "schedule_to_close")
                }
            };
        }
        self.after_failure(active, error);
    }

    /// A `started` report or a heartbeat of the active attempt: moves its deadlines.
    pub(super) fn on_progress(
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
        let Some(i) = self.task_index(task_id) else {
            return;
        };
        let a = &mut self.state.tasks[i];
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
        if started {
            self.record(
                HistoryEvent::AttemptStarted,
                Some(Unit::of(&active)),
                Some(active.attempt),
                json!({}),
            );
        }
        self.touched = true;
        self.arm_timeouts(task_id);
    }
}
