//! Where a step's time goes inside the processes, hop by hop: a latency histogram per
//! hop, kept in atomics (recording is a few relaxed adds, free enough for every
//! batch) and served on the process's own `/metrics` as `sagaflow_hop_seconds`.
//! What the histograms do not cover of a step's round trip is the broker's
//! delivery and the queueing between hops.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// One measured hop of a step's round trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hop {
    /// Coordinator: a batch of inputs taken → parsed, applied and committed.
    CoordinatorCommit,
    /// Coordinator: committed outbox rows taken by the relay → confirmed by the broker.
    OutboxPublish,
    /// Worker: a batch of tasks taken → its ledger lookup answered.
    LedgerLookup,
    /// Worker: the handler of one task.
    Handler,
    /// Worker: a batch of finished tasks → its ledger write committed.
    LedgerWrite,
    /// Worker: results published → confirmed by the broker.
    ResultPublish,
}

const HOPS: [Hop; 6] = [
    Hop::CoordinatorCommit,
    Hop::OutboxPublish,
    Hop::LedgerLookup,
    Hop::Handler,
    Hop::LedgerWrite,
    Hop::ResultPublish,
];

impl Hop {
    /// The `hop` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Hop::CoordinatorCommit => "coordinator_commit",
            Hop::OutboxPublish => "outbox_publish",
            Hop::LedgerLookup => "ledger_lookup",
            Hop::Handler => "handler",
            Hop::LedgerWrite => "ledger_write",
            Hop::ResultPublish => "result_publish",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Upper bounds (seconds) of the buckets: sub-millisecond resolution where a hop at
/// low load lives, up to the seconds an outage or a slow handler takes.
pub const BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0,
];

#[derive(Default)]
struct Histogram {
    /// Per bucket (not cumulative); the last slot counts what is above every bound.
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

/// The histograms of every hop; share it behind an `Arc` (see `health::Health`).
#[derive(Default)]
pub struct Hops {
    hops: [Histogram; HOPS.len()],
}

impl Hops {
    pub fn record(&self, hop: Hop, took: Duration) {
        let h = &self.hops[hop.index()];
        let secs = took.as_secs_f64();
        let slot = BUCKETS
            .iter()
            .position(|le| secs <= *le)
            .unwrap_or(BUCKETS.len());
        h.counts[slot].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        h.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Prometheus text of the hops that were recorded at least once (a coordinator
    /// has no worker hops and shows none).
    pub fn exposition(&self, role: &str) -> String {
        let mut out = String::new();
        for hop in HOPS {
            let h = &self.hops[hop.index()];
            let counts: Vec<u64> = h.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
            let total: u64 = counts.iter().sum();
            if total == 0 {
                continue;
            }
            if out.is_empty() {
                out.push_str("# HELP sagaflow_hop_seconds Time spent in one hop of a step's round trip inside this process.\n# TYPE sagaflow_hop_seconds histogram\n");
            }
            let labels = format!("role=\"{role}\",hop=\"{}\"", hop.as_str());
            let mut cumulative = 0;
            for (le, n) in BUCKETS.iter().zip(&counts) {
                cumulative += n;
                out.push_str(&format!(
                    "sagaflow_hop_seconds_bucket{{{labels},le=\"{le}\"}} {cumulative}\n"
                ));
            }
            out.push_str(&format!(
                "sagaflow_hop_seconds_bucket{{{labels},le=\"+Inf\"}} {total}\n"
            ));
            let sum = h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
            out.push_str(&format!("sagaflow_hop_seconds_sum{{{labels}}} {sum}\n"));
            out.push_str(&format!("sagaflow_hop_seconds_count{{{labels}}} {total}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hops_index_their_own_histogram() {
        for (i, hop) in HOPS.iter().enumerate() {
            assert_eq!(hop.index(), i);
        }
    }

    #[test]
    fn exposition_is_cumulative_with_sum_and_count() {
        let h = Hops::default();
        h.record(Hop::Handler, Duration::from_micros(80));
        h.record(Hop::Handler, Duration::from_millis(3));
        h.record(Hop::Handler, Duration::from_secs(60));
        let text = h.exposition("worker");
        let line = |le: &str| {
            format!("sagaflow_hop_seconds_bucket{{role=\"worker\",hop=\"handler\",le=\"{le}\"}}")
        };
        assert!(text.contains(&format!("{} 1\n", line("0.0001"))), "{text}");
        assert!(text.contains(&format!("{} 1\n", line("0.0025"))), "{text}");
        assert!(text.contains(&format!("{} 2\n", line("0.005"))), "{text}");
        assert!(text.contains(&format!("{} 2\n", line("30"))), "{text}");
        assert!(text.contains(&format!("{} 3\n", line("+Inf"))), "{text}");
        assert!(text.contains("sagaflow_hop_seconds_count{role=\"worker\",hop=\"handler\"} 3\n"));
        assert!(
            text.contains("sagaflow_hop_seconds_sum{role=\"worker\",hop=\"handler\"} 60.00308\n")
        );
        assert!(
            !text.contains("coordinator_commit"),
            "unrecorded hops are left out"
        );
    }

    #[test]
    fn nothing_recorded_exposes_nothing() {
        assert_eq!(Hops::default().exposition("coordinator"), "");
    }
}
