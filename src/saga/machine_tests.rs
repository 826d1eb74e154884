//! Unit tests of the saga machine: every transition, duplicates and stale events.

use super::*;
use crate::messages::{TaskKind, COORDINATOR_REPLY_TO};
use crate::saga::definition::{ActivityStep, RetryPolicy};
use crate::saga::definition::{OnTimeout, Step, Timeouts, WaitStep};
use crate::saga::state::StepStatus;
use serde_json::json;

pub(super) fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

pub(super) fn secs(n: i64) -> DateTime<Utc> {
    t0() + chrono::Duration::seconds(n)
}

pub(super) fn policy(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        initial_interval: Duration::from_secs(1),
        backoff_coefficient: 2.0,
        max_interval: Duration::from_secs(100),
        max_attempts,
        non_retryable: vec!["card_declined".into()],
    }
}

pub(super) fn activity(name: &str, act: &str, comp: Option<&str>) -> Step {
    Step {
        name: name.into(),
        when: None,
        input: None,
        for_each: None,
        kind: StepKind::Activity(ActivityStep {
            activity: act.into(),
            compensate: comp.map(Into::into),
            retry: policy(3),
            compensate_retry: policy(2),
            timeouts: Timeouts::default(),
        }),
    }
}

pub(super) fn def_with(steps: Vec<Step>) -> Definition {
    Definition {
        name: "order".into(),
        version: 1,
        description: None,
        retention: None,
        steps,
        schedules: vec![],
    }
}

/// reserve (compensable) -> charge (compensable) -> ship (not compensable)
pub(super) fn order() -> Definition {
    def_with(vec![
        activity("reserve", "inventory.reserve", Some("inventory.release")),
        activity("charge", "payments.charge", Some("payments.refund")),
        activity("ship", "shipping.ship", None),
    ])
}

fn started(def: &Definition) -> SagaState {
    start(def, "o-1", json!({"order": 1}), None, t0()).state
}

pub(super) fn ok(task_id: &str, attempt: u32) -> Event {
    Event::Result {
        task_id: task_id.into(),
        attempt: Some(attempt),
        result: Ok(json!({"done": task_id})),
    }
}

pub(super) fn fail(task_id: &str, attempt: u32, code: &str, retryable: bool) -> Event {
    Event::Result {
        task_id: task_id.into(),
        attempt: Some(attempt),
        result: Err(ErrorInfo {
            code: code.into(),
            message: "boom".into(),
            retryable,
        }),
    }
}

pub(super) fn tasks(d: &Decision) -> Vec<(String, TaskKind, u32, Duration)> {
    d.commands
        .iter()
        .filter_map(|c| match c {
            Command::Dispatch { task, delay } => {
                Some((task.activity.clone(), task.kind, task.attempt, *delay))
            }
            _ => None,
        })
        .collect()
}

pub(super) fn published(d: &Decision) -> Vec<String> {
    d.commands
        .iter()
        .filter_map(|c| match c {
            Command::Publish(e) => Some(e.status.clone()),
            _ => None,
        })
        .collect()
}

pub(super) fn events(d: &Decision) -> Vec<&'static str> {
    d.history.iter().map(|h| h.event.as_str()).collect()
}

/// Drives `state` with events, returning the last decision.
pub(super) fn drive(def: &Definition, mut state: SagaState, evs: Vec<Event>) -> Decision {
    let mut last = None;
    for (n, e) in evs.into_iter().enumerate() {
        let d = apply(def, state, e, secs(n as i64 + 1));
        state = d.state.clone();
        last = Some(d);
    }
    last.expect("at least one event")
}

const R: &str = "o-1:reserve:action#1";
const C: &str = "o-1:charge:action#1";
const S: &str = "o-1:ship:action#1";
const RR: &str = "o-1:reserve:compensation#1";
const CR: &str = "o-1:charge:compensation#1";

#[test]
fn start_dispatches_first_step_with_saga_input() {
    let d = start(&order(), "o-1", json!({"order": 1}), None, t0());
    assert_eq!(d.state.status, SagaStatus::Running);
    assert_eq!(
        tasks(&d),
        vec![(
            "inventory.reserve".into(),
            TaskKind::Action,
            1,
            Duration::ZERO
        )]
    );
    let Command::Dispatch { task, .. } = &d.commands[0] else {
        panic!()
    };
    assert_eq!(task.task_id, R);
    assert_eq!(task.idempotency_key, "o-1:reserve:action");
    assert_eq!(task.input, json!({"saga": {"order": 1}, "steps": {}}));
    assert_eq!(task.reply_to, COORDINATOR_REPLY_TO);
    assert_eq!(task.deadlines.start_to_close_ms, 60_000);
    assert_eq!(events(&d), vec!["saga_started", "step_started"]);
}

