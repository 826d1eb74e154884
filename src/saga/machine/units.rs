//! Units: the things that run. A plain step is one unit; a parallel step is a group
//! whose branches are units; a `for_each` step is a unit (for ordering compensation)
//! whose elements are units while they are in flight. Everything that runs, retries, times out, completes or
//! is compensated is addressed as a unit, so sequential and parallel sagas share one
//! set of transitions.

use super::Run;
use crate::saga::definition::{ActivityStep, Step, StepKind};
use crate::saga::state::{ActiveTask, StepState, StepStatus};

/// A step, one branch of a parallel step, or one element of a `for_each` step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Unit {
    pub(super) step: usize,
    pub(super) branch: Option<usize>,
    pub(super) element: Option<u32>,
}

impl Unit {
    pub(super) fn step(step: usize) -> Unit {
        Unit {
            step,
            branch: None,
            element: None,
        }
    }

    pub(super) fn element(step: usize, index: u32) -> Unit {
        Unit {
            step,
            branch: None,
            element: Some(index),
        }
    }

    pub(super) fn of(task: &ActiveTask) -> Unit {
        Unit {
            step: task.step,
            branch: task.branch,
            element: task.element,
        }
    }
}

/// What an element that is not in flight reads as (it has no record of its own in
/// the state): pending.
static NOT_IN_FLIGHT: std::sync::LazyLock<StepState> = std::sync::LazyLock::new(StepState::pending);

impl<'a> Run<'a> {
    /// The definition of `u`.
    pub(super) fn unit_def(&self, u: Unit) -> &'a Step {
        let step = &self.def.steps[u.step];
        match (u.branch, &step.kind) {
            (Some(b), StepKind::Parallel(branches)) => &branches[b],
            _ => step,
        }
    }

    pub(super) fn unit_name(&self, u: Unit) -> &'a str {
        &self.unit_def(u).name
    }

    /// How history and idempotency keys name `u`: its name, `<step>[<index>]` for
    /// an element.
    pub(super) fn unit_label(&self, u: Unit) -> String {
        match u.element {
            Some(i) => format!("{}[{i}]", self.unit_name(u)),
            None => self.unit_name(u).to_string(),
        }
    }

    pub(super) fn activity_of(&self, u: Unit) -> Option<&'a ActivityStep> {
        match &self.unit_def(u).kind {
            StepKind::Activity(a) => Some(a),
            _ => None,
        }
    }

    pub(super) fn unit_state(&self, u: Unit) -> &StepState {
        let st = &self.state.steps[u.step];
        match (u.branch, u.element) {
            (Some(b), _) => &st.branches[b],
            (None, Some(i)) => st.elements.get(&i).unwrap_or(&NOT_IN_FLIGHT),
            (None, None) => st,
        }
    }

    /// `u`'s record; an element gets one (pending) when it has none.
    pub(super) fn unit_state_mut(&mut self, u: Unit) -> &mut StepState {
        let st = &mut self.state.steps[u.step];
        match (u.branch, u.element) {
            (Some(b), _) => &mut st.branches[b],
            (None, Some(i)) => st.elements.entry(i).or_insert_with(StepState::pending),
            (None, None) => st,
        }
    }

    /// The units of step `i`: its branches for a parallel step, else the step.
    pub(super) fn units_of(&self, i: usize) -> Vec<Unit> {
        match &self.def.steps.get(i).map(|s| &s.kind) {
            Some(StepKind::Parallel(branches)) => (0..branches.len())
                .map(|b| Unit {
                    step: i,
                    branch: Some(b),
                    element: None,
                })
                .collect(),
            Some(_) => vec![Unit::step(i)],
            None => Vec::new(),
        }
    }

    /// Every unit of the saga that can run or be compensated, in definition order,
    /// with the elements that have a record (in flight, or their compensation failed).
    pub(super) fn all_units(&self) -> Vec<Unit> {
        let elements = self
            .state
            .steps
            .iter()
            .enumerate()
            .flat_map(|(i, st)| st.elements.keys().map(move |e| Unit::element(i, *e)));
        (0..self.def.steps.len())
            .flat_map(|i| self.units_of(i))
            .chain(elements)
            .collect()
    }

    /// Units of the current step that sit in `status`.
    pub(super) fn current_units_in(&self, status: StepStatus) -> Vec<Unit> {
        self.units_of(self.state.cursor)
            .into_iter()
            .filter(|u| self.unit_state(*u).status == status)
            .collect()
    }

    /// Position of the chain with `task_id` in `state.tasks`.
    pub(super) fn task_index(&self, task_id: &str) -> Option<usize> {
        self.state.tasks.iter().position(|t| t.task_id == task_id)
    }

    /// Drops every chain of `u` (its answers become stale).
    pub(super) fn drop_tasks_of(&mut self, u: Unit) {
        self.state.tasks.retain(|t| Unit::of(t) != u);
    }
}
