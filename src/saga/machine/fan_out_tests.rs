//! Unit tests of `for_each`: every transition of a fan-out through the pure machine,
//! with the element rows kept by [`Rows`], which plays the coordinator's part
//! (write a decision's rows, answer its need) exactly as `coordinator::batch` does.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::tests::{activity, def_with, events, fail, ok, published, secs, t0};
use super::*;
use crate::messages::TaskKind;
use crate::saga::definition::{ForEach, ValuePath};
use crate::saga::state::StepStatus;

/// pick (compensable) -> send_each over input.to, 3 at a time -> done.
fn newsletter(compensate: Option<&str>, max: u32) -> Definition {
    let mut each = activity("send_each", "email.send", compensate);
    each.for_each = Some(ForEach {
        items: ValuePath::parse("input.to").unwrap(),
        max_concurrency: max,
    });
    def_with(vec![
        activity("pick", "lists.pick", Some("lists.unpick")),
        each,
        activity("done", "lists.done", None),
    ])
}

const PICK: &str = "n-1:pick:action#1";

fn elem(i: u32) -> String {
    format!("n-1:send_each[{i}]:action#1")
}

fn undo(i: u32) -> String {
    format!("n-1:send_each[{i}]:compensation#1")
}

/// The stored element rows: (step, generation, index) -> (status, seq, output).
#[derive(Default, Clone)]
pub(super) struct Rows(BTreeMap<(usize, u32, u32), (&'static str, u32, Value)>);

impl Rows {
    /// Applies `e` at second `n` and settles the decision like the coordinator:
    /// rows written, needs answered, until none is left. Returns every decision.
    pub(super) fn apply(
        &mut self,
        def: &Definition,
        state: SagaState,
        n: i64,
        e: Event,
    ) -> Vec<Decision> {
        let mut out = vec![apply(def, state, e, secs(n))];
        while let Some(need) = self.take(out.last_mut().unwrap()) {
            let state = out.last().unwrap().state.clone();
            out.push(apply(def, state, self.answer(need), secs(n)));
        }
        out
    }

    fn take(&mut self, d: &mut Decision) -> Option<Need> {
        for w in &d.elements {
            match w {
                ElementWrite::Completed {
                    step,
                    generation,
                    index,
                    output,
                    seq,
                } => {
                    let key = (*step, *generation, *index);
                    let fresh = self.0.insert(key, ("completed", *seq, output.clone()));
                    assert!(fresh.is_none(), "element {index} completed twice");
                }
                ElementWrite::Compensated {
                    step,
                    generation,
                    index,
                } => {
                    let row = self.0.get_mut(&(*step, *generation, *index)).unwrap();
                    assert_eq!(row.0, "completed", "element {index} undone twice");
                    row.0 = "compensated";
                }
            }
        }
        d.need.take()
    }

    /// The event that answers `need` from the rows, as the coordinator reads them.
    pub(super) fn answer(&self, need: Need) -> Event {
        match need {
            Need::ElementOutputs { step, generation } => Event::ElementOutputs {
                step,
                outputs: self
                    .0
                    .iter()
                    .filter(|((s, g, _), _)| *s == step && *g == generation)
                    .map(|(_, (_, _, o))| o.clone())
                    .collect(),
            },
            Need::ElementsToUndo {
                step,
                generation,
                limit,
                exclude,
            } => {
                let mut found: Vec<CompletedElement> = self
                    .0
                    .iter()
                    .filter(|((s, g, i), (st, _, _))| {
                        *s == step && *g == generation && *st == "completed" && !exclude.contains(i)
                    })
                    .map(|((_, _, i), (_, seq, o))| CompletedElement {
                        index: *i,
                        output: o.clone(),
                        seq: *seq,
                    })
                    .collect();
                found.sort_by_key(|e| std::cmp::Reverse(e.seq));
                found.truncate(limit as usize);
                Event::ElementsToUndo {
                    step,
                    elements: found,
                }
            }
        }
    }

    fn status(&self, i: u32) -> Option<&'static str> {
        self.0.get(&(1, 0, i)).map(|r| r.0)
    }
}

fn last(ds: &[Decision]) -> &Decision {
    ds.last().unwrap()
}

/// Every task dispatched over the decisions: (task id, index, item).
fn dispatched(ds: &[Decision]) -> Vec<(String, Option<u32>, Option<Value>)> {
    ds.iter()
        .flat_map(|d| &d.commands)
        .filter_map(|c| match c {
            Command::Dispatch { task, .. } => {
                Some((task.task_id.clone(), task.index, task.item.clone()))
            }
            _ => None,
        })
        .collect()
}

fn all_events(ds: &[Decision]) -> Vec<&'static str> {
    ds.iter().flat_map(events).collect()
}

