//! The pure bookkeeping of a benchmark run: when each saga started and ended (a
//! saga event may arrive twice, the outbox relay publishes at least once), the
//! latency quantiles, the closed loop's refill and the open loop's pacing schedule.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use super::quantile;

/// When each saga of a run started and ended, and how.
#[derive(Debug, Default)]
pub struct Tally {
    started: HashMap<String, Instant>,
    ended: HashMap<String, (Instant, String)>,
    first_start: Option<Instant>,
    last_end: Option<Instant>,
}

impl Tally {
    /// Records that `id` was started at `at` (taken before its start is published,
    /// so its terminal event can never arrive first).
    pub fn started(&mut self, id: String, at: Instant) {
        self.first_start.get_or_insert(at);
        self.started.entry(id).or_insert(at);
    }

    /// Records the terminal event of `id`; false (and nothing recorded) for a
    /// repeated event or a saga this run did not start.
    pub fn ended(&mut self, id: &str, status: &str, at: Instant) -> bool {
        if !self.started.contains_key(id) || self.ended.contains_key(id) {
            return false;
        }
        self.ended.insert(id.to_string(), (at, status.to_string()));
        self.last_end = Some(at);
        true
    }

    pub fn started_count(&self) -> usize {
        self.started.len()
    }

    pub fn ended_count(&self) -> usize {
        self.ended.len()
    }

    /// From the first start to the last terminal event (zero before both).
    pub fn window(&self) -> Duration {
        match (self.first_start, self.last_end) {
            (Some(a), Some(b)) => b.saturating_duration_since(a),
            _ => Duration::ZERO,
        }
    }

    /// Ended sagas by status.
    pub fn statuses(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for (_, status) in self.ended.values() {
            *out.entry(status.clone()).or_default() += 1;
        }
        out
    }

    /// Start-to-end latency of every ended saga in ms, sorted.
    pub fn latencies_ms(&self) -> Vec<f64> {
        let mut v: Vec<f64> = self
            .ended
            .iter()
            .filter_map(|(id, (end, _))| {
                let start = self.started.get(id)?;
                Some(end.saturating_duration_since(*start).as_secs_f64() * 1000.0)
            })
            .collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v
    }
}

/// p50, p95, p99 and max of sorted values, rounded to whole ms; `prefix` names them
/// (`latency` gives `latency_p50_ms` …). NaN (no values) becomes null in the JSON.
pub fn quantiles(prefix: &str, sorted: &[f64]) -> serde_json::Map<String, serde_json::Value> {
    let max = sorted.last().copied().unwrap_or(f64::NAN);
    [
        ("p50", quantile(sorted, 0.50)),
        ("p95", quantile(sorted, 0.95)),
        ("p99", quantile(sorted, 0.99)),
        ("max", max),
    ]
    .into_iter()
    .map(|(q, v)| (format!("{prefix}_{q}_ms"), serde_json::json!(v.round())))
    .collect()
}

/// Closed loop: how many sagas to start now to have `concurrency` in flight, never
/// more than `total` in all.
pub fn refill(concurrency: usize, started: usize, ended: usize, total: usize) -> usize {
    let in_flight = started.saturating_sub(ended);
    concurrency
        .saturating_sub(in_flight)
        .min(total.saturating_sub(started))
}

/// Open loop: when start `i` is due, from the beginning of the run, at `rate` starts
/// per second (start 0 at once).
pub fn due_at(i: usize, rate: f64) -> Duration {
    Duration::from_secs_f64(i as f64 / rate)
}

/// Open loop: how many of `total` starts are due `elapsed` after the beginning: every
/// `i` with [`due_at`]`(i) <= elapsed`.
pub fn due_by(elapsed: Duration, rate: f64, total: usize) -> usize {
    // The float product can land just below a whole number at a due instant; count
    // up while the next start is due by `due_at`'s own arithmetic.
    let mut n = ((elapsed.as_secs_f64() * rate).floor() as usize).min(total);
    while n < total && due_at(n, rate) <= elapsed {
        n += 1;
    }
    n
}

/// Open loop: the publisher's tick, one per start, but no finer than 1 ms (the
/// timer's resolution); a tick publishes every start due by then.
pub fn tick(rate: f64) -> Duration {
    Duration::from_secs_f64(1.0 / rate).max(Duration::from_millis(1))
}

