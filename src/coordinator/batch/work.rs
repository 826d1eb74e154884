//! What one batch accumulates before it is written ([`super`] writes it): the locked
//! sagas (`Entry`), the machine's decisions for each input applied to them, and the
//! inputs refused or handed back. No I/O here: the batch transaction around it
//! locks, settles the machine's element needs and writes.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::broker::Names;
use crate::coordinator::id_reuse::id_reuse;
use crate::coordinator::input::Input;
use crate::coordinator::spans::StepSpan;
use crate::messages::Outcome;
use crate::saga::definition::{Catalog, Definition};
use crate::saga::machine::{
    self, Command, Decision, ElementWrite, Event, HistoryEntry, IssuedFor, Need, OperatorAction,
};
use crate::saga::state::SagaState;
use crate::store::sagas;

/// A saga being worked on inside the batch.
pub(super) struct Entry {
    pub(super) state: SagaState,
    pub(super) def: Arc<Definition>,
    /// The row as loaded; `None` for a saga this batch creates.
    pub(super) fence: Option<sagas::Fence>,
    pub(super) changed: bool,
    /// For a saga this batch creates: the batch position of its start (refused with a
    /// reason if another coordinator created a different saga with the id meanwhile).
    pub(super) start_pos: Option<usize>,
}

/// A start the batch applies.
pub(super) struct NewSaga<'s> {
    pub(super) saga: &'s str,
    pub(super) id: &'s str,
    pub(super) version: Option<u32>,
    pub(super) input: serde_json::Value,
    pub(super) run_at: Option<DateTime<Utc>>,
    /// Set for a child saga: the parent chain it answers.
    pub(super) parent: Option<crate::messages::ParentLink>,
    /// The start's `traceparent` header, as received.
    pub(super) traceparent: Option<&'s str>,
}

/// Accumulates the batch's effects before they are written.
pub(super) struct Work<'a> {
    pub(super) names: &'a Names,
    pub(super) catalog: &'a Catalog,
    pub(super) now: DateTime<Utc>,
    pub(super) entries: BTreeMap<String, Entry>,
    pub(super) history: Vec<(String, HistoryEntry)>,
    pub(super) commands: Vec<(String, Command)>,
    /// Element rows to write (`for_each` steps), by saga id.
    pub(super) elements: Vec<(String, ElementWrite)>,
    /// Stored element rows a saga's machine asked for, answered by [`Work::settle`]
    /// before the batch goes on.
    pub(super) needs: Vec<(String, Need)>,
    pub(super) rejected: Vec<(usize, String)>,
    pub(super) unhandled: Vec<(usize, String)>,
    /// `saga.step` spans to emit once the batch committed.
    pub(super) spans: Vec<StepSpan>,
    /// Locked sagas whose definition version is not loaded here: id -> (label,
    /// saga name, input), the last two to tell a repeated start from a conflicting one.
    pub(super) no_definition: BTreeMap<String, (String, String, serde_json::Value)>,
    /// Locked sagas whose stored state cannot be decoded: id -> the reason inputs for
    /// them are dead-lettered with.
    pub(super) unreadable: BTreeMap<String, String>,
}

impl<'a> Work<'a> {
    /// Whether a saga with `id` is stored (loaded here, or of a definition not loaded
    /// here) or created earlier in this batch.
    pub(super) fn exists(&self, id: &str) -> bool {
        self.entries.contains_key(id) || self.no_definition.contains_key(id)
    }

    /// Keeps decision `d` for saga `id`: its state goes back into the entry (a no-op's
    /// is the state as it was), its effects into the batch.
    pub(super) fn take(&mut self, id: &str, d: Decision) {
        let noop = d.is_noop();
        if noop {
            tracing::debug!(saga_id = id, "duplicate or stale input ignored");
            if let Some(e) = self.entries.get_mut(id) {
                e.state = d.state;
            }
            return;
        }
        self.spans
            .extend(crate::coordinator::spans::timeouts(&d.state, &d.history));
        self.history
            .extend(d.history.into_iter().map(|h| (id.to_string(), h)));
        self.commands
            .extend(d.commands.into_iter().map(|c| (id.to_string(), c)));
        self.elements
            .extend(d.elements.into_iter().map(|e| (id.to_string(), e)));
        self.needs
            .extend(d.need.into_iter().map(|n| (id.to_string(), n)));
        if let Some(e) = self.entries.get_mut(id) {
            e.state = d.state;
            e.changed = true;
        }
    }

