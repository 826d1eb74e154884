//! Tick maths, no I/O: which ticks of a cron schedule are due, which were missed, and
//! when the schedule fires next. Time is always an argument.
//!
//! A *tick* is an instant (UTC, whole seconds) whose wall-clock time in the schedule's
//! zone matches the cron expression. Daylight saving follows from that definition:
//! a wall-clock time that does not exist (Europe/Berlin 02:30 on the last Sunday of
//! March) has no instant, so it never fires; a wall-clock time that happens twice
//! (02:30 on the last Sunday of October) is two instants, so it fires twice, an hour
//! apart. The `cron` crate's own iterator walks local time and yields the repeated
//! hour out of order, so this module enumerates with a fixed UTC offset between the
//! zone's offset changes instead, which keeps ticks strictly increasing.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, FixedOffset, Offset, TimeZone, Utc};
use chrono_tz::Tz;

use crate::saga::definition::normalize_cron;

/// Missed ticks counted one by one before the rest is estimated; keeps a catch-up
/// after months of downtime from walking millions of every-second ticks.
pub const MISSED_COUNT_LIMIT: u64 = 10_000;

/// Offsets are probed at most this far apart while looking for a zone's offset change
/// between two ticks. No zone changes its offset twice within a day.
const OFFSET_PROBE: chrono::Duration = chrono::Duration::days(1);

/// A cron expression in a time zone.
#[derive(Debug, Clone)]
pub struct Cron {
    schedule: cron::Schedule,
    tz: Tz,
}

/// What to do with one schedule now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Due ticks inside the catch-up window, oldest first (at most the limit asked for).
    pub fire: Vec<DateTime<Utc>>,
    /// Due ticks older than the catch-up window: skipped and counted. Exact up to
    /// [`MISSED_COUNT_LIMIT`], estimated from the average tick spacing beyond it.
    pub missed: u64,
    /// The first tick not handled by this plan; `None` when the schedule never fires again.
    pub next: Option<DateTime<Utc>>,
}

/// Parses an IANA zone name (`Europe/Berlin`, `UTC`).
pub fn parse_timezone(name: &str) -> Result<Tz, String> {
    Tz::from_str(name).map_err(|_| {
        format!("unknown time zone `{name}`: expected an IANA name like UTC or Europe/Berlin")
    })
}

impl Cron {
    /// Parses any expression [`normalize_cron`] accepts (5-field crontab, 6/7 fields with
    /// seconds, `@daily`).
    pub fn parse(expr: &str, tz: Tz) -> Result<Cron, String> {
        let normalised = normalize_cron(expr)?;
        let schedule = cron::Schedule::from_str(&normalised).map_err(|e| e.to_string())?;
        Ok(Cron { schedule, tz })
    }

    /// The first tick strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut from = t;
        let mut offset = self.offset_at(t);
        // Each round either returns or moves past one offset change; the bound only
        // guards against a zone table that changes its offset every second.
        for _ in 0..64 {
            let fixed = FixedOffset::east_opt(offset)?;
            let candidate = self.schedule.after(&from.with_timezone(&fixed)).next()?;
            let candidate = candidate.with_timezone(&Utc);
            match self.offset_change(from, candidate, offset) {
                None => return Some(candidate),
                // No tick in (from, change) with the old offset: the candidate is past it.
                // Look again from the change with the new offset.
                Some(change) => {
                    from = change - chrono::Duration::seconds(1);
                    offset = self.offset_at(change);
                }
            }
        }
        None
    }

    /// The first tick at or after `t`.
    pub fn first_at_or_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Ticks are whole seconds: "strictly after the previous whole second" is ">= t"
        // when `t` is a whole second, and "> t" otherwise.
        let whole = t.timestamp();
        let at = DateTime::from_timestamp(whole, 0)?;
        if at == t {
            self.next_after(at - chrono::Duration::seconds(1))
        } else {
            self.next_after(at)
        }
    }

    /// Plans a scheduler pass: `due` is the first tick not yet handled (stored as the
    /// schedule's next fire time). Ticks from `due` up to `now` are due; those older
    /// than `now - window` are missed, the others fire, at most `limit` of them (the
    /// rest stay due for the next pass).
    pub fn plan(
        &self,
        due: DateTime<Utc>,
        now: DateTime<Utc>,
        window: Duration,
        limit: usize,
    ) -> Plan {
        if due > now {
            return Plan {
                fire: vec![],
                missed: 0,
                next: Some(due),
            };
        }
        let window = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
        let cutoff = now.checked_sub_signed(window).unwrap_or(due);
        let missed = if due < cutoff {
            self.count_between(due, cutoff)
        } else {
            0
        };
        let mut next = self.first_at_or_after(due.max(cutoff));
        let mut fire = vec![];
        while let Some(t) = next {
            if t > now || fire.len() >= limit {
                break;
            }
            fire.push(t);
            next = self.next_after(t);
        }
        Plan { fire, missed, next }
    }

    /// Ticks in `[from, to)`: counted up to [`MISSED_COUNT_LIMIT`], then extrapolated
    /// from the spacing of the counted ones (exact for evenly spaced schedules).
    pub fn count_between(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> u64 {
        let Some(first) = self.first_at_or_after(from) else {
            return 0;
        };
        let mut n = 0;
        let mut tick = Some(first);
        while let Some(t) = tick {
            if t >= to {
                return n;
            }
            n += 1;
            if n == MISSED_COUNT_LIMIT {
                return n + extrapolate(first, t, n, to);
            }
            tick = self.next_after(t);
        }
        n
    }

    /// The zone's UTC offset at `t`, in seconds.
    fn offset_at(&self, t: DateTime<Utc>) -> i32 {
        self.tz
            .offset_from_utc_datetime(&t.naive_utc())
            .fix()
            .local_minus_utc()
    }

    fn offset_at_second(&self, second: i64) -> i32 {
        DateTime::from_timestamp(second, 0).map_or(0, |t| self.offset_at(t))
    }

    /// The first whole second in `(from, to]` whose offset differs from `offset`. Works
    /// on whole seconds (zone changes fall on them), so the search always narrows.
    fn offset_change(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        offset: i32,
    ) -> Option<DateTime<Utc>> {
        let probe = OFFSET_PROBE.num_seconds();
        let (mut lo, to) = (from.timestamp(), to.timestamp());
        while lo < to {
            let hi = (lo + probe).min(to);
            if self.offset_at_second(hi) != offset {
                return DateTime::from_timestamp(self.bisect(lo, hi, offset), 0);
            }
            lo = hi;
        }
        None
    }

    /// The first second in `(lo, hi]` whose offset differs from `offset`, given that
    /// `hi`'s does and at most one change lies in between.
    fn bisect(&self, mut lo: i64, mut hi: i64, offset: i32) -> i64 {
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.offset_at_second(mid) != offset {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        hi
    }
}

/// Ticks in `(last, to)` estimated from `n` ticks spanning `first..=last`.
fn extrapolate(first: DateTime<Utc>, last: DateTime<Utc>, n: u64, to: DateTime<Utc>) -> u64 {
    let spacing = (last - first).num_milliseconds() as f64 / (n - 1) as f64;
    let rest = (to - last).num_milliseconds() as f64;
    if spacing <= 0.0 || rest <= 0.0 {
        return 0;
    }
    ((rest / spacing).ceil() - 1.0).max(0.0) as u64
}

#[cfg(test)]
#[path = "cron_tests.rs"]
mod tests;
