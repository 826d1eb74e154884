//! Child sagas, from both sides. The parent runs a child as a unit whose task chain
//! is answered by the child itself: starting the chain starts the child (id
//! `<parent>/<step>`), the child's end answers it like a worker's result, so
//! duplicates and stale answers are absorbed as for any task. Compensating a
//! completed child opens a compensation chain that asks the child to undo itself.

use serde_json::{json, Value};

use super::units::Unit;
use super::{Command, HistoryEvent, Run};
use crate::messages::{ErrorInfo, Outcome, ParentLink, ResultMessage, StartEvent, TaskKind};
use crate::saga::definition::StepKind;
use crate::saga::state::{ActiveTask, SagaStatus};

impl<'a> Run<'a> {
    /// The child definition `u` runs, if it is a child-saga unit.
    pub(super) fn child_saga(&self, u: Unit) -> Option<&'a str> {
        match &self.unit_def(u).kind {
            StepKind::Saga(name) => Some(name),
            _ => None,
        }
    }

    /// `<parent id>/<step or branch>`, with `~g<n>` once an operator resumed the
    /// parent: a re-run must start a new child, not find the old one.
    pub(super) fn child_id(&self, u: Unit) -> String {
        let id = format!("{}/{}", self.state.id, self.unit_name(u));
        match self.state.generation {
            0 => id,
            g => format!("{id}~g{g}"),
        }
    }

    /// Enters a child-saga unit: opens its chain, which starts the child.
    pub(super) fn enter_child(&mut self, u: Unit, saga: &str) {
        let st = self.unit_state_mut(u);
        st.status = crate::saga::state::StepStatus::Running;
        st.attempts = 1;
        let child = self.child_id(u);
        self.record(
            HistoryEvent::StepStarted,
            Some(u),
            Some(1),
            json!({ "saga": saga, "child": child }),
        );
        self.begin_task(u, TaskKind::Action);
    }

    /// What dispatching a child chain means: start the child (action) or ask it to
    /// undo itself (compensation).
    pub(super) fn dispatch_child(&mut self, active: &ActiveTask, saga: &str) {
        let u = Unit::of(active);
        let link = ParentLink {
            saga_id: self.state.id.clone(),
            task_id: active.task_id.clone(),
        };
        let saga_id = self.child_id(u);
        self.commands.push(match active.kind {
            TaskKind::Action => Command::StartChild(StartEvent {
                saga: Some(saga.to_string()),
                id: Some(saga_id),
                input: self.state.input.clone(),
                delay: None,
                start_at: None,
                version: None,
                signal: None,
                parent: Some(link),
            }),
            TaskKind::Compensation => Command::UndoChild {
                saga_id,
                parent: link,
            },
        });
    }

    /// Asks every child still running to stop: the parent compensates.
    pub(super) fn cancel_children(&mut self, why: &str) {
        let running: Vec<Unit> = self
            .state
            .tasks
            .iter()
            .filter(|t| t.kind == TaskKind::Action)
            .map(Unit::of)
            .filter(|u| self.child_saga(*u).is_some())
            .collect();
        for u in running {
            let saga_id = self.child_id(u);
            self.commands.push(Command::CancelChild {
                saga_id,
                reason: format!("parent `{}` is compensating ({why})", self.state.id),
            });
        }
    }

    /// The parent compensates and this completed child must be undone. Anything
    /// else (not a child of that parent, not completed, already undoing) is a
    /// duplicate or a stray: ignored.
    pub(super) fn on_undo(&mut self, parent: &ParentLink) {
        let ours = self
            .state
            .parent
            .as_ref()
            .is_some_and(|p| p.saga_id == parent.saga_id);
        if !ours {
            return;
        }
        if self.state.undoing && self.state.status.is_terminal() {
            // The parent asks again (its answer may have been lost): answer again; a
            // parent that already has it ignores the repeat as stale.
            if self.state.parent.as_ref() == Some(parent) {
                self.reply_to_parent(self.state.status);
            }
            return;
        }
        if self.state.status != SagaStatus::Completed || self.state.undoing {
            return;
        }
        self.state.undoing = true;
        self.state.parent = Some(parent.clone());
        self.state.status = SagaStatus::Compensating;
        self.record(
            HistoryEvent::SagaCompensating,
            None,
            None,
            json!({ "reason": "parent_compensating", "parent": parent.saga_id }),
        );
        self.continue_compensation();
    }

    /// A child that ended answers its parent's chain: `completed` with its output;
    /// an undo that ended `compensated` succeeded; anything else failed for good.
    pub(super) fn reply_to_parent(&mut self, status: SagaStatus) {
        let Some(p) = self.state.parent.clone() else {
            return;
        };
        let ok = match (self.state.undoing, status) {
            (false, SagaStatus::Completed) => {
                Some(self.state.output().cloned().unwrap_or(Value::Null))
            }
            (true, SagaStatus::Compensated) => Some(Value::Null),
            _ => None,
        };
        let (outcome, output, error) = match ok {
            Some(v) => (Outcome::Ok, Some(v), None),
            None => {
                let cause = self.state.error.as_ref().map(|e| e.code.as_str());
                let error = ErrorInfo {
                    code: format!("child_{status}"),
                    message: format!(
                        "child saga `{}` ended {status}{}",
                        self.state.id,
                        cause.map(|c| format!(" ({c})")).unwrap_or_default()
                    ),
                    retryable: false,
                };
                (Outcome::Error, None, Some(error))
            }
        };
        self.commands.push(Command::Reply(ResultMessage {
            task_id: p.task_id,
            saga_id: p.saga_id,
            attempt: None,
            outcome,
            output,
            error,
            details: None,
        }));
    }
}