#[test]
fn happy_path_completes_and_passes_outputs_forward() {
    let def = order();
    let d = apply(&def, started(&def), ok(R, 1), secs(1));
    let Command::Dispatch { task, .. } = &d.commands[0] else {
        panic!()
    };
    assert_eq!(task.activity, "payments.charge");
    assert_eq!(task.input["steps"]["reserve"], json!({"done": R}));
    let d = drive(&def, d.state, vec![ok(C, 1), ok(S, 1)]);
    assert_eq!(d.state.status, SagaStatus::Completed);
    assert_eq!(published(&d), vec!["completed"]);
    assert!(d.state.next_wake().is_none());
}

#[test]
fn retryable_error_retries_with_backoff_then_succeeds() {
    let def = order();
    let d = apply(&def, started(&def), fail(R, 1, "timeout", true), secs(1));
    assert_eq!(
        tasks(&d),
        vec![(
            "inventory.reserve".into(),
            TaskKind::Action,
            2,
            Duration::from_secs(1)
        )]
    );
    assert_eq!(events(&d), vec!["attempt_failed", "retry_scheduled"]);
    let d2 = apply(&def, d.state, fail(R, 2, "timeout", true), secs(2));
    assert_eq!(tasks(&d2)[0].2, 3);
    assert_eq!(tasks(&d2)[0].3, Duration::from_secs(2));
    let d3 = apply(&def, d2.state, ok(R, 3), secs(3));
    assert_eq!(d3.state.steps[0].status, StepStatus::Completed);
    assert_eq!(d3.state.steps[0].attempts, 3);
}

#[test]
fn attempts_exhausted_compensates_completed_steps_in_reverse() {
    let def = order();
    let s = drive(&def, started(&def), vec![ok(R, 1)]).state;
    let d = drive(
        &def,
        s,
        vec![
            fail(C, 1, "x", true),
            fail(C, 2, "x", true),
            fail(C, 3, "x", true),
        ],
    );
    assert_eq!(d.state.status, SagaStatus::Compensating);
    assert_eq!(d.state.steps[1].status, StepStatus::Failed);
    assert_eq!(
        tasks(&d),
        vec![(
            "inventory.release".into(),
            TaskKind::Compensation,
            1,
            Duration::ZERO
        )]
    );
    let Command::Dispatch { task, .. } = &d.commands[0] else {
        panic!()
    };
    assert_eq!(task.input["output"], json!({"done": R}));
    assert_eq!(task.idempotency_key, "o-1:reserve:compensation");
    let end = apply(&def, d.state, ok(RR, 1), secs(9));
    assert_eq!(end.state.status, SagaStatus::Compensated);
    assert_eq!(end.state.steps[0].status, StepStatus::Compensated);
    assert_eq!(published(&end), vec!["compensated"]);
}

#[test]
fn non_retryable_code_skips_remaining_attempts() {
    let def = order();
    let s = drive(&def, started(&def), vec![ok(R, 1)]).state;
    let d = apply(&def, s, fail(C, 1, "card_declined", true), secs(5));
    assert_eq!(d.state.steps[1].status, StepStatus::Failed);
    assert_eq!(d.state.steps[1].attempts, 1);
    assert_eq!(tasks(&d)[0].0, "inventory.release");
    assert_eq!(d.history[1].detail["reason"], "non_retryable_code");
}

#[test]
fn worker_non_retryable_flag_skips_remaining_attempts() {
    let def = order();
    let d = apply(&def, started(&def), fail(R, 1, "bad", false), secs(1));
    // Nothing completed before the first step: straight to compensated.
    assert_eq!(d.state.status, SagaStatus::Compensated);
    assert_eq!(published(&d), vec!["compensated"]);
    assert!(tasks(&d).is_empty());
}

