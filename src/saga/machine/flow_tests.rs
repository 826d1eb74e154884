//! Unit tests of the flow constructs: parallel steps, `when`, per-step `input`, and
//! several deadlines per saga. Every transition through the pure machine.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use super::tests::{activity, def_with, events, fail, ok, published, secs, t0, tasks};
use super::*;
use crate::messages::TaskKind;
use crate::saga::definition::{Condition, OnTimeout, Step, ValuePath, WaitStep};
use crate::saga::state::StepStatus;

const RES: &str = "c-1:reserve:action#1";
const AUTH: &str = "c-1:authorize:action#1";
const SHIP: &str = "c-1:ship:action#1";
const FIRST: &str = "c-1:pick:action#1";

fn wait_step(name: &str, signal: &str, timeout: Option<u64>) -> Step {
    Step::new(
        name,
        StepKind::Wait(WaitStep {
            signal: signal.into(),
            timeout: timeout.map(Duration::from_secs),
            on_timeout: OnTimeout::Fail,
        }),
    )
}

/// pick (compensable) -> prepare = [reserve, authorize, screen (wait)] -> ship.
fn checkout() -> Definition {
    def_with(vec![
        activity("pick", "inventory.pick", Some("inventory.unpick")),
        Step::new(
            "prepare",
            StepKind::Parallel(vec![
                activity("reserve", "inventory.reserve", Some("inventory.release")),
                activity("authorize", "payments.authorize", Some("payments.void")),
                wait_step("screen", "screened", Some(600)),
            ]),
        ),
        activity("ship", "shipping.ship", None),
    ])
}

fn begin(def: &Definition) -> SagaState {
    start(def, "c-1", json!({"order": 7}), None, t0()).state
}

/// Applies `e` at second `n`.
fn at(def: &Definition, state: SagaState, n: i64, e: Event) -> Decision {
    apply(def, state, e, secs(n))
}

fn signal(name: &str) -> Event {
    Event::Signal {
        name: name.into(),
        payload: json!({"ok": true}),
    }
}

fn into_prepare(def: &Definition) -> Decision {
    at(def, begin(def), 1, ok(FIRST, 1))
}

