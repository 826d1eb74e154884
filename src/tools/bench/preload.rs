//! `sagaflow bench --preload N`: N finished sagas of the benchmark's own definition
//! in the database before the timed run, to check that throughput and latency stay
//! flat as the tables grow. Each is a copy of one saga run through the machine with
//! the demo worker's answers ([`super::workload::simulate`]): its `sagas` row, its
//! history rows and the ledger rows its completed tasks leave, as the engine writes
//! them. The copying is set-based in Postgres ([`crate::store::bench`]).

use std::time::Instant;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::workload::simulate;
use crate::saga::definition::Definition;
use crate::store::bench::{
    Copies, FinishedTemplate, TemplateHistory, TemplateLedger, ID_PLACEHOLDER,
};

/// `sagaflow bench` preloads ids `p-<i>` (the timed run's are `b-<i>`).
pub const PREFIX: &str = "p-";

/// Sagas per transaction: big enough that statement overhead vanishes, small enough
/// that one transaction's sort and WAL stay modest.
const CHUNK: usize = 50_000;

/// The preloaded sagas started this far apart, the last one ending just before now.
const SPACING_US: i64 = 1000;

/// The template every preloaded saga copies: saga [`ID_PLACEHOLDER`] of `def`, its
/// times as offsets from its start.
pub fn template(def: &Definition) -> Result<FinishedTemplate, String> {
    let t0: DateTime<Utc> = DateTime::UNIX_EPOCH;
    let s = simulate(def, ID_PLACEHOLDER, t0)?;
    let us = |at: DateTime<Utc>| (at - t0).num_microseconds().unwrap_or(0);
    let text = |v: &serde_json::Value| v.to_string();
    let history: Vec<TemplateHistory> = s
        .history
        .iter()
        .map(|h| TemplateHistory {
            offset_us: us(h.at),
            event: h.event.to_string(),
            step: h.step.clone(),
            attempt: h.attempt.map(|a| a as i32),
            detail: text(&h.detail),
        })
        .collect();
    // A worker records a task's output in the ledger when the task completes: about
    // one hop after it was scheduled, as the simulation answers.
    let ledger = s
        .tasks
        .iter()
        .filter_map(|(task, result)| {
            let output = result.as_ref().ok()?;
            Some(TemplateLedger {
                offset_us: us(task.scheduled_at) + 1000,
                key: task.idempotency_key.clone(),
                task_id: task.task_id.clone(),
                output: text(output),
            })
        })
        .collect();
    let state = serde_json::to_string(&s.state).map_err(|e| e.to_string())?;
    Ok(FinishedTemplate {
        saga: s.state.saga.clone(),
        version: s.state.version as i32,
        status: s.state.status.as_str().to_string(),
        state,
        duration_us: history.last().map_or(0, |h| h.offset_us),
        history,
        ledger,
    })
}

/// The chunks of `0..n` preloaded one transaction each, as inclusive ranges.
pub fn chunks(n: usize, size: usize) -> Vec<(i64, i64)> {
    (0..n)
        .step_by(size.max(1))
        .map(|from| (from as i64, (from + size).min(n) as i64 - 1))
        .collect()
}

/// Writes `n` finished sagas of `def`, ids `<prefix><i>`; returns how long it took in
/// seconds.
pub async fn preload(
    pool: &PgPool,
    def: &Definition,
    prefix: &str,
    n: usize,
) -> anyhow::Result<f64> {
    let began = Instant::now();
    let t = template(def).map_err(anyhow::Error::msg)?;
    let span = chrono::Duration::microseconds(n as i64 * SPACING_US + t.duration_us);
    let base = Utc::now() - span;
    for (from, to) in chunks(n, CHUNK) {
        let copies = Copies {
            prefix,
            from,
            to,
            base,
            spacing_us: SPACING_US,
        };
        crate::store::bench::preload_finished(pool, &t, copies).await?;
        tracing::info!(done = to + 1, of = n, "preloading finished sagas");
    }
    crate::store::bench::settle(pool).await?;
    Ok(began.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::saga::definition::parse;
    use crate::saga::state::SagaState;
    use crate::tools::bench::workload::Workload;

    fn template_of(w: Workload) -> FinishedTemplate {
        let def = parse("<bench>", &w.definition(3)).unwrap();
        template(&def).unwrap()
    }

    #[test]
    fn the_template_is_a_finished_saga_with_the_placeholder_id() {
        for w in [Workload::Happy, Workload::Compensate] {
            let t = template_of(w);
            let state: SagaState = serde_json::from_str(&t.state).unwrap();
            assert_eq!(state.id, ID_PLACEHOLDER);
            assert_eq!(state.status, w.expected_status());
            assert_eq!(t.status, w.expected_status().as_str());
            assert_eq!(t.saga, w.saga(3));
            let offsets: Vec<i64> = t.history.iter().map(|h| h.offset_us).collect();
            assert!(offsets.windows(2).all(|w| w[0] <= w[1]), "{offsets:?}");
            assert_eq!(t.duration_us, *offsets.last().unwrap());
            for l in &t.ledger {
                assert!(l.key.starts_with(&format!("{ID_PLACEHOLDER}:")));
                assert!(l.task_id.starts_with(&l.key));
                assert_eq!(l.output, "null");
            }
        }
    }

    #[test]
    fn the_ledger_holds_the_completed_tasks_only() {
        assert_eq!(template_of(Workload::Happy).ledger.len(), 3);
        // Two actions and two compensations; the failed attempts leave no row.
        let keys: Vec<String> = template_of(Workload::Compensate)
            .ledger
            .into_iter()
            .map(|l| l.key.replace(ID_PLACEHOLDER, "x"))
            .collect();
        assert_eq!(
            keys,
            [
                "x:s0:action",
                "x:s1:action",
                "x:s1:compensation",
                "x:s0:compensation"
            ]
        );
    }

    #[test]
    fn chunks_cover_every_id_once() {
        assert_eq!(chunks(0, 10), vec![]);
        assert_eq!(chunks(10, 10), vec![(0, 9)]);
        assert_eq!(chunks(25, 10), vec![(0, 9), (10, 19), (20, 24)]);
    }
}