#[test]
fn failure_after_uncompensable_step_ends_failed_after_undoing_the_rest() {
    let def = def_with(vec![
        activity("reserve", "inventory.reserve", Some("inventory.release")),
        activity("notify", "mail.send", None),
        activity("charge", "payments.charge", Some("payments.refund")),
    ]);
    let s = drive(
        &def,
        started(&def),
        vec![ok(R, 1), ok("o-1:notify:action#1", 1)],
    )
    .state;
    let d = apply(&def, s, fail(C, 1, "x", false), secs(5));
    assert_eq!(d.state.steps[1].status, StepStatus::NotCompensable);
    assert_eq!(tasks(&d)[0].0, "inventory.release");
    let end = apply(&def, d.state, ok(RR, 1), secs(6));
    assert_eq!(end.state.status, SagaStatus::Failed);
    assert_eq!(published(&end), vec!["failed"]);
}

#[test]
fn compensation_retries_with_its_own_policy_then_fails_the_saga() {
    let def = order();
    let s = drive(&def, started(&def), vec![ok(R, 1), ok(C, 1)]).state;
    let d = apply(&def, s, fail(S, 1, "x", false), secs(5));
    assert_eq!(tasks(&d)[0].0, "payments.refund");
    let d = apply(&def, d.state, fail(CR, 1, "y", true), secs(6));
    assert_eq!(
        tasks(&d),
        vec![(
            "payments.refund".into(),
            TaskKind::Compensation,
            2,
            Duration::from_secs(1)
        )]
    );
    // compensate_retry allows 2 attempts.
    let end = apply(&def, d.state, fail(CR, 2, "y", true), secs(7));
    assert_eq!(end.state.status, SagaStatus::Failed);
    assert_eq!(end.state.steps[1].status, StepStatus::CompensationFailed);
    // The earlier step is left alone: undoing it after a failed refund could be wrong.
    assert_eq!(end.state.steps[0].status, StepStatus::Completed);
    assert_eq!(published(&end), vec!["failed"]);
}

#[test]
fn duplicate_result_is_a_noop() {
    let def = order();
    let d = apply(&def, started(&def), ok(R, 1), secs(1));
    let dup = apply(&def, d.state.clone(), ok(R, 1), secs(2));
    assert!(dup.is_noop());
    assert_eq!(dup.state, d.state);
}

#[test]
fn stale_attempt_result_is_a_noop() {
    let def = order();
    let d = apply(&def, started(&def), fail(R, 1, "x", true), secs(1));
    // A redelivered failure of attempt 1 must not count against attempt 2.
    let stale = apply(&def, d.state.clone(), fail(R, 1, "x", true), secs(2));
    assert!(stale.is_noop());
    let stale_ok = apply(&def, d.state.clone(), ok(R, 1), secs(2));
    assert!(stale_ok.is_noop());
}

#[test]
fn result_without_attempt_applies_to_current_attempt() {
    let def = order();
    let e = Event::Result {
        task_id: R.into(),
        attempt: None,
        result: Ok(json!(1)),
    };
    let d = apply(&def, started(&def), e, secs(1));
    assert_eq!(d.state.steps[0].status, StepStatus::Completed);
}

#[test]
fn unknown_task_id_is_a_noop() {
    let def = order();
    assert!(apply(&def, started(&def), ok("o-1:other:action#1", 1), secs(1)).is_noop());
    assert!(apply(&def, started(&def), ok(C, 1), secs(1)).is_noop());
}

fn terminal_states() -> Vec<SagaState> {
    let def = order();
    let completed = drive(&def, started(&def), vec![ok(R, 1), ok(C, 1), ok(S, 1)]).state;
    let compensated = drive(&def, started(&def), vec![fail(R, 1, "x", false)]).state;
    let failed = drive(
        &def,
        started(&def),
        vec![ok(R, 1), fail(C, 1, "x", false), fail(RR, 1, "x", false)],
    )
    .state;
    let cancelled = drive(
        &def,
        started(&def),
        vec![Event::Cancel { reason: "r".into() }, fail(R, 1, "x", true)],
    )
    .state;
    vec![completed, compensated, failed, cancelled]
}

#[test]
fn every_event_in_every_terminal_status_is_a_noop() {
    let def = order();
    let all_events = vec![
        ok(R, 1),
        ok(RR, 1),
        fail(S, 1, "x", true),
        Event::Wake,
        Event::Signal {
            name: "s".into(),
            payload: json!(1),
        },
        Event::Cancel { reason: "r".into() },
    ];
    let states = terminal_states();
    let statuses: Vec<_> = states.iter().map(|s| s.status).collect();
    assert_eq!(
        statuses,
        vec![
            SagaStatus::Completed,
            SagaStatus::Compensated,
            SagaStatus::Failed,
            SagaStatus::Cancelled
        ]
    );
    for state in states {
        for e in &all_events {
            let d = apply(&def, state.clone(), e.clone(), secs(100));
            assert!(d.is_noop(), "{:?} on {:?}", e, state.status);
            assert_eq!(d.state, state);
        }
    }
}

