use std::time::Duration;

use super::*;
use crate::saga::definition::{parse, StepKind};

fn def(w: Workload, steps: usize) -> Definition {
    parse("<bench>", &w.definition(steps)).expect("the generated definition is valid")
}

fn now() -> DateTime<Utc> {
    "2026-12-02T10:00:00Z".parse().unwrap()
}

#[test]
fn happy_is_k_noop_steps_without_compensation() {
    let d = def(Workload::Happy, 4);
    assert_eq!(d.name, "bench_4");
    assert_eq!(d.steps.len(), 4);
    for s in &d.steps {
        let StepKind::Activity(a) = &s.kind else {
            panic!("{} is not an activity", s.name)
        };
        assert_eq!(a.activity, NOOP_ACTIVITY);
        assert_eq!(a.compensate, None);
    }
}

#[test]
fn compensate_is_two_compensable_noops_then_a_failing_step() {
    let d = def(Workload::Compensate, 3);
    assert_eq!(d.name, "bench_compensate");
    let acts: Vec<_> = d
        .steps
        .iter()
        .map(|s| match &s.kind {
            StepKind::Activity(a) => a.clone(),
            _ => panic!("{} is not an activity", s.name),
        })
        .collect();
    assert_eq!(acts.len(), 3);
    for a in &acts[..2] {
        assert_eq!(a.activity, NOOP_ACTIVITY);
        assert_eq!(a.compensate.as_deref(), Some(UNDO_ACTIVITY));
    }
    let fail = &acts[2];
    assert_eq!(fail.activity, FAIL_ACTIVITY);
    assert_eq!(fail.compensate, None);
    assert_eq!(fail.retry.max_attempts, 3);
    assert_eq!(fail.retry.initial_interval, Duration::from_millis(100));
    assert_eq!(fail.retry.backoff_coefficient, 2.0);
}

#[test]
fn step_counts_that_fit_each_workload() {
    assert!(Workload::Happy.check_steps(1).is_ok());
    assert!(Workload::Happy.check_steps(0).is_err());
    assert!(Workload::Compensate.check_steps(3).is_ok());
    assert!(Workload::Compensate.check_steps(2).is_err());
    assert!(Workload::Compensate.check_steps(5).is_err());
}

#[test]
fn a_simulated_happy_saga_completes_after_k_tasks() {
    let d = def(Workload::Happy, 3);
    let s = simulate(&d, "b-1", now()).unwrap();
    assert_eq!(s.state.status, Workload::Happy.expected_status());
    assert_eq!(s.tasks.len(), Workload::Happy.tasks_per_saga(3));
    assert!(s.tasks.iter().all(|(_, r)| r.is_ok()));
    let events: Vec<_> = s.history.iter().map(|h| h.event.as_str()).collect();
    assert_eq!(s.history.len(), 8, "{events:?}");
    assert_eq!(events.first(), Some(&"saga_started"));
    assert_eq!(events.last(), Some(&"saga_completed"));
    assert_eq!(events.iter().filter(|e| **e == "step_completed").count(), 3);
}

#[test]
fn a_simulated_compensate_saga_retries_twice_and_undoes_both_steps() {
    let w = Workload::Compensate;
    let d = def(w, 3);
    let s = simulate(&d, "b-1", now()).unwrap();
    assert_eq!(s.state.status, w.expected_status());
    assert_eq!(s.tasks.len(), w.tasks_per_saga(3));
    let run: Vec<_> = s
        .tasks
        .iter()
        .map(|(t, r)| (t.activity.as_str(), t.step.as_str(), t.attempt, r.is_ok()))
        .collect();
    assert_eq!(
        run,
        [
            (NOOP_ACTIVITY, "s0", 1, true),
            (NOOP_ACTIVITY, "s1", 1, true),
            (FAIL_ACTIVITY, "s2", 1, false),
            (FAIL_ACTIVITY, "s2", 2, false),
            (FAIL_ACTIVITY, "s2", 3, false),
            (UNDO_ACTIVITY, "s1", 1, true),
            (UNDO_ACTIVITY, "s0", 1, true),
        ]
    );
    // The retries wait 100 ms, then 200 ms.
    let at = |i: usize| s.tasks[i].0.scheduled_at;
    assert_eq!((at(3) - at(2)).num_milliseconds(), 100 + 2);
    assert_eq!((at(4) - at(3)).num_milliseconds(), 200 + 2);
    assert_eq!(
        s.history.last().map(|h| h.event.as_str()),
        Some("saga_compensated")
    );
}

#[test]
fn the_failing_activity_fails_retryably_and_the_others_answer_null() {
    let d = def(Workload::Compensate, 3);
    let s = simulate(&d, "b-1", now()).unwrap();
    for (task, result) in &s.tasks {
        assert_eq!(result, &answer(task));
        match result {
            Ok(v) => assert_eq!(v, &Value::Null),
            Err(e) => assert!(e.retryable && e.code == "bench_failure"),
        }
    }
}
