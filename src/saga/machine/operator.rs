//! Operator actions on one saga: what someone does at 3 a.m. about a saga that is
//! stuck (its task dead-lettered) or `failed` (an operator must act). Each action is
//! checked against the saga's state first, so a refused action changes nothing and
//! says why; an accepted one is an ordinary decision (state, commands, history).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::units::Unit;
use super::{Decision, HistoryEvent, Run};
use crate::messages::TaskKind;
use crate::saga::definition::{Definition, StepKind};
use crate::saga::state::{SagaState, SagaStatus, StepState, StepStatus};

/// What an operator asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum OperatorAction {
    /// Run the stuck or failed part again: a running saga's current task (a fresh
    /// attempt chain), or a `failed` saga's failed compensation (then the rest of the
    /// compensation).
    Retry,
    /// Run the saga again from `step` (steps before it must still be completed).
    ResumeAt { step: String },
    /// Treat the current step as completed with `output` and go on.
    Skip {
        #[serde(default)]
        output: Value,
    },
    /// Stop going forward: undo the completed steps in reverse and end the saga.
    Compensate,
}

impl OperatorAction {
    pub fn name(&self) -> &'static str {
        match self {
            OperatorAction::Retry => "retry",
            OperatorAction::ResumeAt { .. } => "resume_at",
            OperatorAction::Skip { .. } => "skip",
            OperatorAction::Compensate => "compensate",
        }
    }
}

/// Where the saga stood when the operator's action was decided. The coordinator
/// refuses the action when the saga has moved on since, so a redelivered `skip` does
/// not skip the next step too and a redelivered `retry` does not open a third chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedFor {
    /// The current step (the cursor); empty past the last step.
    pub step: String,
    /// The saga's resume generation ([`SagaState::generation`]).
    pub generation: u32,
    /// The task chains in flight, if any (their ids, comma-separated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
}

impl IssuedFor {
    /// Where `state` stands now.
    pub fn of(def: &Definition, state: &SagaState) -> IssuedFor {
        IssuedFor {
            step: def
                .steps
                .get(state.cursor)
                .map(|s| s.name.clone())
                .unwrap_or_default(),
            generation: state.generation,
            task_id: (!state.tasks.is_empty()).then(|| {
                let ids: Vec<&str> = state.tasks.iter().map(|a| a.task_id.as_str()).collect();
                ids.join(",")
            }),
        }
    }

    /// How the saga moved on from `self` to `now`, if it did.
    fn moved_on(&self, now: &IssuedFor) -> Option<String> {
        if self.generation != now.generation {
            return Some(format!(
                "it was resumed since (generation {} -> {})",
                self.generation, now.generation
            ));
        }
        if self.step != now.step {
            return Some(format!(
                "it moved from step `{}` to `{}`",
                self.step, now.step
            ));
        }
        if self.task_id != now.task_id {
            return Some(format!(
                "its task changed from {} to {}",
                self.task_id.as_deref().unwrap_or("none"),
                now.task_id.as_deref().unwrap_or("none")
            ));
        }
        None
    }
}