fn task_ids(d: &Decision) -> Vec<String> {
    d.commands
        .iter()
        .filter_map(|c| match c {
            Command::Dispatch { task, .. } => Some(task.task_id.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_parallel_step_starts_every_branch_at_once() {
    let def = checkout();
    let d = into_prepare(&def);
    assert_eq!(task_ids(&d), vec![RES, AUTH]);
    assert_eq!(d.state.tasks.len(), 2);
    assert_eq!(
        events(&d),
        vec![
            "step_completed",
            "parallel_started",
            "step_started",
            "step_started",
            "wait_started"
        ]
    );
    let started = d
        .history
        .iter()
        .find(|h| h.event == "wait_started")
        .unwrap();
    assert_eq!(started.step.as_deref(), Some("screen"));
    assert_eq!(started.detail["in"], "prepare");
    let br = &d.state.steps[1].branches;
    assert_eq!(
        br.iter().map(|b| b.status).collect::<Vec<_>>(),
        vec![
            StepStatus::Running,
            StepStatus::Running,
            StepStatus::Waiting
        ]
    );
    // Branch tasks see the outputs of the steps before the group.
    let Command::Dispatch { task, .. } = &d.commands[0] else {
        panic!()
    };
    assert_eq!(task.step, "reserve");
    assert_eq!(task.idempotency_key, "c-1:reserve:action");
    assert_eq!(task.input["steps"]["pick"], json!({"done": FIRST}));
}

#[test]
fn the_step_completes_when_every_branch_has_with_outputs_by_branch_name() {
    let def = checkout();
    let d = into_prepare(&def);
    let d = at(&def, d.state, 2, ok(AUTH, 1));
    assert!(d.commands.is_empty(), "one branch done is not the step");
    let d = at(&def, d.state, 3, signal("screened"));
    assert!(d.commands.is_empty());
    let d = at(&def, d.state, 4, ok(RES, 1));
    assert_eq!(task_ids(&d), vec![SHIP]);
    assert_eq!(d.state.steps[1].status, StepStatus::Completed);
    let out = d.state.steps[1].output.clone().unwrap();
    assert_eq!(
        out,
        json!({"reserve": {"done": RES}, "authorize": {"done": AUTH}, "screen": {"ok": true}})
    );
    let Command::Dispatch { task, .. } = &d.commands[0] else {
        panic!()
    };
    assert_eq!(
        task.input["steps"]["prepare"]["authorize"],
        json!({"done": AUTH})
    );
    let d = at(&def, d.state, 5, ok(SHIP, 1));
    assert_eq!(d.state.status, SagaStatus::Completed);
    assert_eq!(published(&d), vec!["completed"]);
}

#[test]
fn a_duplicate_branch_answer_is_a_noop() {
    let def = checkout();
    let d = at(&def, into_prepare(&def).state, 2, ok(AUTH, 1));
    let again = at(&def, d.state.clone(), 3, ok(AUTH, 1));
    assert!(again.is_noop());
    assert_eq!(again.state, d.state);
}

#[test]
fn a_failed_branch_awaits_the_ones_in_flight_then_undoes_latest_completed_first() {
    let def = checkout();
    let d = into_prepare(&def);
    // reserve fails for good; authorize is still in flight, screen waits.
    let d = at(&def, d.state, 2, fail(RES, 1, "card_declined", false));
    assert_eq!(d.state.status, SagaStatus::Compensating);
    assert!(
        d.commands.is_empty(),
        "no compensation while authorize is out"
    );
    assert_eq!(d.state.steps[1].branches[0].status, StepStatus::Failed);
    assert_eq!(
        d.state.steps[1].branches[2].status,
        StepStatus::Pending,
        "wait left"
    );
    assert_eq!(d.state.next_wake(), d.state.tasks[0].timeout_at);
    // authorize lands: it completed, so it is undone first, then pick.
    let d = at(&def, d.state, 3, ok(AUTH, 1));
    assert_eq!(
        tasks(&d),
        vec![(
            "payments.void".into(),
            TaskKind::Compensation,
            1,
            Duration::ZERO
        )]
    );
    let void = "c-1:authorize:compensation#1";
    let d = at(&def, d.state, 4, ok(void, 1));
    assert_eq!(
        tasks(&d),
        vec![(
            "inventory.unpick".into(),
            TaskKind::Compensation,
            1,
            Duration::ZERO
        )]
    );
    let d = at(&def, d.state, 5, ok("c-1:pick:compensation#1", 1));
    assert_eq!(d.state.status, SagaStatus::Compensated);
    // The failed branch is not compensated.
    assert_eq!(d.state.steps[1].branches[0].status, StepStatus::Failed);
    assert_eq!(d.state.error.as_ref().unwrap().code, "card_declined");
}

#[test]
fn a_branch_failing_while_the_saga_compensates_is_not_retried() {
    let def = checkout();
    let d = into_prepare(&def);
    let d = at(&def, d.state, 2, fail(RES, 1, "card_declined", false));
    // authorize fails retryably: no retry, the saga only waited for its answer.
    let d = at(&def, d.state, 3, fail(AUTH, 1, "timeout", true));
    assert!(!events(&d).contains(&"retry_scheduled"));
    let failed = d.history.iter().find(|h| h.event == "step_failed").unwrap();
    assert_eq!(failed.detail["reason"], "compensating");
    assert_eq!(
        tasks(&d),
        vec![(
            "inventory.unpick".into(),
            TaskKind::Compensation,
            1,
            Duration::ZERO
        )]
    );
    // The first error stays the saga's error.
    assert_eq!(d.state.error.as_ref().unwrap().code, "card_declined");
}

#[test]
fn cancel_awaits_every_branch_in_flight_and_undoes_them_in_completion_order() {
    let def = checkout();
    let d = into_prepare(&def);
    let d = at(
        &def,
        d.state,
        2,
        Event::Cancel {
            reason: "customer".into(),
        },
    );
    assert_eq!(d.state.status, SagaStatus::Compensating);
    assert!(d.commands.is_empty());
    let d = at(&def, d.state, 3, ok(AUTH, 1));
    assert!(d.commands.is_empty(), "reserve still out");
    let d = at(&def, d.state, 4, ok(RES, 1));
    // reserve completed last: undone first.
    assert_eq!(
        tasks(&d),
        vec![(
            "inventory.release".into(),
            TaskKind::Compensation,
            1,
            Duration::ZERO
        )]
    );
    let d = at(&def, d.state, 5, ok("c-1:reserve:compensation#1", 1));
    assert_eq!(tasks(&d)[0].0, "payments.void");
    let d = at(&def, d.state, 6, ok("c-1:authorize:compensation#1", 1));
    assert_eq!(tasks(&d)[0].0, "inventory.unpick");
    let d = at(&def, d.state, 7, ok("c-1:pick:compensation#1", 1));
    assert_eq!(d.state.status, SagaStatus::Cancelled);
}

#[test]
fn an_operator_skip_drops_branches_in_flight_and_their_late_answers_are_stale() {
    let def = checkout();
    let d = into_prepare(&def);
    let d = at(&def, d.state, 2, ok(AUTH, 1));
    let issued = IssuedFor::of(&def, &d.state);
    let action = OperatorAction::Skip {
        output: json!({"manual": true}),
    };
    let d = operate(&def, d.state, &action, &issued, Some("ops"), secs(3)).unwrap();
    assert_eq!(task_ids(&d), vec![SHIP]);
    assert_eq!(d.state.steps[1].output, Some(json!({"manual": true})));
    assert_eq!(d.state.steps[1].branches[0].status, StepStatus::Pending);
    assert_eq!(d.state.steps[1].branches[1].status, StepStatus::Completed);
    let late = at(&def, d.state, 4, ok(RES, 1));
    assert!(late.is_noop(), "the dropped reserve chain is stale");
}

#[test]
fn sleeps_in_branches_each_keep_their_own_timer_and_wake_at_is_the_earliest() {
    let def = def_with(vec![Step::new(
        "timers",
        StepKind::Parallel(vec![
            Step::new("short", StepKind::Sleep(Duration::from_secs(10))),
            Step::new("long", StepKind::Sleep(Duration::from_secs(100))),
            wait_step("nudge", "nudge", Some(50)),
        ]),
    )]);
    let s = begin(&def);
    assert_eq!(s.next_wake(), Some(secs(10)));
    let early = at(&def, s.clone(), 5, Event::Wake);
    assert!(early.is_noop(), "nothing due yet");
    let d = at(&def, s, 10, Event::Wake);
    assert_eq!(events(&d), vec!["sleep_completed"]);
    assert_eq!(d.state.next_wake(), Some(secs(50)));
    let d = at(&def, d.state, 50, signal("nudge"));
    assert_eq!(d.state.next_wake(), Some(secs(100)));
    // A late wake handles everything that is due in one go.
    let d = at(&def, d.state, 200, Event::Wake);
    assert_eq!(d.state.status, SagaStatus::Completed);
}

#[test]
fn a_wake_past_several_deadlines_handles_each_once() {
    let def = def_with(vec![Step::new(
        "timers",
        StepKind::Parallel(vec![
            Step::new("a", StepKind::Sleep(Duration::from_secs(10))),
            Step::new("b", StepKind::Sleep(Duration::from_secs(20))),
        ]),
    )]);
    let d = at(&def, begin(&def), 30, Event::Wake);
    let sleeps = events(&d)
        .into_iter()
        .filter(|e| *e == "sleep_completed")
        .count();
    assert_eq!(sleeps, 2);
    assert_eq!(d.state.status, SagaStatus::Completed);
}

#[test]
fn a_signal_reaches_the_waiting_branch_and_an_early_one_is_buffered() {
    let def = checkout();
    let s = begin(&def);
    let d = at(&def, s, 1, signal("screened"));
    assert_eq!(events(&d), vec!["signal_buffered"]);
    let d = at(&def, d.state, 2, ok(FIRST, 1));
    // The wait branch takes the buffered signal as it starts.
    assert_eq!(d.state.steps[1].branches[2].status, StepStatus::Completed);
    assert!(d.state.signals.is_empty());
}

fn cond(text: &str) -> Option<Condition> {
    Some(Condition::parse(text).unwrap())
}

fn shop() -> Definition {
    let mut ship = activity("ship", "shipping.ship", Some("shipping.recall"));
    ship.when = cond("!input.digital");
    def_with(vec![
        activity("charge", "payments.charge", Some("payments.refund")),
        ship,
        activity("notify", "mail.send", None),
    ])
}

#[test]
fn a_step_whose_when_does_not_hold_is_skipped_recorded_and_null() {
    let def = shop();
    let s = start(&def, "c-1", json!({"digital": true}), None, t0()).state;
    let d = apply(&def, s, ok("c-1:charge:action#1", 1), secs(1));
    assert_eq!(tasks(&d)[0].0, "mail.send");
    let skipped = d
        .history
        .iter()
        .find(|h| h.event == "step_skipped")
        .unwrap();
    assert_eq!(skipped.step.as_deref(), Some("ship"));
    assert_eq!(skipped.detail["reason"], "when");
    assert_eq!(skipped.detail["when"], "!input.digital");
    assert_eq!(d.state.steps[1].status, StepStatus::Skipped);
    let Command::Dispatch { task, .. } = &d.commands[0] else {
        panic!()
    };
    assert_eq!(task.input["steps"]["ship"], Value::Null);
    // Failing later undoes charge only: the skipped step is not compensated.
    let d = apply(
        &def,
        d.state,
        fail("c-1:notify:action#1", 1, "x", false),
        secs(2),
    );
    assert_eq!(
        tasks(&d),
        vec![(
            "payments.refund".into(),
            TaskKind::Compensation,
            1,
            Duration::ZERO
        )]
    );
}

#[test]
fn a_step_whose_when_holds_runs() {
    let def = shop();
    let s = start(&def, "c-1", json!({"digital": false}), None, t0()).state;
    let d = apply(&def, s, ok("c-1:charge:action#1", 1), secs(1));
    assert_eq!(tasks(&d)[0].0, "shipping.ship");
}

#[test]
fn a_branch_can_be_skipped_and_the_group_still_completes() {
    let mut screen = activity("screen", "fraud.screen", None);
    screen.when = cond("input.risky");
    let def = def_with(vec![Step::new(
        "prepare",
        StepKind::Parallel(vec![activity("reserve", "inventory.reserve", None), screen]),
    )]);
    let d = start(&def, "c-1", json!({}), None, t0());
    assert_eq!(task_ids(&d), vec![RES]);
    let d = apply(&def, d.state, ok(RES, 1), secs(1));
    assert_eq!(d.state.status, SagaStatus::Completed);
    assert_eq!(
        d.state.steps[0].output,
        Some(json!({"reserve": {"done": RES}, "screen": null}))
    );
}

fn mapped() -> Definition {
    let mut charge = activity("charge", "payments.charge", Some("payments.refund"));
    charge.input = Some(BTreeMap::from([
        (
            "order".to_string(),
            ValuePath::parse("input.order.id").unwrap(),
        ),
        (
            "token".to_string(),
            ValuePath::parse("steps.pick.token").unwrap(),
        ),
    ]));
    def_with(vec![activity("pick", "inventory.pick", None), charge])
}

#[test]
fn an_input_map_makes_the_task_carry_only_those_values() {
    let def = mapped();
    let s = start(
        &def,
        "c-1",
        json!({"order": {"id": 9}, "secret": "x"}),
        None,
        t0(),
    )
    .state;
    let pick = Event::Result {
        task_id: FIRST.into(),
        attempt: Some(1),
        result: Ok(json!({"token": "tok"})),
    };
    let d = apply(&def, s, pick, secs(1));
    let Command::Dispatch { task, .. } = &d.commands[0] else {
        panic!()
    };
    assert_eq!(task.input, json!({"order": 9, "token": "tok"}));
    // Its compensation gets the same values and the action's output.
    let d = apply(&def, d.state, ok("c-1:charge:action#1", 1), secs(2));
    assert_eq!(d.state.status, SagaStatus::Completed);
    let mut s = d.state;
    s.status = SagaStatus::Running;
    let d = apply(&def, s, Event::Cancel { reason: "x".into() }, secs(3));
    let Command::Dispatch { task, .. } = &d.commands[0] else {
        panic!()
    };
    assert_eq!(task.activity, "payments.refund");
    assert_eq!(
        task.input,
        json!({"order": 9, "token": "tok", "output": {"done": "c-1:charge:action#1"}})
    );
}

#[test]
fn an_input_path_that_is_missing_fails_the_step_without_running_it() {
    let def = mapped();
    let s = start(&def, "c-1", json!({}), None, t0()).state;
    let d = apply(&def, s, ok(FIRST, 1), secs(1));
    assert!(task_ids(&d).is_empty());
    let failed = d.history.iter().find(|h| h.event == "step_failed").unwrap();
    assert_eq!(failed.detail["reason"], "bad_input");
    assert_eq!(
        d.state.status,
        SagaStatus::Failed,
        "pick has no compensation"
    );
}

#[test]
fn a_state_written_before_parallel_steps_reads_its_single_active_task() {
    let def = super::tests::order();
    let s = start(&def, "o-1", json!({}), None, t0()).state;
    let mut stored = serde_json::to_value(&s).unwrap();
    let task = stored["tasks"][0].clone();
    let obj = stored.as_object_mut().unwrap();
    obj.remove("tasks");
    obj.insert("active".into(), task);
    let back: SagaState = serde_json::from_value(stored).unwrap();
    assert_eq!(back, s);
    let d = apply(&def, back, ok("o-1:reserve:action#1", 1), secs(1));
    assert_eq!(tasks(&d)[0].0, "payments.charge");
}

#[test]
fn retry_reopens_every_branch_chain_in_flight() {
    let def = checkout();
    let d = into_prepare(&def);
    let issued = IssuedFor::of(&def, &d.state);
    assert_eq!(
        issued.task_id.as_deref(),
        Some(format!("{RES},{AUTH}").as_str())
    );
    let d = operate(
        &def,
        d.state,
        &OperatorAction::Retry,
        &issued,
        None,
        secs(2),
    )
    .unwrap();
    assert_eq!(
        task_ids(&d),
        vec!["c-1:reserve:action#2", "c-1:authorize:action#2"]
    );
    assert!(at(&def, d.state, 3, ok(RES, 1)).is_noop());
}

// ----- child sagas ------------------------------------------------------------------

/// review (child saga `manual_review`) -> charge (fails on demand).
fn parent_def() -> Definition {
    def_with(vec![
        Step::new("review", StepKind::Saga("manual_review".into())),
        activity("charge", "payments.charge", None),
    ])
}

fn child_def() -> Definition {
    let mut d = def_with(vec![activity("check", "review.check", Some("review.undo"))]);
    d.name = "manual_review".into();
    d
}

const REVIEW: &str = "p-1:review:action#1";

fn started_child(d: &Decision) -> crate::messages::StartEvent {
    d.commands
        .iter()
        .find_map(|c| match c {
            Command::StartChild(s) => Some(s.clone()),
            _ => None,
        })
        .expect("a child start")
}

fn reply(d: &Decision) -> crate::messages::ResultMessage {
    d.commands
        .iter()
        .find_map(|c| match c {
            Command::Reply(r) => Some(r.clone()),
            _ => None,
        })
        .expect("a reply to the parent")
}

/// Feeds the child's reply to the parent as the coordinator would.
fn answer(r: &crate::messages::ResultMessage) -> Event {
    Event::Result {
        task_id: r.task_id.clone(),
        attempt: r.attempt,
        result: r.clone().into_outcome().unwrap(),
    }
}

#[test]
fn a_child_saga_step_starts_the_child_and_completes_with_its_output() {
    let (pdef, cdef) = (parent_def(), child_def());
    let p = start(&pdef, "p-1", json!({"order": 3}), None, t0());
    let s = started_child(&p);
    assert_eq!(s.id.as_deref(), Some("p-1/review"));
    assert_eq!(s.saga.as_deref(), Some("manual_review"));
    assert_eq!(s.input, json!({"order": 3}), "the parent's input");
    let link = s.parent.clone().unwrap();
    assert_eq!(
        (link.saga_id.as_str(), link.task_id.as_str()),
        ("p-1", REVIEW)
    );
    assert_eq!(p.state.tasks[0].child.as_deref(), Some("p-1/review"));
    assert_eq!(
        p.state.next_wake(),
        None,
        "a child may take days: no deadline"
    );
    // The child runs and answers the parent's chain with its output.
    let c = start_child(&cdef, "p-1/review", s.input, None, s.parent, t0());
    let c = apply(&cdef, c.state, ok("p-1/review:check:action#1", 1), secs(1));
    assert_eq!(c.state.status, SagaStatus::Completed);
    let r = reply(&c);
    assert_eq!(r.output, Some(json!({"done": "p-1/review:check:action#1"})));
    let p = apply(&pdef, p.state, answer(&r), secs(2));
    assert_eq!(tasks(&p)[0].0, "payments.charge");
    let dup = apply(&pdef, p.state.clone(), answer(&r), secs(3));
    assert!(dup.is_noop(), "a repeated child answer is stale");
}

#[test]
fn compensating_the_parent_undoes_a_completed_child_exactly_once() {
    let (pdef, cdef) = (parent_def(), child_def());
    let p = start(&pdef, "p-1", json!({}), None, t0());
    let s = started_child(&p);
    let c = start_child(&cdef, "p-1/review", json!({}), None, s.parent, t0());
    let c = apply(&cdef, c.state, ok("p-1/review:check:action#1", 1), secs(1));
    let p = apply(&pdef, p.state, answer(&reply(&c)), secs(2));
    let p = apply(
        &pdef,
        p.state,
        fail("p-1:charge:action#1", 1, "x", false),
        secs(3),
    );
    assert_eq!(p.state.status, SagaStatus::Compensating);
    let undo = p
        .commands
        .iter()
        .find_map(|cmd| match cmd {
            Command::UndoChild { saga_id, parent } => Some((saga_id.clone(), parent.clone())),
            _ => None,
        })
        .expect("the child is asked to undo itself");
    assert_eq!(undo.0, "p-1/review");
    // The child undoes its completed step and ends compensated.
    let c = apply(
        &cdef,
        c.state,
        Event::Undo {
            parent: undo.1.clone(),
        },
        secs(4),
    );
    assert_eq!(c.state.status, SagaStatus::Compensating);
    assert_eq!(tasks(&c)[0].0, "review.undo");
    let again = apply(
        &cdef,
        c.state.clone(),
        Event::Undo {
            parent: undo.1.clone(),
        },
        secs(4),
    );
    assert!(again.is_noop(), "a repeated undo is a duplicate");
    let c = apply(
        &cdef,
        c.state,
        ok("p-1/review:check:compensation#1", 1),
        secs(5),
    );
    assert_eq!(c.state.status, SagaStatus::Compensated);
    let r = reply(&c);
    assert_eq!(r.task_id, "p-1:review:compensation#1");
    let p = apply(&pdef, p.state, answer(&r), secs(6));
    assert_eq!(p.state.status, SagaStatus::Compensated);
    // An undo for a saga that is not this parent's child is ignored.
    let stray = crate::messages::ParentLink {
        saga_id: "other".into(),
        task_id: "x".into(),
    };
    let done = apply(&cdef, c.state, Event::Undo { parent: stray }, secs(7));
    assert!(done.is_noop());
}

#[test]
fn a_child_that_compensates_fails_the_parent_step_for_good() {
    let (pdef, cdef) = (parent_def(), child_def());
    let p = start(&pdef, "p-1", json!({}), None, t0());
    let s = started_child(&p);
    let c = start_child(&cdef, "p-1/review", json!({}), None, s.parent, t0());
    let c = apply(
        &cdef,
        c.state,
        fail("p-1/review:check:action#1", 1, "no", false),
        secs(1),
    );
    assert_eq!(c.state.status, SagaStatus::Compensated);
    let r = reply(&c);
    assert_eq!(r.error.as_ref().unwrap().code, "child_compensated");
    let p = apply(&pdef, p.state, answer(&r), secs(2));
    assert_eq!(p.state.status, SagaStatus::Compensated);
    assert_eq!(p.state.error.as_ref().unwrap().code, "child_compensated");
}

#[test]
fn cancelling_the_parent_cancels_its_running_child_and_awaits_it() {
    let (pdef, cdef) = (parent_def(), child_def());
    let p = start(&pdef, "p-1", json!({}), None, t0());
    let s = started_child(&p);
    let cancel = Event::Cancel {
        reason: "customer".into(),
    };
    let p = apply(&pdef, p.state, cancel, secs(1));
    let Some(Command::CancelChild { saga_id, .. }) = p.commands.first() else {
        panic!("{:?}", p.commands)
    };
    assert_eq!(saga_id, "p-1/review");
    assert_eq!(p.state.status, SagaStatus::Compensating);
    // The child stops, undoes nothing yet in flight... and answers cancelled.
    let c = start_child(&cdef, "p-1/review", json!({}), None, s.parent, t0());
    let c = apply(
        &cdef,
        c.state,
        Event::Cancel {
            reason: "parent".into(),
        },
        secs(2),
    );
    let c = apply(&cdef, c.state, ok("p-1/review:check:action#1", 1), secs(3));
    let c = apply(
        &cdef,
        c.state,
        ok("p-1/review:check:compensation#1", 1),
        secs(4),
    );
    assert_eq!(c.state.status, SagaStatus::Cancelled);
    let p = apply(&pdef, p.state, answer(&reply(&c)), secs(5));
    assert_eq!(p.state.status, SagaStatus::Cancelled);
}

#[test]
fn retry_refuses_a_chain_a_child_saga_answers() {
    let pdef = parent_def();
    let p = start(&pdef, "p-1", json!({}), None, t0());
    let issued = IssuedFor::of(&pdef, &p.state);
    let err = operate(
        &pdef,
        p.state,
        &OperatorAction::Retry,
        &issued,
        None,
        secs(1),
    )
    .unwrap_err();
    assert!(err.contains("child saga p-1/review"), "{err}");
}

#[test]
fn an_operator_compensate_cancels_running_children_and_skip_refuses_them() {
    let pdef = parent_def();
    let p = start(&pdef, "p-1", json!({}), None, t0());
    let issued = IssuedFor::of(&pdef, &p.state);
    let skip = OperatorAction::Skip { output: json!(1) };
    let err = operate(&pdef, p.state.clone(), &skip, &issued, None, secs(1)).unwrap_err();
    assert!(err.contains("child saga p-1/review"), "{err}");
    let d = operate(
        &pdef,
        p.state,
        &OperatorAction::Compensate,
        &issued,
        None,
        secs(1),
    )
    .unwrap();
    assert!(d
        .commands
        .iter()
        .any(|c| matches!(c, Command::CancelChild { saga_id, .. } if saga_id == "p-1/review")));
    assert_eq!(
        d.state.status,
        SagaStatus::Compensated,
        "nothing completed: nothing to undo"
    );
}

#[test]
fn a_repeated_undo_after_the_child_was_undone_answers_again() {
    let (pdef, cdef) = (parent_def(), child_def());
    let p = start(&pdef, "p-1", json!({}), None, t0());
    let s = started_child(&p);
    let c = start_child(&cdef, "p-1/review", json!({}), None, s.parent, t0());
    let c = apply(&cdef, c.state, ok("p-1/review:check:action#1", 1), secs(1));
    let link = crate::messages::ParentLink {
        saga_id: "p-1".into(),
        task_id: "p-1:review:compensation#1".into(),
    };
    let c = apply(
        &cdef,
        c.state,
        Event::Undo {
            parent: link.clone(),
        },
        secs(2),
    );
    let c = apply(
        &cdef,
        c.state,
        ok("p-1/review:check:compensation#1", 1),
        secs(3),
    );
    assert_eq!(c.state.status, SagaStatus::Compensated);
    let again = apply(
        &cdef,
        c.state,
        Event::Undo {
            parent: link.clone(),
        },
        secs(4),
    );
    let r = reply(&again);
    assert_eq!(
        (r.task_id.as_str(), r.outcome.clone()),
        (link.task_id.as_str(), crate::messages::Outcome::Ok)
    );
}