#[test]
fn delayed_start_is_scheduled_then_wakes() {
    let def = order();
    let d = start(&def, "o-1", json!({}), Some(secs(60)), t0());
    assert_eq!(d.state.status, SagaStatus::Scheduled);
    assert!(d.commands.is_empty());
    assert_eq!(d.state.next_wake(), Some(secs(60)));
    let early = apply(&def, d.state.clone(), Event::Wake, secs(30));
    assert!(early.is_noop());
    let due = apply(&def, d.state, Event::Wake, secs(60));
    assert_eq!(due.state.status, SagaStatus::Running);
    assert_eq!(tasks(&due)[0].0, "inventory.reserve");
}

#[test]
fn start_at_in_the_past_runs_now() {
    let d = start(&order(), "o-1", json!({}), Some(secs(-5)), t0());
    assert_eq!(d.state.status, SagaStatus::Running);
}

fn sleepy() -> Definition {
    def_with(vec![
        activity("reserve", "inventory.reserve", Some("inventory.release")),
        Step {
            name: "cool_off".into(),
            when: None,
            input: None,
            for_each: None,
            kind: StepKind::Sleep(Duration::from_secs(36 * 3600)),
        },
        activity("ship", "shipping.ship", None),
    ])
}

#[test]
fn sleep_parks_until_due_and_fires_once() {
    let def = sleepy();
    let d = apply(&def, started(&def), ok(R, 1), secs(1));
    assert!(d.commands.is_empty());
    let until = secs(1) + chrono::Duration::hours(36);
    assert_eq!(d.state.next_wake(), Some(until));
    assert!(apply(&def, d.state.clone(), Event::Wake, secs(2)).is_noop());
    let woke = apply(&def, d.state, Event::Wake, until);
    assert_eq!(tasks(&woke)[0].0, "shipping.ship");
    // A second wake-up (another coordinator, a retry) changes nothing.
    assert!(apply(&def, woke.state, Event::Wake, until).is_noop());
}

fn waiting(on_timeout: OnTimeout) -> Definition {
    def_with(vec![
        activity("reserve", "inventory.reserve", Some("inventory.release")),
        Step {
            name: "approval".into(),
            when: None,
            input: None,
            for_each: None,
            kind: StepKind::Wait(WaitStep {
                signal: "approve".into(),
                timeout: Some(Duration::from_secs(60)),
                on_timeout,
            }),
        },
        activity("ship", "shipping.ship", None),
    ])
}

#[test]
fn signal_completes_wait_and_payload_flows_to_next_step() {
    let def = waiting(OnTimeout::Fail);
    let s = apply(&def, started(&def), ok(R, 1), secs(1)).state;
    let sig = Event::Signal {
        name: "approve".into(),
        payload: json!({"by": "ann"}),
    };
    let d = apply(&def, s, sig, secs(2));
    let Command::Dispatch { task, .. } = &d.commands[0] else {
        panic!()
    };
    assert_eq!(task.input["steps"]["approval"], json!({"by": "ann"}));
}

#[test]
fn early_signal_is_buffered_and_consumed_by_the_wait() {
    let def = waiting(OnTimeout::Fail);
    let sig = Event::Signal {
        name: "approve".into(),
        payload: json!(7),
    };
    let d = apply(&def, started(&def), sig, secs(1));
    assert_eq!(d.state.signals["approve"], vec![json!(7)]);
    let d = apply(&def, d.state, ok(R, 1), secs(2));
    assert_eq!(tasks(&d)[0].0, "shipping.ship");
    assert!(d.state.signals.is_empty());
}

#[test]
fn wait_timeout_fails_or_continues() {
    let def = waiting(OnTimeout::Fail);
    let s = apply(&def, started(&def), ok(R, 1), secs(1)).state;
    let d = apply(&def, s, Event::Wake, secs(61));
    assert_eq!(d.state.status, SagaStatus::Compensating);
    assert_eq!(tasks(&d)[0].0, "inventory.release");

    let def = waiting(OnTimeout::Continue);
    let s = apply(&def, started(&def), ok(R, 1), secs(1)).state;
    let d = apply(&def, s, Event::Wake, secs(61));
    assert_eq!(tasks(&d)[0].0, "shipping.ship");
}

