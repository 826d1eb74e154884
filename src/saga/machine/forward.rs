//! Running forward: entering steps and branches, skipping what `when` rules out,
//! completing and failing units, and finishing a parallel step when its last branch
//! has completed.

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use super::units::Unit;
use super::{to_chrono, HistoryEvent, Run};
use crate::messages::{ErrorInfo, TaskKind};
use crate::saga::definition::StepKind;
use crate::saga::state::{SagaStatus, StepStatus};

impl Run<'_> {
    /// Starts step `i`, or completes the saga when there is none.
    pub(super) fn enter_step(&mut self, i: usize) {
        self.state.cursor = i;
        let Some(step) = self.def.steps.get(i) else {
            return self.finish_saga(SagaStatus::Completed);
        };
        if self.skipped_by_when(Unit::step(i)) {
            return;
        }
        if let Some(f) = &step.for_each {
            return self.enter_fan_out(i, f);
        }
        let StepKind::Parallel(branches) = &step.kind else {
            return self.enter_unit(Unit::step(i));
        };
        self.state.steps[i].status = StepStatus::Running;
        let names: Vec<&str> = branches.iter().map(|b| b.name.as_str()).collect();
        self.record(
            HistoryEvent::ParallelStarted,
            Some(Unit::step(i)),
            None,
            json!({ "branches": names }),
        );
        for u in self.units_of(i) {
            // An earlier branch may have failed at once (a bad path): the saga is
            // compensating and no further branch starts.
            if self.state.status != SagaStatus::Running || self.state.cursor != i {
                break;
            }
            if !self.skipped_by_when(u) {
                self.enter_unit(u);
            }
        }
    }

    /// Skips `u` when its `when` does not hold: recorded, output `null`, never
    /// compensated; then the saga moves on as if it had completed.
    fn skipped_by_when(&mut self, u: Unit) -> bool {
        let Some(when) = &self.unit_def(u).when else {
            return false;
        };
        let holds = {
            let state = &self.state;
            let names = &self.def.steps;
            when.holds(&state.input, |s| {
                let i = names.iter().position(|d| d.name == s)?;
                state.steps.get(i)?.output.as_ref()
            })
        };
        if holds {
            return false;
        }
        let st = self.unit_state_mut(u);
        st.status = StepStatus::Skipped;
        st.output = Some(Value::Null);
        let reason = format!("`when = \"{when}\"` did not hold");
        self.record(
            HistoryEvent::StepSkipped,
            Some(u),
            None,
            json!({ "reason": "when", "when": when.to_string(), "message": reason }),
        );
        self.after_unit_settled(u);
        true
    }

    /// Starts one unit: an activity's first attempt, a sleep or a wait.
    pub(super) fn enter_unit(&mut self, u: Unit) {
        match &self.unit_def(u).kind {
            StepKind::Activity(a) => {
                if let Err(message) = self.task_input(u) {
                    let error = ErrorInfo {
                        code: "bad_input".into(),
                        message,
                        retryable: false,
                    };
                    return self.fail_unit(u, error, "bad_input");
                }
                let st = self.unit_state_mut(u);
                st.status = StepStatus::Running;
                st.attempts = 1;
                self.record(
                    HistoryEvent::StepStarted,
                    Some(u),
                    Some(1),
                    json!({ "activity": a.activity }),
                );
                self.begin_task(u, TaskKind::Action);
            }
            StepKind::Sleep(d) => self.sleep(u, self.now + to_chrono(*d)),
            StepKind::SleepUntil(path) => match self.instant_at(path) {
                Ok(until) => self.sleep(u, until),
                Err(message) => {
                    let error = ErrorInfo {
                        code: "bad_sleep_until".into(),
                        message,
                        retryable: false,
                    };
                    self.fail_unit(u, error, "bad_sleep_until");
                }
            },
            StepKind::Wait(w) => {
                let until = w.timeout.map(|t| self.now + to_chrono(t));
                let st = self.unit_state_mut(u);
                st.status = StepStatus::Waiting;
                st.until = until;
                self.record(
                    HistoryEvent::WaitStarted,
                    Some(u),
                    None,
                    json!({ "signal": w.signal }),
                );
                if let Some(payload) = self.take_buffered_signal(&w.signal) {
                    self.complete_unit(u, payload, HistoryEvent::WaitCompleted, json!({}));
                }
            }
            StepKind::Saga(saga) => self.enter_child(u, saga),
            // Validation refuses a parallel branch; a parallel step is entered by
            // `enter_step`.
            StepKind::Parallel(_) => {}
        }
    }

    /// Parks `u` until `until` (at once when that has passed: the wake-up scan picks
    /// it up on its next poll).
    fn sleep(&mut self, u: Unit, until: DateTime<Utc>) {
        let st = self.unit_state_mut(u);
        st.status = StepStatus::Sleeping;
        st.until = Some(until);
        self.record(
            HistoryEvent::SleepStarted,
            Some(u),
            None,
            json!({ "until": until }),
        );
    }

    /// The value at a path (`input.…` or `steps.<step>.…`) for this saga.
    pub(super) fn value_at(&self, path: &crate::saga::path::ValuePath) -> Result<&Value, String> {
        let state = &self.state;
        let names = &self.def.steps;
        path.resolve(&state.input, |s| {
            let i = names.iter().position(|d| d.name == s)?;
            state.steps.get(i)?.output.as_ref()
        })
    }

    /// The RFC 3339 instant at a `sleep_until` path.
    fn instant_at(&self, text: &str) -> Result<DateTime<Utc>, String> {
        let path = crate::saga::path::ValuePath::parse(text)?;
        let value = self.value_at(&path)?;
        let text = value
            .as_str()
            .ok_or_else(|| format!("`{path}` is not a string"))?;
        DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| format!("`{path}` = `{text}` is not an RFC 3339 instant: {e}"))
    }

    /// What an activity unit's task carries: its `input` map resolved, or the saga
    /// input and the outputs of every earlier step.
    pub(super) fn task_input(&self, u: Unit) -> Result<Value, String> {
        match &self.unit_def(u).input {
            Some(map) => {
                let mut out = Map::new();
                for (key, path) in map {
                    out.insert(key.clone(), self.value_at(path)?.clone());
                }
                Ok(Value::Object(out))
            }
            None => {
                let names: Vec<&str> = self.def.steps.iter().map(|s| s.name.as_str()).collect();
                Ok(json!({
                    "saga": self.state.input,
                    "steps": self.state.outputs_before(&names, u.step),
                }))
            }
        }
    }

    /// Completes `u` with `output`, recording `event` with `detail`.
    pub(super) fn complete_unit(
        &mut self,
        u: Unit,
        output: Value,
        event: HistoryEvent,
        detail: Value,
    ) {
        if u.element.is_some() {
            return self.complete_element(u, output, event, detail);
        }
        self.state.completions += 1;
        let seq = self.state.completions;
        let st = self.unit_state_mut(u);
        st.status = StepStatus::Completed;
        st.until = None;
        st.completed_seq = Some(seq);
        let attempt = (st.attempts > 0).then_some(st.attempts);
        st.output = Some(output);
        self.drop_tasks_of(u);
        self.record(event, Some(u), attempt, detail);
        self.after_unit_settled(u);
    }

    /// What follows a unit that completed or was skipped: the next step, the rest of
    /// its parallel step, or (compensating) the next compensation.
    pub(super) fn after_unit_settled(&mut self, u: Unit) {
        if self.state.status == SagaStatus::Compensating {
            return self.continue_compensation();
        }
        if u.element.is_some() {
            return self.after_element(u.step);
        }
        if u.branch.is_some() {
            return self.maybe_complete_group(u.step);
        }
        self.enter_step(u.step + 1);
    }

    /// Completes parallel step `i` once every branch has completed or was skipped,
    /// with an object of the branch outputs keyed by branch name.
    fn maybe_complete_group(&mut self, i: usize) {
        let units = self.units_of(i);
        let done = units.iter().all(|u| {
            matches!(
                self.unit_state(*u).status,
                StepStatus::Completed | StepStatus::Skipped
            )
        });
        if !done || self.state.steps[i].status != StepStatus::Running {
            return;
        }
        let outputs: Map<String, Value> = units
            .iter()
            .map(|u| {
                let out = self.unit_state(*u).output.clone().unwrap_or(Value::Null);
                (self.unit_name(*u).to_string(), out)
            })
            .collect();
        let st = &mut self.state.steps[i];
        st.status = StepStatus::Completed;
        st.output = Some(Value::Object(outputs));
        self.record(
            HistoryEvent::StepCompleted,
            Some(Unit::step(i)),
            None,
            json!({}),
        );
        self.enter_step(i + 1);
    }

    /// `u` failed for good. Running: the saga starts compensating (branches still in
    /// flight are awaited). Already compensating (a branch that was in flight when
    /// another failed): compensation goes on.
    pub(super) fn fail_unit(&mut self, u: Unit, error: ErrorInfo, reason: &str) {
        let st = self.unit_state_mut(u);
        st.status = StepStatus::Failed;
        st.until = None;
        st.error = Some(error.clone());
        self.drop_tasks_of(u);
        self.element_failed(u);
        self.record(
            HistoryEvent::StepFailed,
            Some(u),
            None,
            json!({ "reason": reason, "error": error }),
        );
        if self.state.status == SagaStatus::Compensating {
            return self.continue_compensation();
        }
        if u.branch.is_some() || u.element.is_some() {
            self.state.steps[u.step].status = StepStatus::Failed;
        }
        self.state.error = Some(error);
        let why = if self.state.cancel_requested {
            "cancelled"
        } else {
            "step_failed"
        };
        self.begin_compensation(why);
    }
}
