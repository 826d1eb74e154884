//! The saga's audit trail: the typed events the machine records, one per thing
//! that happened, stored as `saga_history` rows and shown by the API, CLI and
//! dashboard.
//!
//! The stored spelling ([`HistoryEvent::as_str`]) is part of the public contract
//! (operators grep for it, the dashboard draws from it), so a variant is only ever
//! added, never renamed. Code that reacts to history (the metric tally, the
//! dashboard timeline) matches on the enum, so a new variant is a compile error
//! wherever it must be considered, not a string that silently matches nothing.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde_json::Value;

/// What happened. Where an event concerns one step (or branch), the entry's `step`
/// names it; `attempt` is set for the events of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HistoryEvent {
    /// A delayed start was stored; the saga runs at `detail.run_at`.
    SagaScheduled,
    SagaStarted,
    /// An activity step's first attempt was dispatched.
    StepStarted,
    StepCompleted,
    /// A step failed for good (`detail.reason`, `detail.error`).
    StepFailed,
    /// A step did not run: its `when` was false, or an operator skipped it
    /// (`detail.reason`).
    StepSkipped,
    /// A completed step names no compensation, so it could not be undone.
    StepNotCompensable,
    /// A worker reported it began an attempt.
    AttemptStarted,
    AttemptFailed,
    AttemptTimedOut,
    RetryScheduled,
    SleepStarted,
    SleepCompleted,
    WaitStarted,
    WaitCompleted,
    WaitTimedOut,
    SignalReceived,
    SignalBuffered,
    CancelRequested,
    SagaCompensating,
    CompensationStarted,
    CompensationAttemptFailed,
    CompensationCompleted,
    CompensationFailed,
    SagaCompleted,
    SagaCompensated,
    SagaFailed,
    SagaCancelled,
    OperatorAction,
    SagaResumed,
    /// A parallel step began: every branch was entered.
    ParallelStarted,
    /// A `for_each` step began: `detail.elements` elements, `max_concurrency` at a time.
    ForEachStarted,
    /// The stuck-saga reconciler found the saga with no timer, nothing in flight and
    /// no wait, and woke it once (written by the store, not the machine).
    StuckDetected,
}

impl HistoryEvent {
    pub const ALL: [HistoryEvent; 33] = [
        HistoryEvent::SagaScheduled,
        HistoryEvent::SagaStarted,
        HistoryEvent::StepStarted,
        HistoryEvent::StepCompleted,
        HistoryEvent::StepFailed,
        HistoryEvent::StepSkipped,
        HistoryEvent::StepNotCompensable,
        HistoryEvent::AttemptStarted,
        HistoryEvent::AttemptFailed,
        HistoryEvent::AttemptTimedOut,
        HistoryEvent::RetryScheduled,
        HistoryEvent::SleepStarted,
        HistoryEvent::SleepCompleted,
        HistoryEvent::WaitStarted,
        HistoryEvent::WaitCompleted,
        HistoryEvent::WaitTimedOut,
        HistoryEvent::SignalReceived,
        HistoryEvent::SignalBuffered,
        HistoryEvent::CancelRequested,
        HistoryEvent::SagaCompensating,
        HistoryEvent::CompensationStarted,
        HistoryEvent::CompensationAttemptFailed,
        HistoryEvent::CompensationCompleted,
        HistoryEvent::CompensationFailed,
        HistoryEvent::SagaCompleted,
        HistoryEvent::SagaCompensated,
        HistoryEvent::SagaFailed,
        HistoryEvent::SagaCancelled,
        HistoryEvent::OperatorAction,
        HistoryEvent::SagaResumed,
        HistoryEvent::ParallelStarted,
        HistoryEvent::ForEachStarted,
        HistoryEvent::StuckDetected,
    ];

    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        use HistoryEvent::*;
        match self {
            SagaScheduled => "saga_scheduled",
            SagaStarted => "saga_started",
            StepStarted => "step_started",
            StepCompleted => "step_completed",
            StepFailed => "step_failed",
            StepSkipped => "step_skipped",
            StepNotCompensable => "step_not_compensable",
            AttemptStarted => "attempt_started",
            AttemptFailed => "attempt_failed",
            AttemptTimedOut => "attempt_timed_out",
            RetryScheduled => "retry_scheduled",
            SleepStarted => "sleep_started",
            SleepCompleted => "sleep_completed",
            WaitStarted => "wait_started",
            WaitCompleted => "wait_completed",
            WaitTimedOut => "wait_timed_out",
            SignalReceived => "signal_received",
            SignalBuffered => "signal_buffered",
            CancelRequested => "cancel_requested",
            SagaCompensating => "saga_compensating",
            CompensationStarted => "compensation_started",
            CompensationAttemptFailed => "compensation_attempt_failed",
            CompensationCompleted => "compensation_completed",
            CompensationFailed => "compensation_failed",
            SagaCompleted => "saga_completed",
            SagaCompensated => "saga_compensated",
            SagaFailed => "saga_failed",
            SagaCancelled => "saga_cancelled",
            OperatorAction => "operator_action",
            SagaResumed => "saga_resumed",
            ParallelStarted => "parallel_started",
            ForEachStarted => "for_each_started",
            StuckDetected => "stuck_detected",
        }
    }

    /// The terminal status this event announces (`saga_completed` → `completed`).
    pub fn terminal_status(self) -> Option<&'static str> {
        use HistoryEvent::*;
        match self {
            SagaCompleted => Some("completed"),
            SagaCompensated => Some("compensated"),
            SagaFailed => Some("failed"),
            SagaCancelled => Some("cancelled"),
            _ => None,
        }
    }
}

impl fmt::Display for HistoryEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Compares with the stored spelling, so tests and callers holding a stored row's
/// event can ask `entry.event == "step_completed"`.
impl PartialEq<&str> for HistoryEvent {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl FromStr for HistoryEvent {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HistoryEvent::ALL
            .into_iter()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| format!("unknown history event `{s}`"))
    }
}

/// One line of the saga's audit trail.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    pub at: DateTime<Utc>,
    pub event: HistoryEvent,
    pub step: Option<String>,
    pub attempt: Option<u32>,
    pub detail: Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_round_trips_through_its_stored_spelling() {
        for e in HistoryEvent::ALL {
            assert_eq!(e.as_str().parse::<HistoryEvent>(), Ok(e));
        }
        let mut names: Vec<_> = HistoryEvent::ALL.iter().map(|e| e.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), HistoryEvent::ALL.len(), "spellings are unique");
        assert!("step_exploded".parse::<HistoryEvent>().is_err());
    }
}
