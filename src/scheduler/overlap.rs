//! Overlap decisions, no I/O: what due ticks do while the schedule's previous run is
//! still open (not in a terminal status).
//!
//! * `skip`: a tick that finds the previous run open is dropped and counted in
//!   `skipped_ticks`.
//! * `buffer_one`: the first such tick is kept (`buffered_tick`) and starts as soon as
//!   a pass sees the previous run ended; further ticks while one is buffered are
//!   dropped and counted.
//! * `allow_all`: every tick starts, whatever is running.

use chrono::{DateTime, Utc};

use crate::saga::definition::OverlapPolicy;

/// What one due tick does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TickAction {
    Start,
    Buffer,
    Skip,
}

/// The decision for one tick, given whether the previous run is open and whether a
/// tick is already buffered.
pub fn on_tick(policy: OverlapPolicy, previous_open: bool, buffered: bool) -> TickAction {
    match (policy, previous_open, buffered) {
        (OverlapPolicy::AllowAll, _, _) | (_, false, _) => TickAction::Start,
        (OverlapPolicy::Skip, true, _) => TickAction::Skip,
        (OverlapPolicy::BufferOne, true, false) => TickAction::Buffer,
        (OverlapPolicy::BufferOne, true, true) => TickAction::Skip,
    }
}

/// What a pass does for one schedule.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    /// Ticks to start now, oldest first.
    pub starts: Vec<DateTime<Utc>>,
    /// The tick left buffered after this pass.
    pub buffered: Option<DateTime<Utc>>,
    /// Ticks dropped because of the overlap policy.
    pub skipped: u64,
}

/// Resolves a buffered tick and the due ticks of one pass, oldest first. A run started
/// in this pass counts as open for the ticks after it: two ticks due at once under
/// `skip` start one saga, not two.
pub fn resolve(
    policy: OverlapPolicy,
    previous_open: bool,
    buffered: Option<DateTime<Utc>>,
    due: &[DateTime<Utc>],
) -> Outcome {
    let mut out = Outcome {
        buffered,
        ..Outcome::default()
    };
    let mut open = previous_open;
    // A buffered tick goes first: it is older than anything due now. It also starts
    // if the policy was changed to `allow_all` since it was buffered.
    if let Some(tick) = out.buffered {
        if !open || policy == OverlapPolicy::AllowAll {
            out.starts.push(tick);
            out.buffered = None;
            open = true;
        }
    }
    for &tick in due {
        match on_tick(policy, open, out.buffered.is_some()) {
            TickAction::Start => {
                out.starts.push(tick);
                open = true;
            }
            TickAction::Buffer => out.buffered = Some(tick),
            TickAction::Skip => out.skipped += 1,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use OverlapPolicy::*;
    use TickAction as A;

    fn t(s: u32) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + i64::from(s), 0).unwrap()
    }

    #[test]
    fn every_policy_open_and_buffer_combination() {
        let table = [
            (Skip, false, false, A::Start),
            (Skip, false, true, A::Start),
            (Skip, true, false, A::Skip),
            (Skip, true, true, A::Skip),
            (BufferOne, false, false, A::Start),
            (BufferOne, false, true, A::Start),
            (BufferOne, true, false, A::Buffer),
            (BufferOne, true, true, A::Skip),
            (AllowAll, false, false, A::Start),
            (AllowAll, false, true, A::Start),
            (AllowAll, true, false, A::Start),
            (AllowAll, true, true, A::Start),
        ];
        for (policy, open, buffered, want) in table {
            assert_eq!(
                on_tick(policy, open, buffered),
                want,
                "{policy:?} open={open} buffered={buffered}"
            );
        }
    }

    #[test]
    fn skip_starts_one_of_several_due_ticks_and_counts_the_rest() {
        let out = resolve(Skip, false, None, &[t(1), t(2), t(3)]);
        assert_eq!(out.starts, vec![t(1)]);
        assert_eq!((out.buffered, out.skipped), (None, 2));
        let out = resolve(Skip, true, None, &[t(1)]);
        assert_eq!((out.starts.len(), out.skipped), (0, 1));
    }

    #[test]
    fn buffer_one_keeps_the_first_tick_and_drops_later_ones() {
        let out = resolve(BufferOne, true, None, &[t(1), t(2), t(3)]);
        assert!(out.starts.is_empty());
        assert_eq!((out.buffered, out.skipped), (Some(t(1)), 2));
        let out = resolve(BufferOne, false, None, &[t(1), t(2), t(3)]);
        assert_eq!(out.starts, vec![t(1)]);
        assert_eq!((out.buffered, out.skipped), (Some(t(2)), 1));
    }

    #[test]
    fn a_buffered_tick_waits_for_the_run_to_end_then_starts_first() {
        let waiting = resolve(BufferOne, true, Some(t(1)), &[]);
        assert_eq!(
            waiting,
            Outcome {
                starts: vec![],
                buffered: Some(t(1)),
                skipped: 0
            }
        );
        let released = resolve(BufferOne, false, Some(t(1)), &[]);
        assert_eq!(released.starts, vec![t(1)]);
        assert_eq!(released.buffered, None);
        // Released, then a due tick finds it running and is buffered in its place.
        let both = resolve(BufferOne, false, Some(t(1)), &[t(5)]);
        assert_eq!(both.starts, vec![t(1)]);
        assert_eq!((both.buffered, both.skipped), (Some(t(5)), 0));
    }

    #[test]
    fn allow_all_starts_everything_and_releases_a_buffer_left_by_an_old_policy() {
        let out = resolve(AllowAll, true, Some(t(0)), &[t(1), t(2)]);
        assert_eq!(out.starts, vec![t(0), t(1), t(2)]);
        assert_eq!((out.buffered, out.skipped), (None, 0));
    }

    #[test]
    fn skip_releases_a_buffer_left_by_an_old_policy_once_the_run_ends() {
        assert_eq!(resolve(Skip, true, Some(t(0)), &[]).buffered, Some(t(0)));
        let out = resolve(Skip, false, Some(t(0)), &[t(1)]);
        assert_eq!(out.starts, vec![t(0)]);
        assert_eq!(out.skipped, 1);
    }
}