/// Applies `action`, decided when the saga stood at `issued` and sent by `actor` (as
/// the sender names itself; `None` when it did not), or says why it does not apply to
/// this saga now. The history's `operator_action` entry records the action and the
/// actor.
pub fn operate(
    def: &Definition,
    state: SagaState,
    action: &OperatorAction,
    issued: &IssuedFor,
    actor: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Decision, String> {
    if let Some(why) = issued.moved_on(&IssuedFor::of(def, &state)) {
        return Err(format!(
            "the saga moved on since the action was issued: {why}"
        ));
    }
    let mut run = Run::new(def, state, now);
    let status = run.state.status;
    run.record(
        HistoryEvent::OperatorAction,
        None,
        None,
        json!({ "action": action, "actor": actor }),
    );
    match action {
        OperatorAction::Retry => retry(&mut run)?,
        OperatorAction::ResumeAt { step } => resume_at(&mut run, step)?,
        OperatorAction::Skip { output } => skip(&mut run, output.clone())?,
        OperatorAction::Compensate => compensate(&mut run, status)?,
    }
    Ok(run.finish())
}

/// Reopens every chain in flight with a fresh attempt 1 (old chains' answers become
/// stale), or, for a `failed` saga, its failed compensation and then the rest.
fn retry(run: &mut Run<'_>) -> Result<(), String> {
    match run.state.status {
        SagaStatus::Running | SagaStatus::Compensating => {
            // A child saga answers its own chain: act on the child, not here.
            let chains: Vec<_> = run
                .state
                .tasks
                .iter()
                .filter(|a| a.child.is_none())
                .map(|a| (Unit::of(a), a.kind))
                .collect();
            if chains.is_empty() {
                if let Some(children) = children_waited_on(run) {
                    return Err(format!(
                        "the saga waits on child saga {children}: retry or repair the child"
                    ));
                }
                return Err(
                    "nothing in flight to retry (the saga sleeps, waits or is between steps)"
                        .into(),
                );
            }
            for (u, kind) in chains {
                let st = run.unit_state_mut(u);
                match kind {
                    TaskKind::Action => st.attempts = 1,
                    TaskKind::Compensation => st.comp_attempts = 1,
                }
                run.begin_task(u, kind);
            }
            Ok(())
        }
        SagaStatus::Failed => {
            let Some(u) = run
                .all_units()
                .into_iter()
                .find(|u| run.unit_state(*u).status == StepStatus::CompensationFailed)
            else {
                return Err("the saga failed because a completed step has no compensation: nothing to retry (use compensate or resume_at)".into());
            };
            run.state.status = SagaStatus::Compensating;
            run.state.cursor = u.step;
            let st = run.unit_state_mut(u);
            st.status = StepStatus::Compensating;
            st.comp_attempts = 1;
            run.begin_task(u, TaskKind::Compensation);
            Ok(())
        }
        other => Err(format!("a {other} saga has nothing to retry")),
    }
}

fn resume_at(run: &mut Run<'_>, step: &str) -> Result<(), String> {
    let Some(i) = run.def.step_index(step) else {
        return Err(format!(
            "no step `{step}` in {} v{}",
            run.def.name, run.def.version
        ));
    };
    if matches!(
        run.state.status,
        SagaStatus::Completed | SagaStatus::Cancelled | SagaStatus::Scheduled
    ) {
        return Err(format!("a {} saga cannot be resumed", run.state.status));
    }
    if let Some(k) = run.state.steps[..i]
        .iter()
        .position(|s| !matches!(s.status, StepStatus::Completed | StepStatus::Skipped))
    {
        return Err(format!(
            "step `{}` before `{step}` is {:?}, not completed: resuming would skip undone work",
            run.def.steps[k].name, run.state.steps[k].status
        ));
    }
    for st in &mut run.state.steps[i..] {
        reset(st);
        st.branches.iter_mut().for_each(reset);
    }
    run.state.status = SagaStatus::Running;
    run.state.tasks.clear();
    run.state.error = None;
    // The re-run steps must really run: with the old keys a worker's ledger would answer
    // a step that was undone with the output of its first run.
    run.state.generation += 1;
    run.record(
        HistoryEvent::SagaResumed,
        Some(Unit::step(i)),
        None,
        json!({ "generation": run.state.generation }),
    );
    run.enter_step(i);
    Ok(())
}

/// Back to pending, keeping the chain counters: new task ids must differ from the
/// old chains', so a late answer of an old chain stays stale.
fn reset(st: &mut StepState) {
    let (action_chains, comp_chains) = (st.action_chains, st.comp_chains);
    let branches = std::mem::take(&mut st.branches);
    *st = StepState {
        action_chains,
        comp_chains,
        branches,
        ..StepState::pending()
    };
}

/// Completes the current step with the operator's `output`. For a parallel step the
/// branches in flight are dropped (left `pending`); branches that completed stay
/// completed and are compensated if the saga later compensates.
fn skip(run: &mut Run<'_>, output: Value) -> Result<(), String> {
    let i = run.state.cursor;
    let current = run.state.steps.get(i).map(|s| s.status);
    let skippable = run.state.status == SagaStatus::Running
        && matches!(
            current,
            Some(StepStatus::Running | StepStatus::Sleeping | StepStatus::Waiting)
        );
    if !skippable {
        return Err(format!(
            "only the current step of a running saga can be skipped (the saga is {})",
            run.state.status
        ));
    }
    // A child keeps running whatever the parent says, and could not be undone later
    // from a step the parent took as done: act on the child instead.
    if let Some(children) = children_waited_on(run) {
        return Err(format!(
            "the step waits on child saga {children}: skip or repair the child"
        ));
    }
    for u in run.units_of(i).into_iter().filter(|u| u.branch.is_some()) {
        run.drop_tasks_of(u);
        let st = run.unit_state_mut(u);
        if matches!(
            st.status,
            StepStatus::Running | StepStatus::Sleeping | StepStatus::Waiting
        ) {
            st.status = StepStatus::Pending;
            st.until = None;
        }
    }
    if matches!(run.def.steps[i].kind, StepKind::Activity(_)) {
        run.state.steps[i].attempts = run.state.steps[i].attempts.max(1);
    }
    let detail = json!({ "reason": "operator" });
    run.complete_unit(Unit::step(i), output, HistoryEvent::StepSkipped, detail);
    Ok(())
}

/// The child sagas the saga's chains wait on, comma-separated, if any.
fn children_waited_on(run: &Run<'_>) -> Option<String> {
    let ids: Vec<&str> = run
        .state
        .tasks
        .iter()
        .filter_map(|a| a.child.as_deref())
        .collect();
    (!ids.is_empty()).then(|| ids.join(", "))
}

fn compensate(run: &mut Run<'_>, status: SagaStatus) -> Result<(), String> {
    match status {
        SagaStatus::Running => {
            run.abandon_and_compensate(StepStatus::Failed, "operator");
            Ok(())
        }
        other => Err(format!(
            "only a running saga can be compensated on request (this one is {other})"
        )),
    }
}

#[cfg(test)]
#[path = "operator_tests.rs"]
mod tests;
