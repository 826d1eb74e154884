use super::*;
use crate::messages::ErrorInfo;
use crate::saga::definition::{ActivityStep, RetryPolicy, Step, Timeouts};
use crate::saga::machine::{apply, start, Command, Event};

fn t(n: i64) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
        + chrono::Duration::seconds(n)
}

fn step(name: &str, act: &str, comp: Option<&str>) -> Step {
    let retry = RetryPolicy {
        max_attempts: 1,
        ..RetryPolicy::default()
    };
    Step {
        name: name.into(),
        when: None,
        input: None,
        for_each: None,
        kind: StepKind::Activity(ActivityStep {
            activity: act.into(),
            compensate: comp.map(Into::into),
            retry: retry.clone(),
            compensate_retry: retry,
            timeouts: Timeouts::default(),
        }),
    }
}

fn def() -> Definition {
    Definition {
        name: "order".into(),
        version: 1,
        description: None,
        retention: None,
        steps: vec![
            step("reserve", "inv.reserve", Some("inv.release")),
            step("charge", "pay.charge", Some("pay.refund")),
            step("ship", "ship.ship", None),
        ],
        schedules: vec![],
    }
}

fn ok(task: &str) -> Event {
    Event::Result {
        task_id: task.into(),
        attempt: None,
        result: Ok(json!({"t": task})),
    }
}

fn fail(task: &str) -> Event {
    Event::Result {
        task_id: task.into(),
        attempt: None,
        result: Err(ErrorInfo {
            code: "x".into(),
            message: String::new(),
            retryable: false,
        }),
    }
}

/// `operate`, issued for the saga as it stands.
fn op(s: SagaState, action: &OperatorAction, now: DateTime<Utc>) -> Result<Decision, String> {
    let at = IssuedFor::of(&def(), &s);
    operate(&def(), s, action, &at, Some("ops-ann"), now)
}

fn drive(evs: Vec<Event>) -> SagaState {
    let d = def();
    let mut s = start(&d, "o", json!({}), None, t(0)).state;
    for (n, e) in evs.into_iter().enumerate() {
        s = apply(&d, s, e, t(n as i64 + 1)).state;
    }
    s
}