/// A saga over `to` with `pick` answered: the fan-out has begun.
fn fanned(def: &Definition, rows: &mut Rows, to: Value) -> Vec<Decision> {
    let s = start(def, "n-1", json!({ "to": to }), None, t0()).state;
    rows.apply(def, s, 1, ok(PICK, 1))
}

#[test]
fn a_fan_out_starts_max_concurrency_elements_with_item_and_index() {
    let def = newsletter(Some("email.recall"), 3);
    let mut rows = Rows::default();
    let ds = fanned(&def, &mut rows, json!(["a", "b", "c", "d", "e"]));
    let d = last(&ds);
    assert_eq!(
        dispatched(&ds),
        vec![
            (elem(0), Some(0), Some(json!("a"))),
            (elem(1), Some(1), Some(json!("b"))),
            (elem(2), Some(2), Some(json!("c"))),
        ]
    );
    let Command::Dispatch { task, .. } = &d.commands[0] else {
        panic!()
    };
    assert_eq!(task.step, "send_each");
    assert_eq!(task.idempotency_key, "n-1:send_each[0]:action");
    assert_eq!(task.input["steps"]["pick"], json!({"done": PICK}));
    let started = d
        .history
        .iter()
        .find(|h| h.event == "for_each_started")
        .unwrap();
    assert_eq!(started.detail["elements"], 5);
    let first = d
        .history
        .iter()
        .find(|h| h.event == "step_started")
        .unwrap();
    assert_eq!(first.step.as_deref(), Some("send_each[0]"));
    assert_eq!(first.detail["in"], "send_each");
    assert_eq!(first.detail["index"], 0);
    let p = d.state.steps[1].fan_out.as_ref().unwrap();
    assert_eq!((p.total, p.started, p.completed), (5, 3, 0));
    assert_eq!(d.state.tasks.len(), 3);
}

#[test]
fn each_answer_writes_one_row_and_starts_the_next_element() {
    let def = newsletter(Some("email.recall"), 3);
    let mut rows = Rows::default();
    let s = last(&fanned(&def, &mut rows, json!(["a", "b", "c", "d", "e"])))
        .state
        .clone();
    let ds = rows.apply(&def, s, 2, ok(&elem(1), 1));
    assert_eq!(dispatched(&ds), vec![(elem(3), Some(3), Some(json!("d")))]);
    assert_eq!(rows.status(1), Some("completed"));
    let d = last(&ds);
    assert!(
        !d.state.steps[1].elements.contains_key(&1),
        "a finished element leaves the state"
    );
    assert_eq!(d.state.steps[1].elements.len(), 3);
    // The same answer again, and an answer for an attempt that is not current: nothing.
    assert!(apply(&def, d.state.clone(), ok(&elem(1), 1), secs(3)).is_noop());
    assert!(apply(&def, d.state.clone(), ok(&elem(0), 2), secs(3)).is_noop());
}

#[test]
fn the_step_completes_with_every_output_in_element_order() {
    let def = newsletter(Some("email.recall"), 2);
    let mut rows = Rows::default();
    let mut s = last(&fanned(&def, &mut rows, json!(["a", "b", "c"])))
        .state
        .clone();
    // Answered out of order: 1, 0, 2.
    for (n, i) in [(2, 1), (3, 0), (4, 2)] {
        s = last(&rows.apply(&def, s, n, ok(&elem(i), 1))).state.clone();
    }
    assert_eq!(s.steps[1].status, StepStatus::Completed);
    assert_eq!(
        s.steps[1].output,
        Some(json!([{"done": elem(0)}, {"done": elem(1)}, {"done": elem(2)}]))
    );
    assert_eq!(s.tasks.len(), 1);
    assert_eq!(s.tasks[0].task_id, "n-1:done:action#1");
}

#[test]
fn the_done_step_sees_the_fan_out_output() {
    let def = newsletter(None, 1);
    let mut rows = Rows::default();
    let s = last(&fanned(&def, &mut rows, json!(["a"]))).state.clone();
    let ds = rows.apply(&def, s, 2, ok(&elem(0), 1));
    let d = last(&ds);
    let Command::Dispatch { task, .. } = &d.commands[0] else {
        panic!("{:?}", d.commands)
    };
    assert_eq!(task.input["steps"]["send_each"], json!([{"done": elem(0)}]));
    let s = last(&rows.apply(&def, d.state.clone(), 3, ok("n-1:done:action#1", 1)))
        .state
        .clone();
    assert_eq!(s.status, SagaStatus::Completed);
}