#[test]
fn cancel_while_action_in_flight_waits_then_undoes_it_too() {
    let def = order();
    let s = apply(&def, started(&def), ok(R, 1), secs(1)).state;
    let d = apply(
        &def,
        s,
        Event::Cancel {
            reason: "user".into(),
        },
        secs(2),
    );
    assert!(d.commands.is_empty(), "waits for the in-flight charge");
    let d = apply(&def, d.state, ok(C, 1), secs(3));
    assert_eq!(tasks(&d)[0].0, "payments.refund");
    let d = drive(&def, d.state, vec![ok(CR, 1), ok(RR, 1)]);
    assert_eq!(d.state.status, SagaStatus::Cancelled);
    assert_eq!(published(&d), vec!["cancelled"]);
}

#[test]
fn cancel_stops_retries_of_the_in_flight_action() {
    let def = order();
    let s = apply(&def, started(&def), ok(R, 1), secs(1)).state;
    let s = apply(
        &def,
        s,
        Event::Cancel {
            reason: "user".into(),
        },
        secs(2),
    )
    .state;
    let d = apply(&def, s, fail(C, 1, "x", true), secs(3));
    assert_eq!(
        tasks(&d),
        vec![(
            "inventory.release".into(),
            TaskKind::Compensation,
            1,
            Duration::ZERO
        )]
    );
}

#[test]
fn cancel_while_sleeping_compensates_at_once() {
    let def = sleepy();
    let s = apply(&def, started(&def), ok(R, 1), secs(1)).state;
    let d = apply(
        &def,
        s,
        Event::Cancel {
            reason: "user".into(),
        },
        secs(2),
    );
    assert_eq!(tasks(&d)[0].0, "inventory.release");
    assert_eq!(d.state.next_wake(), Some(no_answer_at(&def, 0, secs(2))));
    let end = apply(&def, d.state, ok(RR, 1), secs(3));
    assert_eq!(end.state.status, SagaStatus::Cancelled);
}

#[test]
fn cancel_scheduled_saga_ends_cancelled_without_tasks() {
    let def = order();
    let s = start(&def, "o-1", json!({}), Some(secs(60)), t0()).state;
    let d = apply(&def, s, Event::Cancel { reason: "r".into() }, secs(1));
    assert_eq!(d.state.status, SagaStatus::Cancelled);
    assert!(tasks(&d).is_empty());
    assert!(d.state.next_wake().is_none());
    assert!(
        d.state.run_at.is_none(),
        "a cancelled saga no longer runs at a time"
    );
}

#[test]
fn cancel_twice_and_cancel_while_compensating_are_noops() {
    let def = order();
    let s = apply(&def, started(&def), ok(R, 1), secs(1)).state;
    let s = apply(&def, s, Event::Cancel { reason: "a".into() }, secs(2)).state;
    assert!(apply(&def, s, Event::Cancel { reason: "b".into() }, secs(3)).is_noop());
    let comp = drive(&def, started(&def), vec![ok(R, 1), fail(C, 1, "x", false)]).state;
    assert_eq!(comp.status, SagaStatus::Compensating);
    assert!(apply(&def, comp, Event::Cancel { reason: "c".into() }, secs(9)).is_noop());
}

#[test]
fn long_retry_delay_is_parked_in_postgres_and_dispatched_on_wake() {
    let mut def = order();
    if let StepKind::Activity(a) = &mut def.steps[0].kind {
        a.retry.initial_interval = Duration::from_secs(2 * 3600);
        a.retry.max_interval = Duration::from_secs(4 * 3600);
    }
    let d = apply(&def, started(&def), fail(R, 1, "x", true), secs(1));
    assert!(tasks(&d).is_empty(), "no broker message for a 2h wait");
    let due = secs(1) + chrono::Duration::hours(2);
    assert_eq!(d.state.next_wake(), Some(due));
    // The result of the parked attempt cannot arrive before it is dispatched.
    assert!(apply(&def, d.state.clone(), ok(R, 2), secs(2)).is_noop());
    let woke = apply(&def, d.state, Event::Wake, due);
    assert_eq!(
        tasks(&woke),
        vec![(
            "inventory.reserve".into(),
            TaskKind::Action,
            2,
            Duration::ZERO
        )]
    );
    assert_eq!(woke.state.next_wake(), Some(no_answer_at(&def, 0, due)));
}