fn dispatched(d: &Decision) -> Vec<(String, TaskKind, String)> {
    d.commands
        .iter()
        .filter_map(|c| match c {
            Command::Dispatch { task, .. } => {
                Some((task.activity.clone(), task.kind, task.task_id.clone()))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn retry_redispatches_a_stuck_task_as_a_new_chain() {
    let s = drive(vec![ok("o:reserve:action#1")]);
    let d = op(s, &OperatorAction::Retry, t(9)).unwrap();
    assert_eq!(
        dispatched(&d),
        vec![(
            "pay.charge".into(),
            TaskKind::Action,
            "o:charge:action#2".into()
        )]
    );
    assert_eq!(d.history[0].event, "operator_action");
    assert_eq!(
        d.history[0].detail,
        json!({"action": {"action": "retry"}, "actor": "ops-ann"}),
        "the history names who acted"
    );
    // The old chain's late answer is now stale.
    let late = apply(&def(), d.state.clone(), ok("o:charge:action#1"), t(10));
    assert!(late.is_noop());
    let done = apply(&def(), d.state, ok("o:charge:action#2"), t(10));
    assert_eq!(dispatched(&done)[0].0, "ship.ship");
}

#[test]
fn retry_of_a_failed_compensation_resumes_compensating() {
    let s = drive(vec![
        ok("o:reserve:action#1"),
        ok("o:charge:action#1"),
        fail("o:ship:action#1"),
        fail("o:charge:compensation#1"),
    ]);
    assert_eq!(s.status, SagaStatus::Failed);
    let d = op(s, &OperatorAction::Retry, t(9)).unwrap();
    assert_eq!(d.state.status, SagaStatus::Compensating);
    assert_eq!(
        dispatched(&d),
        vec![(
            "pay.refund".into(),
            TaskKind::Compensation,
            "o:charge:compensation#2".into()
        )]
    );
    let d = apply(&def(), d.state, ok("o:charge:compensation#2"), t(10));
    let d = apply(&def(), d.state, ok("o:reserve:compensation#1"), t(11));
    assert_eq!(d.state.status, SagaStatus::Compensated);
}

#[test]
fn resume_at_reruns_from_a_step_when_earlier_steps_stand() {
    let s = drive(vec![
        ok("o:reserve:action#1"),
        ok("o:charge:action#1"),
        fail("o:ship:action#1"),
        fail("o:charge:compensation#1"),
    ]);
    // charge is CompensationFailed: resuming at ship would skip it.
    let err = op(
        s.clone(),
        &OperatorAction::ResumeAt {
            step: "ship".into(),
        },
        t(9),
    )
    .unwrap_err();
    assert!(err.contains("charge"), "{err}");
    let d = op(
        s,
        &OperatorAction::ResumeAt {
            step: "charge".into(),
        },
        t(9),
    )
    .unwrap();
    assert_eq!(d.state.status, SagaStatus::Running);
    assert_eq!(
        dispatched(&d),
        vec![(
            "pay.charge".into(),
            TaskKind::Action,
            "o:charge:action:g1#2".into()
        )]
    );
    let Command::Dispatch { task, .. } = &d.commands[0] else {
        panic!("a dispatch")
    };
    assert_eq!(
        task.idempotency_key, "o:charge:action:g1",
        "a new generation: the ledger must not answer the undone charge"
    );
    let unknown = op(
        d.state,
        &OperatorAction::ResumeAt {
            step: "nope".into(),
        },
        t(10),
    )
    .unwrap_err();
    assert!(unknown.contains("no step `nope`"));
}

#[test]
fn skip_completes_the_current_step_with_the_given_output() {
    let s = drive(vec![ok("o:reserve:action#1")]);
    let d = op(
        s,
        &OperatorAction::Skip {
            output: json!({"charge_id": "manual"}),
        },
        t(9),
    )
    .unwrap();
    assert_eq!(
        d.state.steps[1].output,
        Some(json!({"charge_id": "manual"}))
    );
    let Command::Dispatch { task, .. } = &d.commands[0] else {
        panic!()
    };
    assert_eq!(
        task.input["steps"]["charge"],
        json!({"charge_id": "manual"})
    );
    assert!(d.history.iter().any(|h| h.event == "step_skipped"));
}

#[test]
fn compensate_on_request_undoes_completed_steps() {
    let s = drive(vec![ok("o:reserve:action#1")]);
    let d = op(s, &OperatorAction::Compensate, t(9)).unwrap();
    assert_eq!(d.state.status, SagaStatus::Compensating);
    assert_eq!(
        dispatched(&d),
        vec![(
            "inv.release".into(),
            TaskKind::Compensation,
            "o:reserve:compensation#1".into()
        )]
    );
}

#[test]
fn refused_actions_say_why() {
    let done = drive(vec![
        ok("o:reserve:action#1"),
        ok("o:charge:action#1"),
        ok("o:ship:action#1"),
    ]);
    assert_eq!(done.status, SagaStatus::Completed);
    for action in [
        OperatorAction::Retry,
        OperatorAction::Skip {
            output: json!(null),
        },
        OperatorAction::Compensate,
        OperatorAction::ResumeAt {
            step: "ship".into(),
        },
    ] {
        assert!(op(done.clone(), &action, t(9)).is_err(), "{action:?}");
    }
}

#[test]
fn actions_round_trip_as_json() {
    let a: OperatorAction =
        serde_json::from_value(json!({"action": "skip", "output": {"x": 1}})).unwrap();
    assert_eq!(
        a,
        OperatorAction::Skip {
            output: json!({"x": 1})
        }
    );
    let r: OperatorAction =
        serde_json::from_value(json!({"action": "resume_at", "step": "charge"})).unwrap();
    assert_eq!(r.name(), "resume_at");
}

#[test]
fn a_redelivered_action_is_refused_once_the_saga_moved_on() {
    let s = drive(vec![ok("o:reserve:action#1")]);
    let issued = IssuedFor::of(&def(), &s);
    let skip = OperatorAction::Skip {
        output: json!(null),
    };
    let d = operate(&def(), s, &skip, &issued, None, t(9)).unwrap();
    // The same skip again (the broker redelivered it): charge is done, ship is current.
    let again = operate(&def(), d.state.clone(), &skip, &issued, None, t(10)).unwrap_err();
    assert!(again.contains("from step `charge` to `ship`"), "{again}");
    // A retry issued for ship's first chain, applied twice, opens one new chain.
    let issued = IssuedFor::of(&def(), &d.state);
    let r = operate(
        &def(),
        d.state,
        &OperatorAction::Retry,
        &issued,
        None,
        t(11),
    )
    .unwrap();
    let again = operate(
        &def(),
        r.state.clone(),
        &OperatorAction::Retry,
        &issued,
        None,
        t(12),
    )
    .unwrap_err();
    assert!(again.contains("task changed"), "{again}");
}

#[test]
fn a_resume_applied_twice_reruns_once() {
    let s = drive(vec![
        ok("o:reserve:action#1"),
        ok("o:charge:action#1"),
        fail("o:ship:action#1"),
        ok("o:charge:compensation#1"),
        ok("o:reserve:compensation#1"),
    ]);
    assert_eq!(s.status, SagaStatus::Compensated);
    let resume = OperatorAction::ResumeAt {
        step: "reserve".into(),
    };
    let issued = IssuedFor::of(&def(), &s);
    let d = operate(&def(), s, &resume, &issued, None, t(9)).unwrap();
    assert_eq!(d.state.generation, 1);
    assert_eq!(dispatched(&d)[0].2, "o:reserve:action:g1#2");
    let again = operate(&def(), d.state, &resume, &issued, None, t(10)).unwrap_err();
    assert!(again.contains("generation 0 -> 1"), "{again}");
}

#[test]
fn issued_for_round_trips_as_json() {
    let i = IssuedFor {
        step: "charge".into(),
        generation: 2,
        task_id: Some("o:charge:action#1".into()),
    };
    let back: IssuedFor = serde_json::from_value(serde_json::to_value(&i).unwrap()).unwrap();
    assert_eq!(back, i);
}