#[test]
fn an_empty_array_completes_the_step_at_once() {
    let def = newsletter(Some("email.recall"), 3);
    let mut rows = Rows::default();
    let ds = fanned(&def, &mut rows, json!([]));
    let d = last(&ds);
    assert_eq!(d.state.steps[1].status, StepStatus::Completed);
    assert_eq!(d.state.steps[1].output, Some(json!([])));
    assert_eq!(dispatched(&ds)[0].0, "n-1:done:action#1");
}

#[test]
fn a_value_that_is_not_an_array_fails_the_step_with_bad_input() {
    let def = newsletter(Some("email.recall"), 3);
    let mut rows = Rows::default();
    let ds = fanned(&def, &mut rows, json!("a@x"));
    let d = last(&ds);
    assert_eq!(d.state.status, SagaStatus::Compensating);
    let err = d.state.error.as_ref().unwrap();
    assert_eq!(err.code, "bad_input");
    assert!(
        err.message
            .contains("`input.to` is not an array (it is a string)"),
        "{err:?}"
    );
    // pick is undone next.
    assert_eq!(
        dispatched(&ds),
        vec![("n-1:pick:compensation#1".into(), None, None)]
    );
}

/// Five elements, two at a time: 0 and 1 complete, 2 fails for good while 3 runs.
fn failing(rows: &mut Rows) -> (Definition, SagaState) {
    let def = newsletter(Some("email.recall"), 2);
    let mut s = last(&fanned(&def, rows, json!(["a", "b", "c", "d", "e"])))
        .state
        .clone();
    for (n, e) in [(2, ok(&elem(0), 1)), (3, ok(&elem(1), 1))] {
        s = last(&rows.apply(&def, s, n, e)).state.clone();
    }
    let ds = rows.apply(&def, s, 4, fail(&elem(2), 1, "card_declined", false));
    (def, last(&ds).state.clone())
}

#[test]
fn a_failed_element_stops_the_fan_out_and_awaits_the_ones_in_flight() {
    let mut rows = Rows::default();
    let (def, s) = failing(&mut rows);
    assert_eq!(s.status, SagaStatus::Compensating);
    assert_eq!(s.steps[1].status, StepStatus::Failed);
    let p = s.steps[1].fan_out.as_ref().unwrap();
    assert_eq!((p.started, p.completed, p.failed), (4, 2, 1));
    // Element 3 is still in flight: nothing is undone yet, no element starts.
    assert_eq!(s.tasks.len(), 1);
    assert_eq!(s.tasks[0].task_id, elem(3));
    // Its success lands and is then undone with the others, latest-completed first,
    // both slots used; the failed element 2 is not undone.
    let ds = rows.apply(&def, s, 5, ok(&elem(3), 1));
    let ids: Vec<String> = dispatched(&ds).into_iter().map(|t| t.0).collect();
    assert_eq!(ids, vec![undo(3), undo(1)]);
    let Command::Dispatch { task, .. } = &last(&ds).commands[0] else {
        panic!()
    };
    assert_eq!(task.kind, TaskKind::Compensation);
    assert_eq!(task.item, Some(json!("d")));
    assert_eq!(task.input["output"], json!({"done": elem(3)}));
    assert_eq!(task.idempotency_key, "n-1:send_each[3]:compensation");
}

#[test]
fn compensation_undoes_every_completed_element_once_then_earlier_steps() {
    let mut rows = Rows::default();
    let (def, s) = failing(&mut rows);
    let mut s = last(&rows.apply(&def, s, 5, ok(&elem(3), 1))).state.clone();
    let ds = rows.apply(&def, s.clone(), 6, ok(&undo(3), 1));
    assert_eq!(dispatched(&ds)[0].0, undo(0));
    s = last(&ds).state.clone();
    s = last(&rows.apply(&def, s, 7, ok(&undo(1), 1))).state.clone();
    assert!(apply(&def, s.clone(), ok(&undo(1), 1), secs(8)).is_noop());
    let ds = rows.apply(&def, s, 8, ok(&undo(0), 1));
    assert_eq!(dispatched(&ds)[0].0, "n-1:pick:compensation#1");
    let s = last(&ds).state.clone();
    assert_eq!(s.steps[1].status, StepStatus::Compensated);
    assert_eq!(s.steps[1].fan_out.as_ref().unwrap().compensated, 3);
    for i in [0, 1, 3] {
        assert_eq!(rows.status(i), Some("compensated"), "element {i}");
    }
    assert_eq!(rows.status(2), None, "the failed element has no row");
    let ds = rows.apply(&def, s, 9, ok("n-1:pick:compensation#1", 1));
    assert_eq!(published(last(&ds)), vec!["compensated"]);
}