#[test]
fn schedule_to_close_deadline_stops_retries() {
    let mut def = order();
    if let StepKind::Activity(a) = &mut def.steps[0].kind {
        a.timeouts.schedule_to_close = Some(Duration::from_secs(3));
    }
    let d = apply(&def, started(&def), fail(R, 1, "x", true), secs(1));
    assert_eq!(tasks(&d)[0].2, 2, "retry at 2s fits before the 3s deadline");
    let d = apply(&def, d.state, fail(R, 2, "x", true), secs(2));
    assert_eq!(d.state.status, SagaStatus::Compensated);
}

#[test]
fn task_deadlines_follow_the_step_timeouts() {
    let mut def = order();
    if let StepKind::Activity(a) = &mut def.steps[0].kind {
        a.timeouts = Timeouts {
            schedule_to_start: Some(Duration::from_secs(5)),
            start_to_close: Duration::from_secs(30),
            schedule_to_close: Some(Duration::from_secs(600)),
            heartbeat: Some(Duration::from_secs(10)),
        };
    }
    let d = start(&def, "o-1", json!({}), None, t0());
    let Command::Dispatch { task, .. } = &d.commands[0] else {
        panic!()
    };
    assert_eq!(task.deadlines.schedule_to_start, Some(secs(5)));
    assert_eq!(task.deadlines.start_to_close_ms, 30_000);
    assert_eq!(task.deadlines.schedule_to_close, Some(secs(600)));
    assert_eq!(task.deadlines.heartbeat_ms, Some(10_000));
}

#[test]
fn state_round_trips_through_json() {
    let def = waiting(OnTimeout::Fail);
    let s = drive(
        &def,
        started(&def),
        vec![
            Event::Signal {
                name: "other".into(),
                payload: json!(1),
            },
            ok(R, 1),
        ],
    )
    .state;
    let back: SagaState = serde_json::from_value(serde_json::to_value(&s).unwrap()).unwrap();
    assert_eq!(back, s);
}

fn with_timeouts(t: Timeouts) -> Definition {
    let mut def = order();
    if let StepKind::Activity(a) = &mut def.steps[0].kind {
        a.timeouts = t;
    }
    def
}

fn timeouts(sts: Option<u64>, stc: u64, total: Option<u64>, hb: Option<u64>) -> Timeouts {
    Timeouts {
        schedule_to_start: sts.map(Duration::from_secs),
        start_to_close: Duration::from_secs(stc),
        schedule_to_close: total.map(Duration::from_secs),
        heartbeat: hb.map(Duration::from_secs),
    }
}

fn started_ev(task: &str, attempt: u32) -> Event {
    Event::Started {
        task_id: task.into(),
        attempt: Some(attempt),
    }
}

fn beat(task: &str, attempt: u32, details: Value) -> Event {
    Event::Heartbeat {
        task_id: task.into(),
        attempt: Some(attempt),
        details: Some(details),
    }
}

#[test]
fn schedule_to_start_fires_when_no_worker_took_the_task() {
    let def = with_timeouts(timeouts(Some(5), 60, None, None));
    let s = started(&def);
    assert_eq!(s.next_wake(), Some(secs(5)));
    assert!(apply(&def, s.clone(), Event::Wake, secs(4)).is_noop());
    let d = apply(&def, s, Event::Wake, secs(5));
    assert_eq!(events(&d), vec!["attempt_timed_out", "retry_scheduled"]);
    assert_eq!(d.history[0].detail["timeout"], "schedule_to_start");
    assert_eq!(
        tasks(&d),
        vec![(
            "inventory.reserve".into(),
            TaskKind::Action,
            2,
            Duration::from_secs(1)
        )]
    );
    // The late answer of the timed-out attempt is ignored.
    assert!(apply(&def, d.state, ok(R, 1), secs(6)).is_noop());
}

#[test]
fn started_report_swaps_schedule_to_start_for_start_to_close() {
    let def = with_timeouts(timeouts(Some(5), 30, None, None));
    let d = apply(&def, started(&def), started_ev(R, 1), secs(2));
    assert_eq!(events(&d), vec!["attempt_started"]);
    assert_eq!(d.state.next_wake(), Some(secs(32)));
    assert!(
        apply(&def, d.state.clone(), started_ev(R, 1), secs(3)).is_noop(),
        "duplicate report"
    );
    assert!(apply(&def, d.state.clone(), Event::Wake, secs(5)).is_noop());
    let t = apply(&def, d.state, Event::Wake, secs(32));
    assert_eq!(t.history[0].detail["timeout"], "start_to_close");
    assert_eq!(tasks(&t)[0].2, 2);
}