    /// Applies one input to the batch: a start (with signal-with-start), an operator
    /// action, or an event for a saga loaded here.
    pub(super) fn apply(&mut self, pos: usize, input: Input) {
        match input {
            Input::Start {
                saga,
                id,
                version,
                input,
                run_at,
                signal,
                parent,
                traceparent,
            } => {
                // Signal-with-start: start unless the saga exists, then deliver the
                // signal, both in this batch.
                if signal.is_none() || !self.exists(&id) {
                    let new = NewSaga {
                        saga: &saga,
                        id: &id,
                        version,
                        input,
                        run_at,
                        parent,
                        traceparent: traceparent.as_deref(),
                    };
                    self.start(pos, new);
                }
                if let Some(sig) = signal.filter(|_| self.exists(&id)) {
                    let signal = Event::Signal {
                        name: sig.name,
                        payload: sig.payload,
                    };
                    self.event(pos, &id, signal);
                }
            }
            Input::Operator {
                saga_id,
                action,
                issued_for,
                actor,
            } => self.operate(pos, &saga_id, &action, &issued_for, actor.as_deref()),
            other => {
                let id = other.saga_id().to_string();
                if let Some(e) = to_event(other) {
                    self.event(pos, &id, e);
                }
            }
        }
    }

    pub(super) fn start(&mut self, pos: usize, new: NewSaga<'_>) {
        let NewSaga {
            saga,
            id,
            version,
            input,
            run_at,
            parent,
            traceparent,
        } = new;
        let existing = match self.entries.get(id) {
            Some(e) => Some((e.state.saga.as_str(), &e.state.input)),
            None => self.no_definition.get(id).map(|(_, s, i)| (s.as_str(), i)),
        };
        if let Some((stored_saga, stored_input)) = existing {
            match id_reuse(id, stored_saga, stored_input, saga, &input) {
                None => tracing::info!(
                    saga_id = id,
                    saga,
                    "start ignored: a saga with this id and this input exists"
                ),
                Some(why) => self.rejected.push((pos, why)),
            }
            return;
        }
        let def = match version {
            Some(v) => self.catalog.get(saga, v),
            None => self.catalog.latest(saga),
        };
        let Some(def) = def else {
            let v = version.map(|v| format!(" version {v}")).unwrap_or_default();
            self.unhandled
                .push((pos, format!("unknown saga `{saga}`{v}")));
            return;
        };
        let mut d = machine::start_child(&def, id, input, run_at, parent, self.now);
        d.state.traceparent = Some(crate::traceparent::for_start(traceparent, id));
        self.entries.insert(
            id.to_string(),
            Entry {
                state: d.state.clone(),
                def,
                fence: None,
                changed: true,
                start_pos: Some(pos),
            },
        );
        self.take(id, d);
    }

    pub(super) fn event(&mut self, pos: usize, id: &str, event: Event) {
        let Some(entry) = self.entries.get_mut(id) else {
            match self.no_definition.get(id) {
                Some((def, _, _)) => self.unhandled.push((
                    pos,
                    format!("definition {def} of saga `{id}` is not loaded"),
                )),
                None => self.rejected.push((pos, format!("no saga with id `{id}`"))),
            }
            return;
        };
        let attempt = crate::coordinator::spans::attempt(&entry.def, &entry.state, &event);
        // Moved, not copied: a fan-out's state holds every element in flight, and a
        // batch applies many events to it. `take` puts the machine's state back.
        let state = std::mem::replace(&mut entry.state, hollow());
        let d = machine::apply(&entry.def, state, event, self.now);
        if let Some(a) = attempt.filter(|_| !d.is_noop()) {
            self.spans.push(a.at(&d.state));
        }
        self.take(id, d);
    }