#[test]
fn a_fan_out_without_compensation_leaves_the_saga_failed() {
    let def = newsletter(None, 2);
    let mut rows = Rows::default();
    let s = last(&fanned(&def, &mut rows, json!(["a", "b", "c"])))
        .state
        .clone();
    let s = last(&rows.apply(&def, s, 2, ok(&elem(0), 1))).state.clone();
    let s = last(&rows.apply(&def, s, 3, fail(&elem(1), 1, "card_declined", false)))
        .state
        .clone();
    let ds = rows.apply(&def, s, 4, fail(&elem(2), 1, "card_declined", false));
    assert!(all_events(&ds).contains(&"step_not_compensable"));
    let s = last(&rows.apply(
        &def,
        last(&ds).state.clone(),
        5,
        ok("n-1:pick:compensation#1", 1),
    ))
    .state
    .clone();
    assert_eq!(s.status, SagaStatus::Failed);
}

#[test]
fn cancel_during_a_fan_out_awaits_in_flight_elements_then_undoes_them() {
    let def = newsletter(Some("email.recall"), 2);
    let mut rows = Rows::default();
    let s = last(&fanned(&def, &mut rows, json!(["a", "b", "c"])))
        .state
        .clone();
    let s = last(&rows.apply(&def, s, 2, ok(&elem(0), 1))).state.clone();
    let cancel = Event::Cancel {
        reason: "user".into(),
    };
    let ds = rows.apply(&def, s, 3, cancel);
    assert!(
        dispatched(&ds).is_empty(),
        "no element starts, nothing is undone yet"
    );
    let s = last(&ds).state.clone();
    assert_eq!(s.status, SagaStatus::Compensating);
    // A late retryable failure of an element in flight is not retried; the other
    // one's success is undone with the element completed before.
    let ds = rows.apply(&def, s, 4, fail(&elem(1), 1, "boom", true));
    assert!(dispatched(&ds).is_empty(), "element 2 is still in flight");
    let ds = rows.apply(&def, last(&ds).state.clone(), 5, ok(&elem(2), 1));
    let ids: Vec<String> = dispatched(&ds).into_iter().map(|t| t.0).collect();
    assert_eq!(ids, vec![undo(2), undo(0)]);
    let s = last(&ds).state.clone();
    let s = last(&rows.apply(&def, s, 6, ok(&undo(0), 1))).state.clone();
    let s = last(&rows.apply(&def, s, 7, ok(&undo(2), 1))).state.clone();
    let ds = rows.apply(&def, s, 8, ok("n-1:pick:compensation#1", 1));
    assert_eq!(published(last(&ds)), vec!["cancelled"]);
}

#[test]
fn the_state_holds_only_elements_in_flight_however_long_the_array() {
    let def = newsletter(Some("email.recall"), 10);
    let mut rows = Rows::default();
    let to: Vec<Value> = (0..1000).map(|i| json!(i)).collect();
    let mut s = last(&fanned(&def, &mut rows, json!(to))).state.clone();
    for i in 0..1000u32 {
        s = last(&rows.apply(&def, s, 2, ok(&elem(i), 1))).state.clone();
        assert!(s.steps[1].elements.len() <= 10 && s.tasks.len() <= 10);
    }
    assert_eq!(s.steps[1].status, StepStatus::Completed);
    assert_eq!(
        s.steps[1]
            .output
            .as_ref()
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1000
    );
    assert_eq!(rows.0.len(), 1000);
}

#[test]
fn an_element_attempt_retries_with_its_own_counter() {
    let def = newsletter(Some("email.recall"), 2);
    let mut rows = Rows::default();
    let s = last(&fanned(&def, &mut rows, json!(["a", "b"])))
        .state
        .clone();
    let ds = rows.apply(&def, s, 2, fail(&elem(1), 1, "busy", true));
    let d = last(&ds);
    assert_eq!(d.state.steps[1].elements[&1].attempts, 2);
    assert_eq!(d.state.steps[1].elements[&0].attempts, 1);
    let Command::Dispatch { task, .. } = &d.commands[0] else {
        panic!()
    };
    assert_eq!((task.task_id.as_str(), task.attempt), (elem(1).as_str(), 2));
    assert_eq!(task.item, Some(json!("b")));
}