#[test]
fn heartbeats_keep_an_attempt_alive_and_their_details_reach_the_retry() {
    let def = with_timeouts(timeouts(None, 60, None, Some(10)));
    let s = started(&def);
    assert_eq!(
        s.next_wake(),
        Some(no_answer_at(&def, 0, secs(0))),
        "only the no-answer deadline before the worker reports"
    );
    let s = apply(&def, s, started_ev(R, 1), secs(1)).state;
    assert_eq!(s.next_wake(), Some(secs(11)));
    let d = apply(&def, s, beat(R, 1, json!({"done": 40})), secs(8));
    assert!(
        d.history.is_empty() && !d.is_noop(),
        "a heartbeat is written without history"
    );
    assert_eq!(d.state.next_wake(), Some(secs(18)));
    assert!(apply(&def, d.state.clone(), Event::Wake, secs(11)).is_noop());
    let t = apply(&def, d.state, Event::Wake, secs(18));
    assert_eq!(t.history[0].detail["timeout"], "heartbeat");
    let Command::Dispatch { task, .. } = &t.commands[0] else {
        panic!()
    };
    assert_eq!(task.heartbeat_details, Some(json!({"done": 40})));
    assert_eq!(task.attempt, 2);
}

#[test]
fn heartbeat_of_a_stale_attempt_is_ignored() {
    let def = with_timeouts(timeouts(None, 60, None, Some(10)));
    let s = apply(&def, started(&def), fail(R, 1, "x", true), secs(1)).state;
    assert!(apply(&def, s, beat(R, 1, json!(1)), secs(2)).is_noop());
}

#[test]
fn schedule_to_close_timeout_fails_the_step_without_retry() {
    let def = with_timeouts(timeouts(None, 60, Some(30), None));
    let s = started(&def);
    assert_eq!(s.next_wake(), Some(secs(30)));
    let d = apply(&def, s, Event::Wake, secs(30));
    assert_eq!(d.state.steps[0].status, StepStatus::Failed);
    assert_eq!(
        d.state.steps[0].error.as_ref().unwrap().code,
        "timeout.schedule_to_close"
    );
    assert_eq!(d.state.status, SagaStatus::Compensated);
}

#[test]
fn timeouts_apply_to_compensations_too() {
    let def = with_timeouts(timeouts(Some(5), 60, None, None));
    let s = drive(
        &def,
        started(&def),
        vec![started_ev(R, 1), ok(R, 1), fail(C, 1, "x", false)],
    )
    .state;
    assert_eq!(s.status, SagaStatus::Compensating);
    let at = s.next_wake().unwrap();
    let d = apply(&def, s, Event::Wake, at);
    assert_eq!(d.history[0].event, "attempt_timed_out");
    assert_eq!(
        tasks(&d),
        vec![(
            "inventory.release".into(),
            TaskKind::Compensation,
            2,
            Duration::from_secs(1)
        )]
    );
}

fn deferred() -> Definition {
    def_with(vec![
        activity("render", "newsletter.render", None),
        Step {
            name: "deferred".into(),
            when: None,
            input: None,
            for_each: None,
            kind: StepKind::SleepUntil("steps.render.send_at".into()),
        },
        activity("send", "newsletter.send", None),
    ])
}

fn rendered(send_at: Value) -> Event {
    Event::Result {
        task_id: "o-1:render:action#1".into(),
        attempt: Some(1),
        result: Ok(json!({ "send_at": send_at })),
    }
}