/// A start published more than this after its due instant is late (a slow confirm,
/// a busy core held the publisher up).
pub const LATE_AFTER: Duration = Duration::from_millis(10);

/// Open loop: whether the publisher fell behind its schedule — more than 1 % of the
/// starts late. A few late starts are a stall it caught up from (the next tick
/// publishes everything due); more mean the offered rate was not the rate intended,
/// and the run measured less load than it says.
pub fn fell_behind(late: usize, total: usize) -> bool {
    late * 100 > total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_or_unknown_event_is_not_counted() {
        let t0 = Instant::now();
        let mut t = Tally::default();
        t.started("a".into(), t0);
        t.started("b".into(), t0 + Duration::from_millis(5));
        assert!(t.ended("a", "completed", t0 + Duration::from_millis(40)));
        assert!(!t.ended("a", "completed", t0 + Duration::from_millis(90)));
        assert!(!t.ended("zz", "completed", t0 + Duration::from_millis(90)));
        assert!(t.ended("b", "compensated", t0 + Duration::from_millis(25)));
        assert_eq!((t.started_count(), t.ended_count()), (2, 2));
        assert_eq!(t.latencies_ms(), vec![20.0, 40.0]);
        assert_eq!(t.window(), Duration::from_millis(25));
        assert_eq!(
            t.statuses(),
            BTreeMap::from([("compensated".into(), 1), ("completed".into(), 1)])
        );
    }

    #[test]
    fn an_empty_tally_has_no_window() {
        assert_eq!(Tally::default().window(), Duration::ZERO);
        assert!(Tally::default().latencies_ms().is_empty());
    }

    #[test]
    fn quantiles_are_named_and_rounded() {
        let v: Vec<f64> = (1..=200).map(|i| f64::from(i) + 0.4).collect();
        let q = quantiles("latency", &v);
        assert_eq!(q["latency_p50_ms"], 101.0);
        assert_eq!(q["latency_p95_ms"], 190.0);
        assert_eq!(q["latency_p99_ms"], 198.0);
        assert_eq!(q["latency_max_ms"], 200.0);
        assert!(quantiles("lag", &[])["lag_max_ms"].is_null());
    }

    #[test]
    fn refill_keeps_n_in_flight_up_to_the_total() {
        assert_eq!(refill(16, 0, 0, 100), 16);
        assert_eq!(refill(16, 16, 3, 100), 3);
        assert_eq!(refill(16, 98, 90, 100), 2);
        assert_eq!(refill(16, 100, 99, 100), 0);
        assert_eq!(refill(4, 10, 3, 20), 0);
    }

    #[test]
    fn the_schedule_spreads_starts_evenly() {
        assert_eq!(due_at(0, 100.0), Duration::ZERO);
        assert_eq!(due_at(150, 100.0), Duration::from_millis(1500));
        assert_eq!(due_by(Duration::ZERO, 100.0, 1000), 1);
        assert_eq!(due_by(Duration::from_micros(9_999), 100.0, 1000), 1);
        assert_eq!(due_by(Duration::from_millis(10), 100.0, 1000), 2);
        assert_eq!(due_by(Duration::from_secs(3600), 100.0, 1000), 1000);
    }

    #[test]
    fn every_start_is_due_at_its_own_instant_whatever_the_rate() {
        for rate in [0.5, 3.0, 7.0, 100.0, 333.0, 2500.0] {
            for i in 0..2000 {
                let n = due_by(due_at(i, rate), rate, usize::MAX);
                assert_eq!(n, i + 1, "rate {rate}, start {i}");
            }
        }
    }

    #[test]
    fn more_than_one_percent_late_is_behind() {
        assert!(!fell_behind(0, 2000));
        assert!(!fell_behind(20, 2000));
        assert!(fell_behind(21, 2000));
        assert!(fell_behind(1, 50));
    }

    #[test]
    fn the_tick_is_one_start_but_at_least_a_millisecond() {
        assert_eq!(tick(100.0), Duration::from_millis(10));
        assert_eq!(tick(5000.0), Duration::from_millis(1));
        assert_eq!(tick(0.5), Duration::from_secs(2));
    }
}
