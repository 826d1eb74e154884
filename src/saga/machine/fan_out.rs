//! `for_each`: a step whose activity runs once per element of an array, at most
//! `max_concurrency` at a time.
//!
//! Cost stays O(1) per element answer however long the array: the state keeps only
//! counters ([`FanOut`]) and the elements in flight; a finished element is a row of
//! its own (`saga_elements`), written once by an [`ElementWrite`]. Two moments need
//! the rows back: the step completes (its output is every element's output, in
//! order) and compensation undoes the completed elements. For those the machine
//! states a [`Need`]; the coordinator reads the rows in the same transaction and
//! answers with [`Event::ElementOutputs`](super::Event::ElementOutputs) or
//! [`Event::ElementsToUndo`](super::Event::ElementsToUndo), so the machine stays pure.

use serde_json::{json, Value};

use super::units::Unit;
use super::{HistoryEvent, Run};
use crate::messages::{ErrorInfo, TaskKind};
use crate::saga::definition::{ForEach, MAX_ELEMENTS};
use crate::saga::state::{FanOut, SagaStatus, StepState, StepStatus};

/// A row of `saga_elements` to write with the state.
#[derive(Debug, Clone, PartialEq)]
pub enum ElementWrite {
    /// An element's action completed with `output`, `seq`-th in the saga's
    /// completion order.
    Completed {
        step: usize,
        generation: u32,
        index: u32,
        output: Value,
        seq: u32,
    },
    /// A completed element's compensation completed.
    Compensated {
        step: usize,
        generation: u32,
        index: u32,
    },
}

/// Stored element rows the machine asks for (see the module doc).
#[derive(Debug, Clone, PartialEq)]
pub enum Need {
    /// Every element's output of step `step`, in element order.
    ElementOutputs { step: usize, generation: u32 },
    /// Up to `limit` completed elements of step `step` not yet undone, latest-completed
    /// first, leaving out `exclude` (their compensation is in flight).
    ElementsToUndo {
        step: usize,
        generation: u32,
        limit: u32,
        exclude: Vec<u32>,
    },
}

/// A completed element read back for compensation.
#[derive(Debug, Clone, PartialEq)]
pub struct CompletedElement {
    pub index: u32,
    pub output: Value,
    pub seq: u32,
}