#[test]
fn sleep_until_waits_for_an_instant_from_an_earlier_step() {
    let def = deferred();
    let d = apply(
        &def,
        started(&def),
        rendered(json!("2026-01-03T00:00:00Z")),
        secs(1),
    );
    let due = DateTime::parse_from_rfc3339("2026-01-03T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    assert_eq!(d.state.next_wake(), Some(due));
    assert!(tasks(&d).is_empty());
    let woke = apply(&def, d.state, Event::Wake, due);
    assert_eq!(tasks(&woke)[0].0, "newsletter.send");
}

#[test]
fn sleep_until_a_past_instant_wakes_on_the_next_scan() {
    let def = deferred();
    let d = apply(
        &def,
        started(&def),
        rendered(json!("2020-01-01T00:00:00Z")),
        secs(1),
    );
    assert!(d.state.next_wake().unwrap() <= secs(1));
    assert_eq!(
        tasks(&apply(&def, d.state, Event::Wake, secs(1)))[0].0,
        "newsletter.send"
    );
}

#[test]
fn sleep_until_without_an_instant_fails_the_step() {
    let def = deferred();
    for bad in [json!(null), json!("tomorrow"), json!(5)] {
        let d = apply(&def, started(&def), rendered(bad.clone()), secs(1));
        assert_eq!(d.state.steps[1].status, StepStatus::Failed, "{bad}");
        assert_eq!(
            d.state.steps[1].error.as_ref().unwrap().code,
            "bad_sleep_until"
        );
    }
}

#[test]
fn active_task_names_its_activity_for_actions_and_compensations() {
    let def = order();
    let s = started(&def);
    let activity = |s: &SagaState| s.tasks.first().and_then(|a| a.activity.clone());
    assert_eq!(activity(&s).as_deref(), Some("inventory.reserve"));
    let d = drive(&def, s, vec![ok(R, 1), fail(C, 1, "card_declined", false)]);
    assert_eq!(activity(&d.state).as_deref(), Some("inventory.release"));
}

/// The no-answer deadline of an attempt of `step` scheduled at `at`.
fn no_answer_at(def: &Definition, step: usize, at: DateTime<Utc>) -> DateTime<Utc> {
    let StepKind::Activity(a) = &def.steps[step].kind else {
        panic!("step {step} is no activity")
    };
    at + chrono::Duration::from_std(a.timeouts.start_to_close + NO_ANSWER_ALLOWANCE).unwrap()
}

#[test]
fn an_attempt_nobody_answers_times_out_and_is_retried_then_compensated() {
    let def = order();
    let s = started(&def);
    let due = no_answer_at(&def, 0, secs(0));
    assert_eq!(s.next_wake(), Some(due));
    assert!(apply(
        &def,
        s.clone(),
        Event::Wake,
        due - chrono::Duration::seconds(1)
    )
    .is_noop());
    let t = apply(&def, s, Event::Wake, due);
    assert_eq!(t.history[0].event, "attempt_timed_out");
    assert_eq!(t.history[0].detail["timeout"], "no_answer");
    assert_eq!(tasks(&t)[0].2, 2, "retried by the step's policy");
    // Its late answer is stale; the retry gets its own deadline.
    assert!(apply(&def, t.state.clone(), ok(R, 1), due).is_noop());
    assert!(t.state.next_wake().is_some_and(|w| w > due));
}

#[test]
fn a_cancel_waiting_on_an_action_nobody_answers_still_ends() {
    let def = order();
    let s = started(&def);
    let d = apply(
        &def,
        s,
        Event::Cancel {
            reason: "user".into(),
        },
        secs(1),
    );
    assert!(tasks(&d).is_empty(), "waits for the in-flight action");
    let due = d.state.next_wake().expect("a deadline while it waits");
    let t = apply(&def, d.state, Event::Wake, due);
    assert_eq!(t.state.status, SagaStatus::Cancelled);
}

#[test]
fn a_dead_lettered_attempt_is_a_retryable_failure() {
    let def = order();
    let s = started(&def);
    let dead = Event::Result {
        task_id: s.tasks.first().unwrap().task_id.clone(),
        attempt: Some(1),
        result: Err(crate::messages::ErrorInfo {
            code: "dead_lettered".into(),
            message: "delivery_limit".into(),
            retryable: true,
        }),
    };
    let d = apply(&def, s, dead, secs(1));
    assert_eq!(events(&d), vec!["attempt_failed", "retry_scheduled"]);
}

#[test]
fn a_wake_up_arms_the_deadline_of_an_attempt_stored_without_one() {
    let def = order();
    let mut s = started(&def);
    if let Some(a) = s.tasks.first_mut() {
        a.timeout_at = None; // as an older version stored it
    }
    assert_eq!(s.next_wake(), None);
    let d = apply(&def, s, Event::Wake, secs(1));
    assert!(!d.is_noop(), "the new deadline must be written");
    assert_eq!(d.state.next_wake(), Some(no_answer_at(&def, 0, secs(0))));
}