    /// An operator action; one that does not apply (any more) is dead-lettered with why.
    pub(super) fn operate(
        &mut self,
        pos: usize,
        id: &str,
        action: &OperatorAction,
        issued: &IssuedFor,
        actor: Option<&str>,
    ) {
        let Some(entry) = self.entries.get(id) else {
            self.rejected.push((
                pos,
                format!("no saga with id `{id}` (or its definition is not loaded here)"),
            ));
            return;
        };
        match machine::operate(
            &entry.def,
            entry.state.clone(),
            action,
            issued,
            actor,
            self.now,
        ) {
            Ok(d) => {
                tracing::info!(
                    saga_id = id,
                    action = action.name(),
                    actor,
                    "operator action applied"
                );
                self.take(id, d);
            }
            Err(why) => self.rejected.push((
                pos,
                format!("operator action `{}` refused: {why}", action.name()),
            )),
        }
    }
}

/// What an entry holds while the machine has its state (see [`Work::event`]); never
/// written: every path puts the machine's state back before the batch writes.
fn hollow() -> SagaState {
    SagaState {
        id: String::new(),
        saga: String::new(),
        version: 0,
        status: crate::saga::state::SagaStatus::Running,
        input: serde_json::Value::Null,
        steps: Vec::new(),
        cursor: 0,
        tasks: Vec::new(),
        completions: 0,
        run_at: None,
        error: None,
        signals: BTreeMap::new(),
        cancel_requested: false,
        generation: 0,
        parent: None,
        undoing: false,
        traceparent: None,
    }
}

fn to_event(input: Input) -> Option<Event> {
    Some(match input {
        Input::Result(r) => {
            let task_id = r.task_id.clone();
            let attempt = r.attempt;
            match r.outcome {
                Outcome::Started => Event::Started { task_id, attempt },
                Outcome::Heartbeat => Event::Heartbeat {
                    task_id,
                    attempt,
                    details: r.details,
                },
                Outcome::Ok | Outcome::Error => Event::Result {
                    task_id,
                    attempt,
                    result: r.into_outcome().ok()?,
                },
            }
        }
        Input::Signal { name, payload, .. } => Event::Signal { name, payload },
        Input::Cancel { reason, .. } => Event::Cancel { reason },
        Input::Undo { parent, .. } => Event::Undo { parent },
        Input::Start { .. } | Input::Operator { .. } => return None,
    })
}

impl<'a> Work<'a> {
    /// A batch holding the locked sagas whose definitions are loaded. Rows whose state
    /// cannot be decoded are kept aside (see [`Work::refuse_unreadable`]): one corrupt
    /// saga must not fail the batch of every other saga. In a wake-up scan they are
    /// not entries, so they count as orphans and their wake-up is postponed.
    pub(super) fn loaded(
        names: &'a Names,
        catalog: &'a Catalog,
        now: DateTime<Utc>,
        locked: sagas::Locked,
    ) -> Self {
        let mut work = Work {
            names,
            catalog,
            now,
            entries: BTreeMap::new(),
            history: vec![],
            commands: vec![],
            elements: vec![],
            needs: vec![],
            rejected: vec![],
            unhandled: vec![],
            spans: vec![],
            no_definition: BTreeMap::new(),
            unreadable: locked
                .unreadable
                .iter()
                .map(|u| (u.id.clone(), u.error().to_string()))
                .collect(),
        };
        for row in locked.sagas {
            let fence = Some(row.fence());
            let s = row.state;
            match catalog.get(&s.saga, s.version) {
                Some(def) => {
                    work.entries.insert(
                        s.id.clone(),
                        Entry {
                            state: s,
                            def,
                            fence,
                            changed: false,
                            start_pos: None,
                        },
                    );
                }
                None => {
                    tracing::warn!(saga_id = %s.id, saga = %s.saga, version = s.version, "definition not loaded here");
                    let label = format!("{} v{}", s.saga, s.version);
                    work.no_definition.insert(s.id, (label, s.saga, s.input));
                }
            }
        }
        work
    }

    /// Dead-letters every input for a saga whose stored state is unreadable (with
    /// `stored state of saga X is unreadable: …`) and returns the others.
    pub(super) fn refuse_unreadable(&mut self, inputs: Vec<(usize, Input)>) -> Vec<(usize, Input)> {
        if self.unreadable.is_empty() {
            return inputs;
        }
        let mut kept = Vec::with_capacity(inputs.len());
        for (pos, input) in inputs {
            match self.unreadable.get(input.saga_id()) {
                Some(reason) => self.rejected.push((pos, reason.clone())),
                None => kept.push((pos, input)),
            }
        }
        kept
    }
}