#[test]
fn answers_for_a_step_that_is_not_waiting_for_them_are_ignored() {
    let def = newsletter(Some("email.recall"), 2);
    let mut rows = Rows::default();
    let s = last(&fanned(&def, &mut rows, json!(["a", "b"])))
        .state
        .clone();
    let early = Event::ElementOutputs {
        step: 1,
        outputs: vec![],
    };
    assert!(apply(&def, s.clone(), early, secs(2)).is_noop());
    let undo = Event::ElementsToUndo {
        step: 1,
        elements: vec![],
    };
    assert!(apply(&def, s, undo, secs(2)).is_noop());
}

#[test]
fn a_failed_element_compensation_fails_the_saga_and_an_operator_retry_resumes_it() {
    let def = newsletter(Some("email.recall"), 1);
    let mut rows = Rows::default();
    let s = last(&fanned(&def, &mut rows, json!(["a", "b"])))
        .state
        .clone();
    let s = last(&rows.apply(&def, s, 2, ok(&elem(0), 1))).state.clone();
    let s = last(&rows.apply(&def, s, 3, fail(&elem(1), 1, "card_declined", false)))
        .state
        .clone();
    let s = last(&rows.apply(&def, s, 4, fail(&undo(0), 1, "card_declined", false)))
        .state
        .clone();
    assert_eq!(s.status, SagaStatus::Failed);
    assert_eq!(
        s.steps[1].elements[&0].status,
        StepStatus::CompensationFailed
    );
    let issued = IssuedFor::of(&def, &s);
    let d = operate(&def, s, &OperatorAction::Retry, &issued, None, secs(5)).unwrap();
    assert_eq!(d.state.status, SagaStatus::Compensating);
    let Command::Dispatch { task, .. } = &d.commands[0] else {
        panic!()
    };
    assert_eq!(task.task_id, "n-1:send_each[0]:compensation#2");
    let ds = rows.apply(&def, d.state, 6, ok("n-1:send_each[0]:compensation#2", 1));
    assert_eq!(dispatched(&ds)[0].0, "n-1:pick:compensation#1");
    assert_eq!(rows.status(0), Some("compensated"));
}

#[test]
fn resume_at_a_fan_out_runs_it_again_from_no_rows() {
    let def = newsletter(Some("email.recall"), 1);
    let mut rows = Rows::default();
    let s = last(&fanned(&def, &mut rows, json!(["a"]))).state.clone();
    let s = last(&rows.apply(&def, s, 2, fail(&elem(0), 1, "card_declined", false)))
        .state
        .clone();
    let s = last(&rows.apply(&def, s, 3, ok("n-1:pick:compensation#1", 1)))
        .state
        .clone();
    assert_eq!(s.status, SagaStatus::Compensated);
    let issued = IssuedFor::of(&def, &s);
    let resume = OperatorAction::ResumeAt {
        step: "pick".into(),
    };
    let d = operate(&def, s, &resume, &issued, None, secs(4)).unwrap();
    let ds = rows.apply(&def, d.state, 5, ok("n-1:pick:action:g1#2", 1));
    let d = last(&ds);
    let p = d.state.steps[1].fan_out.as_ref().unwrap();
    assert_eq!((p.generation, p.started), (1, 1));
    let Command::Dispatch { task, .. } = &d.commands[0] else {
        panic!()
    };
    assert_eq!(task.idempotency_key, "n-1:send_each[0]:action:g1");
    let s = last(&rows.apply(&def, d.state.clone(), 6, ok(&task.task_id, 1)))
        .state
        .clone();
    assert_eq!(s.steps[1].output, Some(json!([{"done": task.task_id}])));
}

#[test]
fn an_element_times_out_like_any_attempt() {
    let def = newsletter(Some("email.recall"), 1);
    let mut rows = Rows::default();
    let s = last(&fanned(&def, &mut rows, json!(["a"]))).state.clone();
    let due = s.next_wake().unwrap();
    assert_eq!(due, s.tasks[0].timeout_at.unwrap());
    let ds = rows.apply(&def, s, (due - t0()).num_seconds() + 1, Event::Wake);
    let ev = all_events(&ds);
    assert!(
        ev.contains(&"attempt_timed_out") && ev.contains(&"retry_scheduled"),
        "{ev:?}"
    );
}

#[test]
fn a_skipped_fan_out_has_output_null() {
    let mut def = newsletter(Some("email.recall"), 1);
    def.steps[1].when = Some(crate::saga::path::Condition::parse("input.send").unwrap());
    let mut rows = Rows::default();
    let ds = fanned(&def, &mut rows, json!(["a"]));
    let d = last(&ds);
    assert_eq!(d.state.steps[1].status, StepStatus::Skipped);
    assert_eq!(dispatched(&ds)[0].0, "n-1:done:action#1");
}
