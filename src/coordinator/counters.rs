//! Tallying metric counters from the history a batch writes: sagas started and
//! finished, retries, failed attempts, and how long finished task chains took. Pure,
//! so the tally is a unit test; the coordinator adds the result to `metric_counters`
//! in the batch's transaction.

use std::collections::BTreeMap;

use crate::saga::history::{HistoryEntry, HistoryEvent as E};
use crate::store::counters::{labels, Delta};

/// Upper bounds (seconds) of the step duration histogram.
pub const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
];

/// The stored counter of the step duration histogram's buckets: a step counts once,
/// in the bucket its duration falls in (the smallest `le` it does not exceed, or
/// `+Inf`), and `/metrics` adds these up into Prometheus' cumulative `_bucket`
/// samples (`api::metrics`). Counting a step in every bucket at or above its
/// duration, as Prometheus exposes them, sent 16 bucket rows per completed step
/// with every batch, a tenth of the coordinator's CPU in a burst.
pub const STEP_DURATION_IN_BUCKET: &str = "sagaflow_step_duration_seconds_in_bucket";

/// The `le` label of the bucket `secs` falls in (see [`STEP_DURATION_IN_BUCKET`]).
pub fn bucket_of(secs: f64) -> String {
    DURATION_BUCKETS
        .iter()
        .find(|le| secs <= **le)
        .map_or_else(|| "+Inf".to_string(), ToString::to_string)
}

/// Counter increments for `entries`, each with the name of its saga's definition.
pub fn tally<'a>(entries: impl IntoIterator<Item = (&'a str, &'a HistoryEntry)>) -> Vec<Delta> {
    let mut sums: BTreeMap<(&'static str, String), f64> = BTreeMap::new();
    let mut add =
        |name: &'static str, labels: String, v: f64| *sums.entry((name, labels)).or_default() += v;
    for (saga, h) in entries {
        let activity = h
            .detail
            .get("activity")
            .and_then(|a| a.as_str())
            .unwrap_or("");
        match h.event {
            E::SagaStarted => add(
                "sagaflow_sagas_started_total",
                labels(&[("saga", saga)]),
                1.0,
            ),
            E::SagaCompleted | E::SagaCompensated | E::SagaFailed | E::SagaCancelled => {
                let status = h.event.terminal_status().unwrap_or_default();
                add(
                    "sagaflow_sagas_finished_total",
                    labels(&[("saga", saga), ("status", status)]),
                    1.0,
                )
            }
            E::RetryScheduled => add(
                "sagaflow_retries_total",
                labels(&[("activity", activity)]),
                1.0,
            ),
            E::AttemptFailed | E::CompensationAttemptFailed | E::AttemptTimedOut => add(
                "sagaflow_attempts_failed_total",
                labels(&[("activity", activity)]),
                1.0,
            ),
            E::StepCompleted | E::CompensationCompleted => {
                let Some(ms) = h.detail.get("duration_ms").and_then(|d| d.as_f64()) else {
                    continue;
                };
                let secs = ms / 1000.0;
                add(
                    STEP_DURATION_IN_BUCKET,
                    labels(&[("activity", activity), ("le", &bucket_of(secs))]),
                    1.0,
                );
                add(
                    "sagaflow_step_duration_seconds_sum",
                    labels(&[("activity", activity)]),
                    secs,
                );
                add(
                    "sagaflow_step_duration_seconds_count",
                    labels(&[("activity", activity)]),
                    1.0,
                );
            }
            _ => {}
        }
    }
    sums.into_iter()
        .map(|((name, labels), value)| Delta {
            name,
            labels,
            value,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use serde_json::{json, Value};

    fn h(event: &str, detail: Value) -> HistoryEntry {
        HistoryEntry {
            at: Utc::now(),
            event: event.parse().unwrap(),
            step: None,
            attempt: None,
            detail,
        }
    }

    fn value(deltas: &[Delta], name: &str, labels: &str) -> f64 {
        deltas
            .iter()
            .find(|d| d.name == name && d.labels == labels)
            .map(|d| d.value)
            .unwrap_or(0.0)
    }

    #[test]
    fn tallies_sagas_retries_failures_and_durations() {
        let entries = [
            h("saga_started", json!({})),
            h("retry_scheduled", json!({"activity": "pay"})),
            h("attempt_failed", json!({"activity": "pay"})),
            h("attempt_timed_out", json!({"activity": "pay"})),
            h(
                "step_completed",
                json!({"activity": "pay", "duration_ms": 300}),
            ),
            h(
                "step_completed",
                json!({"activity": "pay", "duration_ms": 4000}),
            ),
            h("saga_compensated", json!({})),
            h("sleep_completed", json!({})),
        ];
        let d = tally(entries.iter().map(|e| ("order", e)));
        assert_eq!(
            value(&d, "sagaflow_sagas_started_total", "saga=\"order\""),
            1.0
        );
        assert_eq!(
            value(
                &d,
                "sagaflow_sagas_finished_total",
                "saga=\"order\",status=\"compensated\""
            ),
            1.0
        );
        assert_eq!(value(&d, "sagaflow_retries_total", "activity=\"pay\""), 1.0);
        assert_eq!(
            value(&d, "sagaflow_attempts_failed_total", "activity=\"pay\""),
            2.0
        );
        let in_bucket = |le: &str| {
            value(
                &d,
                STEP_DURATION_IN_BUCKET,
                &format!("activity=\"pay\",le=\"{le}\""),
            )
        };
        assert_eq!(in_bucket("0.25"), 0.0);
        assert_eq!(in_bucket("0.5"), 1.0, "300 ms");
        assert_eq!(in_bucket("5"), 1.0, "4 s");
        assert_eq!(in_bucket("+Inf"), 0.0);
        let buckets = d
            .iter()
            .filter(|d| d.name == STEP_DURATION_IN_BUCKET)
            .count();
        assert_eq!(buckets, 2, "one bucket row per step: {d:?}");
        assert_eq!(
            value(&d, "sagaflow_step_duration_seconds_sum", "activity=\"pay\""),
            4.3
        );
        assert_eq!(
            value(
                &d,
                "sagaflow_step_duration_seconds_count",
                "activity=\"pay\""
            ),
            2.0
        );
    }

    #[test]
    fn a_duration_falls_in_the_smallest_bucket_it_does_not_exceed() {
        assert_eq!(bucket_of(0.0), "0.005");
        assert_eq!(bucket_of(0.005), "0.005");
        assert_eq!(bucket_of(0.0051), "0.01");
        assert_eq!(bucket_of(1800.0), "1800");
        assert_eq!(bucket_of(1800.5), "+Inf");
    }

    #[test]
    fn deltas_are_sorted_and_labels_escaped() {
        let entries = [
            h("retry_scheduled", json!({"activity": "b"})),
            h("retry_scheduled", json!({"activity": "a\"x"})),
        ];
        let d = tally(entries.iter().map(|e| ("s", e)));
        let keys: Vec<&str> = d.iter().map(|d| d.labels.as_str()).collect();
        assert_eq!(keys, vec!["activity=\"a\\\"x\"", "activity=\"b\""]);
    }
}