impl<'a> Run<'a> {
    /// The fan-out of step `i`, if it is a `for_each` step.
    pub(super) fn for_each_of(&self, i: usize) -> Option<&'a ForEach> {
        self.def.steps.get(i)?.for_each.as_ref()
    }

    /// Enters `for_each` step `i`: reads the array, then starts the first elements
    /// (an empty array completes the step at once with `[]`).
    pub(super) fn enter_fan_out(&mut self, i: usize, f: &ForEach) {
        let total = match self.value_at(&f.items) {
            Ok(Value::Array(items)) if items.len() <= MAX_ELEMENTS => Ok(items.len() as u32),
            Ok(Value::Array(items)) => Err(format!(
                "`{}` has {} elements; a for_each step takes at most {MAX_ELEMENTS}",
                f.items,
                items.len()
            )),
            Ok(other) => Err(format!(
                "`{}` is not an array (it is {})",
                f.items,
                json_type(other)
            )),
            Err(message) => Err(message),
        };
        let total = match total {
            Ok(n) => n,
            Err(message) => {
                let error = ErrorInfo {
                    code: "bad_input".into(),
                    message,
                    retryable: false,
                };
                return self.fail_unit(Unit::step(i), error, "bad_input");
            }
        };
        let generation = self.state.generation;
        let st = &mut self.state.steps[i];
        st.status = StepStatus::Running;
        st.fan_out = Some(FanOut::new(total, generation));
        self.record(
            HistoryEvent::ForEachStarted,
            Some(Unit::step(i)),
            None,
            json!({ "elements": total, "max_concurrency": f.max_concurrency }),
        );
        if total == 0 {
            let detail = json!({ "elements": 0 });
            return self.complete_unit(
                Unit::step(i),
                json!([]),
                HistoryEvent::StepCompleted,
                detail,
            );
        }
        self.refill(i);
    }

    /// Element chains of step `i` in flight (actions and compensations).
    fn elements_in_flight(&self, i: usize) -> Vec<u32> {
        self.state
            .tasks
            .iter()
            .filter(|t| t.step == i)
            .filter_map(|t| t.element)
            .collect()
    }

    /// Starts elements of step `i` while it runs and fewer than `max_concurrency` are
    /// in flight.
    fn refill(&mut self, i: usize) {
        let Some(f) = self.for_each_of(i) else { return };
        loop {
            let running = self.state.status == SagaStatus::Running
                && self.state.cursor == i
                && self.state.steps[i].status == StepStatus::Running;
            let full = self.elements_in_flight(i).len() >= f.max_concurrency as usize;
            let Some(p) = self.state.steps[i].fan_out.as_mut() else {
                return;
            };
            if !running || full || p.started >= p.total {
                return;
            }
            let index = p.started;
            p.started += 1;
            self.enter_unit(Unit::element(i, index));
        }
    }

    /// The element `u` of a `for_each` step at its index, for its task's `item`.
    pub(super) fn item_of(&self, u: Unit) -> Option<Value> {
        let index = u.element?;
        let f = self.for_each_of(u.step)?;
        let items = self.value_at(&f.items).ok()?;
        items.get(index as usize).cloned()
    }

    /// Element `u` completed: its row is written, its record leaves the state.
    pub(super) fn complete_element(
        &mut self,
        u: Unit,
        output: Value,
        event: HistoryEvent,
        detail: Value,
    ) {
        let (Some(index), i) = (u.element, u.step) else {
            return;
        };
        self.state.completions += 1;
        let seq = self.state.completions;
        let attempt = self.state.steps[i]
            .elements
            .remove(&index)
            .map(|e| e.attempts);
        self.drop_tasks_of(u);
        let st = &mut self.state.steps[i];
        st.completed_seq = Some(seq);
        let Some(p) = st.fan_out.as_mut() else { return };
        p.completed += 1;
        let generation = p.generation;
        self.elements.push(ElementWrite::Completed {
            step: i,
            generation,
            index,
            output,
            seq,
        });
        self.record(event, Some(u), attempt.filter(|a| *a > 0), detail);
        self.after_unit_settled(u);
    }

    /// What follows an element that completed or failed while the saga runs: the
    /// next elements, and once every element completed, the step (its output needs
    /// the rows).
    pub(super) fn after_element(&mut self, i: usize) {
        self.refill(i);
        let Some(p) = &self.state.steps[i].fan_out else {
            return;
        };
        let done = p.completed == p.total
            && self.state.steps[i].status == StepStatus::Running
            && self.elements_in_flight(i).is_empty();
        if done {
            let generation = p.generation;
            self.need = Some(Need::ElementOutputs {
                step: i,
                generation,
            });
        }
    }

    /// The answer to [`Need::ElementOutputs`]: completes the step with the outputs.
    pub(super) fn on_element_outputs(&mut self, i: usize, outputs: Vec<Value>) {
        let expected = match &self.state.steps.get(i).and_then(|s| s.fan_out.as_ref()) {
            Some(p) if p.completed == p.total => p.total as usize,
            _ => return,
        };
        let current = self.state.status == SagaStatus::Running
            && self.state.cursor == i
            && self.state.steps[i].status == StepStatus::Running;
        if !current {
            return;
        }
        if outputs.len() != expected {
            let error = ErrorInfo {
                code: "elements_missing".into(),
                message: format!(
                    "{} of {expected} element outputs are stored: the saga_elements rows were changed outside sagaflow",
                    outputs.len()
                ),
                retryable: false,
            };
            return self.fail_unit(Unit::step(i), error, "elements_missing");
        }
        let detail = json!({ "elements": expected });
        self.complete_unit(
            Unit::step(i),
            Value::Array(outputs),
            HistoryEvent::StepCompleted,
            detail,
        );
    }

    /// Whether step `i` is a fan-out with completed elements left to undo.
    pub(super) fn fan_out_to_undo(&self, i: usize) -> bool {
        let st = &self.state.steps[i];
        let left = st
            .fan_out
            .as_ref()
            .is_some_and(|p| p.completed > p.compensated);
        left && matches!(
            st.status,
            StepStatus::Completed | StepStatus::Failed | StepStatus::Compensating
        )
    }

    /// Compensates `for_each` step `i` (it has completed elements and a
    /// compensation): asks for the next completed elements, up to `max_concurrency`
    /// undone at a time. Called again as each element's compensation ends; asks only
    /// when half the slots are free, so a batch of answers costs few reads.
    pub(super) fn undo_fan_out(&mut self, i: usize) {
        let Some(f) = self.for_each_of(i) else { return };
        let st = &mut self.state.steps[i];
        if st.status != StepStatus::Compensating {
            st.status = StepStatus::Compensating;
            let n = st.fan_out.as_ref().map_or(0, |p| p.completed);
            let activity = self
                .activity_of(Unit::step(i))
                .and_then(|a| a.compensate.clone());
            self.record(
                HistoryEvent::CompensationStarted,
                Some(Unit::step(i)),
                None,
                json!({ "activity": activity, "elements": n }),
            );
        }
        self.state.cursor = i;
        let in_flight = self.elements_in_flight(i);
        let max = f.max_concurrency;
        if !in_flight.is_empty() && in_flight.len() as u32 > max / 2 {
            return;
        }
        let generation = self.state.steps[i]
            .fan_out
            .as_ref()
            .map_or(0, |p| p.generation);
        self.need = Some(Need::ElementsToUndo {
            step: i,
            generation,
            limit: max - in_flight.len() as u32,
            exclude: in_flight,
        });
    }

    /// The answer to [`Need::ElementsToUndo`]: opens their compensations, or, when
    /// none is left and none is in flight, the step is undone and compensation goes
    /// on with what completed before it.
    pub(super) fn on_elements_to_undo(&mut self, i: usize, found: Vec<super::CompletedElement>) {
        // Only a for_each step asks; an answer about another step (the table test's
        // stray cell) must not mark its compensation done while it is in flight.
        let current = self.for_each_of(i).is_some()
            && self.state.status == SagaStatus::Compensating
            && self.state.cursor == i
            && self
                .state
                .steps
                .get(i)
                .is_some_and(|s| s.status == StepStatus::Compensating);
        if !current {
            return;
        }
        let in_flight = self.elements_in_flight(i);
        let fresh: Vec<_> = found
            .into_iter()
            .filter(|e| !in_flight.contains(&e.index))
            .collect();
        if fresh.is_empty() {
            if self.fan_out_undone(i, true) {
                self.continue_compensation();
            }
            return;
        }
        for e in fresh {
            let u = Unit::element(i, e.index);
            let record = StepState {
                status: StepStatus::Compensating,
                comp_attempts: 1,
                output: Some(e.output),
                completed_seq: Some(e.seq),
                ..StepState::pending()
            };
            self.state.steps[i].elements.insert(e.index, record);
            let activity = self.activity_of(u).and_then(|a| a.compensate.clone());
            self.record(
                HistoryEvent::CompensationStarted,
                Some(u),
                Some(1),
                json!({ "activity": activity }),
            );
            self.begin_task(u, TaskKind::Compensation);
        }
    }

    /// Element `u`'s compensation completed: its row says so, its record leaves.
    pub(super) fn element_compensated(&mut self, u: Unit, detail: Value) {
        let Some(index) = u.element else { return };
        let i = u.step;
        let attempt = self.state.steps[i]
            .elements
            .remove(&index)
            .map(|e| e.comp_attempts);
        self.drop_tasks_of(u);
        let Some(p) = self.state.steps[i].fan_out.as_mut() else {
            return;
        };
        p.compensated += 1;
        let generation = p.generation;
        self.elements.push(ElementWrite::Compensated {
            step: i,
            generation,
            index,
        });
        self.record(
            HistoryEvent::CompensationCompleted,
            Some(u),
            attempt,
            detail,
        );
        self.fan_out_undone(i, false);
        self.continue_compensation();
    }

    /// Marks step `i` compensated once no element is in flight and every completed
    /// one was undone, or (`no_rows_left`: the rows said so) whatever the counters
    /// say; tells whether it did.
    fn fan_out_undone(&mut self, i: usize, no_rows_left: bool) -> bool {
        let st = &self.state.steps[i];
        let counted = st
            .fan_out
            .as_ref()
            .is_some_and(|p| p.compensated >= p.completed);
        let idle = self.elements_in_flight(i).is_empty();
        if st.status != StepStatus::Compensating || !idle || !(counted || no_rows_left) {
            return false;
        }
        self.state.steps[i].status = StepStatus::Compensated;
        let n = self.state.steps[i]
            .fan_out
            .as_ref()
            .map_or(0, |p| p.compensated);
        let detail = json!({ "elements": n });
        self.record(
            HistoryEvent::CompensationCompleted,
            Some(Unit::step(i)),
            None,
            detail,
        );
        true
    }

    /// Element `u` failed for good: counted, its record leaves the state.
    pub(super) fn element_failed(&mut self, u: Unit) {
        let Some(index) = u.element else { return };
        let st = &mut self.state.steps[u.step];
        st.elements.remove(&index);
        if let Some(p) = st.fan_out.as_mut() {
            p.failed += 1;
        }
    }

    /// Drops the element records of step `i` that are not in flight any more and
    /// whose compensation did not fail (an abandoned or left action).
    pub(super) fn drop_idle_elements(&mut self, i: usize) {
        let in_flight = self.elements_in_flight(i);
        if let Some(st) = self.state.steps.get_mut(i) {
            st.elements.retain(|idx, e| {
                in_flight.contains(idx) || e.status == StepStatus::CompensationFailed
            });
        }
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
