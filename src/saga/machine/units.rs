//! Units: the things that run. A plain step is one unit; a parallel step is a group
//! whose branches are units. Everything that runs, retries, times out, completes or
//! is compensated is addressed as a unit, so sequential and parallel sagas share one
//! set of transitions.

use super::Run;
use crate::saga::definition::{ActivityStep, Step, StepKind};
use crate::saga::state::{ActiveTask, StepState, StepStatus};

/// A step, or one branch of a parallel step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Unit {
    pub(super) step: usize,
    pub(super) branch: Option<usize>,
}

impl Unit {
    pub(super) fn step(step: usize) -> Unit {
        Unit { step, branch: None }
    }

    pub(super) fn of(task: &ActiveTask) -> Unit {
        Unit {
            step: task.step,
            branch: task.branch,
        }
    }
}

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

    pub(super) fn activity_of(&self, u: Unit) -> Option<&'a ActivityStep> {
        match &self.unit_def(u).kind {
            StepKind::Activity(a) => Some(a),
            _ => None,
        }
    }

    pub(super) fn unit_state(&self, u: Unit) -> &StepState {
        let st = &self.state.steps[u.step];
        match u.branch {
            Some(b) => &st.branches[b],
            None => st,
        }
    }

    pub(super) fn unit_state_mut(&mut self, u: Unit) -> &mut StepState {
        let st = &mut self.state.steps[u.step];
        match u.branch {
            Some(b) => &mut st.branches[b],
            None => st,
        }
    }

    /// The units of step `i`: its branches for a parallel step, else the step.
    pub(super) fn units_of(&self, i: usize) -> Vec<Unit> {
        match &self.def.steps.get(i).map(|s| &s.kind) {
            Some(StepKind::Parallel(branches)) => (0..branches.len())
                .map(|b| Unit {
                    step: i,
                    branch: Some(b),
                })
                .collect(),
            Some(_) => vec![Unit::step(i)],
            None => Vec::new(),
        }
    }

    /// Every unit of the saga that can run or be compensated, in definition order.
    pub(super) fn all_units(&self) -> Vec<Unit> {
        (0..self.def.steps.len())
            .flat_map(|i| self.units_of(i))
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
