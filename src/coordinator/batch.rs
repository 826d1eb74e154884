//! One batch of inputs -> one Postgres transaction: lock the sagas, run the machine,
//! write state, history and outbox together. Acking and publishing happen after the
//! commit, outside this module.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::broker::Names;
use crate::coordinator::id_reuse::id_reuse;
use crate::coordinator::input::Input;
use crate::coordinator::outbox_messages::outbox_message;
use crate::messages::Outcome;
use crate::saga::definition::{Catalog, Definition};
use crate::saga::machine::{
    self, Command, Decision, ElementWrite, Event, HistoryEntry, IssuedFor, Need, OperatorAction,
};
use crate::saga::state::SagaState;
use crate::store::outbox::{self, OutboxRow};
use crate::store::sagas::{self, SagaWrite};
use crate::store::{self, StoreError, Tx};

/// What a committed batch produced.
#[derive(Debug, Default)]
pub struct Committed {
    /// Outbox rows to publish now (they are claimed by this coordinator for the lease).
    pub outbox: Vec<OutboxRow>,
    /// Inputs refused with a reason (position in the batch, reason): to dead-letter.
    pub rejected: Vec<(usize, String)>,
    /// Inputs this coordinator lacks the definition for (a rolling upgrade: another
    /// coordinator may have it): hand back to the queue, dead-letter when none can.
    pub unhandled: Vec<(usize, String)>,
    /// Sagas that reached a terminal status (for logs and metrics).
    pub finished: Vec<(String, &'static str)>,
}

/// A saga being worked on inside the batch.
struct Entry {
    state: SagaState,
    def: Arc<Definition>,
    /// `None` for a saga this batch creates.
    version: Option<i64>,
    changed: bool,
    /// For a saga this batch creates: the batch position of its start (refused with a
    /// reason if another coordinator created a different saga with the id meanwhile).
    start_pos: Option<usize>,
}

/// A start the batch applies.
struct NewSaga<'s> {
    saga: &'s str,
    id: &'s str,
    version: Option<u32>,
    input: serde_json::Value,
    run_at: Option<DateTime<Utc>>,
    /// Set for a child saga: the parent chain it answers.
    parent: Option<crate::messages::ParentLink>,
    /// The start's `traceparent` header, as received.
    traceparent: Option<&'s str>,
}

/// Accumulates the batch's effects before they are written.
struct Work<'a> {
    names: &'a Names,
    catalog: &'a Catalog,
    now: DateTime<Utc>,
    entries: BTreeMap<String, Entry>,
    history: Vec<(String, HistoryEntry)>,
    commands: Vec<(String, Command)>,
    /// Element rows to write (`for_each` steps), by saga id.
    elements: Vec<(String, ElementWrite)>,
    /// Stored element rows a saga's machine asked for, answered by [`Work::settle`]
    /// before the batch goes on.
    needs: Vec<(String, Need)>,
    rejected: Vec<(usize, String)>,
    unhandled: Vec<(usize, String)>,
    /// Locked sagas whose definition version is not loaded here: id -> (label,
    /// saga name, input), the last two to tell a repeated start from a conflicting one.
    no_definition: BTreeMap<String, (String, String, serde_json::Value)>,
    /// Locked sagas whose stored state cannot be decoded: id -> the reason inputs for
    /// them are dead-lettered with.
    unreadable: BTreeMap<String, String>,
}

impl<'a> Work<'a> {
    /// Whether a saga with `id` is stored (loaded here, or of a definition not loaded
    /// here) or created earlier in this batch.
    fn exists(&self, id: &str) -> bool {
        self.entries.contains_key(id) || self.no_definition.contains_key(id)
    }

    /// Keeps decision `d` for saga `id`: its state goes back into the entry (a no-op's
    /// is the state as it was), its effects into the batch.
    fn take(&mut self, id: &str, d: Decision) {
        let noop = d.is_noop();
        if noop {
            tracing::debug!(saga_id = id, "duplicate or stale input ignored");
            if let Some(e) = self.entries.get_mut(id) {
                e.state = d.state;
            }
            return;
        }
        super::spans::record_timeouts(&d.state, &d.history);
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

    fn start(&mut self, pos: usize, new: NewSaga<'_>) {
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
                version: None,
                changed: true,
                start_pos: Some(pos),
            },
        );
        self.take(id, d);
    }

    fn event(&mut self, pos: usize, id: &str, event: Event) {
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
        let attempt = super::spans::attempt(&entry.def, &entry.state, &event);
        // Moved, not copied: a fan-out's state holds every element in flight, and a
        // batch applies many events to it. `take` puts the machine's state back.
        let state = std::mem::replace(&mut entry.state, hollow());
        let d = machine::apply(&entry.def, state, event, self.now);
        if let Some(a) = attempt.filter(|_| !d.is_noop()) {
            a.record(&d.state);
        }
        self.take(id, d);
    }

    /// An operator action; one that does not apply (any more) is dead-lettered with why.
    fn operate(
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

/// Runs one batch of parsed inputs, received at `now`, in one transaction.
pub async fn run_inputs(
    pool: &PgPool,
    names: &Names,
    catalog: &Catalog,
    inputs: Vec<(usize, Input)>,
    lease: Duration,
    now: DateTime<Utc>,
) -> Result<Committed, StoreError> {
    let mut tx = store::begin(pool).await?;
    let committed = apply_inputs(&mut tx, names, catalog, inputs, lease, now).await?;
    tx.commit().await?;
    Ok(committed)
}

/// Applies parsed inputs inside a transaction the caller owns and commits: lock the
/// sagas, run the machine, write state, history and outbox. The scheduler uses it to
/// start sagas in the same transaction that advances its schedules, so a tick and
/// its saga commit together or not at all. The result's outbox rows may be published
/// only after that commit.
pub async fn apply_inputs(
    tx: &mut Tx,
    names: &Names,
    catalog: &Catalog,
    inputs: Vec<(usize, Input)>,
    lease: Duration,
    now: DateTime<Utc>,
) -> Result<Committed, StoreError> {
    let mut ids: Vec<String> = inputs
        .iter()
        .map(|(_, i)| i.saga_id().to_string())
        .collect();
    ids.sort();
    ids.dedup();
    let locked = sagas::lock(tx, &ids).await?;
    let mut work = Work::loaded(names, catalog, now, locked);
    let inputs = work.refuse_unreadable(inputs);
    for (pos, input) in inputs {
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
                // signal, both in this transaction.
                if signal.is_none() || !work.exists(&id) {
                    let new = NewSaga {
                        saga: &saga,
                        id: &id,
                        version,
                        input,
                        run_at,
                        parent,
                        traceparent: traceparent.as_deref(),
                    };
                    work.start(pos, new);
                }
                if let Some(sig) = signal.filter(|_| work.exists(&id)) {
                    let signal = Event::Signal {
                        name: sig.name,
                        payload: sig.payload,
                    };
                    work.event(pos, &id, signal);
                }
            }
            Input::Operator {
                saga_id,
                action,
                issued_for,
                actor,
            } => work.operate(pos, &saga_id, &action, &issued_for, actor.as_deref()),
            other => {
                let id = other.saga_id().to_string();
                if let Some(e) = to_event(other) {
                    work.event(pos, &id, e);
                }
            }
        }
        work.settle(tx, pos).await?;
    }
    write(tx, work, lease).await
}

/// Wakes up to `limit` sagas due at `now` in one transaction.
pub async fn run_wakeups(
    pool: &PgPool,
    names: &Names,
    catalog: &Catalog,
    limit: i64,
    lease: Duration,
    now: DateTime<Utc>,
) -> Result<(usize, Committed), StoreError> {
    let mut tx = store::begin(pool).await?;
    let due = sagas::lock_due(&mut tx, now, limit).await?;
    let n = due.len();
    if n == 0 {
        return Ok((0, Committed::default()));
    }
    let ids: Vec<String> = due.ids();
    let mut work = Work::loaded(names, catalog, now, due);
    for id in &ids {
        work.event(0, id, Event::Wake);
        work.settle(&mut tx, 0).await?;
        // A wake-up that changed nothing must still move wake_at, or it would spin.
        if let Some(e) = work.entries.get_mut(id) {
            e.changed = true;
        }
    }
    // Sagas whose definition this coordinator lacks: look again in a minute instead of
    // picking them up on every poll (another coordinator may have the definition).
    let orphans: Vec<String> = ids
        .iter()
        .filter(|id| !work.entries.contains_key(*id))
        .cloned()
        .collect();
    sagas::postpone_wake(&mut tx, &orphans, now + chrono::Duration::minutes(1)).await?;
    let committed = write(&mut tx, work, lease).await?;
    tx.commit().await?;
    Ok((n, committed))
}

impl<'a> Work<'a> {
    /// A batch holding the locked sagas whose definitions are loaded. Rows whose state
    /// cannot be decoded are kept aside (see [`Work::refuse_unreadable`]): one corrupt
    /// saga must not fail the batch of every other saga. In a wake-up scan they are
    /// not entries, so they count as orphans and their wake-up is postponed.
    fn loaded(
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
            no_definition: BTreeMap::new(),
            unreadable: locked
                .unreadable
                .iter()
                .map(|u| (u.id.clone(), u.error().to_string()))
                .collect(),
        };
        for row in locked.sagas {
            let s = row.state;
            match catalog.get(&s.saga, s.version) {
                Some(def) => {
                    let version = Some(row.row_version);
                    work.entries.insert(
                        s.id.clone(),
                        Entry {
                            state: s,
                            def,
                            version,
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
    fn refuse_unreadable(&mut self, inputs: Vec<(usize, Input)>) -> Vec<(usize, Input)> {
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

impl Work<'_> {
    /// Answers what sagas' machines asked for (element rows of `for_each` steps),
    /// until none asks: the rows written so far go first, so the read sees them;
    /// the answer is applied as an event, which may ask again.
    async fn settle(&mut self, tx: &mut Tx, pos: usize) -> Result<(), StoreError> {
        use crate::store::elements;
        while let Some((id, need)) = self.needs.pop() {
            elements::write(tx, &self.elements).await?;
            self.elements.clear();
            let event = match need {
                Need::ElementOutputs { step, generation } => Event::ElementOutputs {
                    step,
                    outputs: elements::outputs(tx, &id, step, generation).await?,
                },
                Need::ElementsToUndo {
                    step,
                    generation,
                    limit,
                    exclude,
                } => Event::ElementsToUndo {
                    step,
                    elements: elements::to_undo(tx, &id, step, generation, limit, &exclude).await?,
                },
            };
            self.event(pos, &id, event);
        }
        Ok(())
    }
}

async fn write(tx: &mut Tx, work: Work<'_>, lease: Duration) -> Result<Committed, StoreError> {
    let new: Vec<SagaWrite> = work
        .entries
        .values()
        .filter(|e| e.version.is_none())
        .map(|e| SagaWrite {
            state: &e.state,
            expected_version: None,
        })
        .collect();
    let inserted = sagas::insert_new(tx, &new).await?;
    let lost: Vec<&str> = new
        .iter()
        .map(|w| w.state.id.as_str())
        .filter(|id| !inserted.iter().any(|i| i == id))
        .collect();
    let mut rejected = concurrent_reuse(tx, &work.entries, &lost).await?;
    let keep = |id: &str| !lost.contains(&id);
    let updates: Vec<SagaWrite> = work
        .entries
        .values()
        .filter(|e| e.changed && e.version.is_some())
        .map(|e| SagaWrite {
            state: &e.state,
            expected_version: e.version,
        })
        .collect();
    sagas::update(tx, &updates).await?;
    let history: Vec<(&str, &HistoryEntry)> = work
        .history
        .iter()
        .filter(|(id, _)| keep(id))
        .map(|(id, h)| (id.as_str(), h))
        .collect();
    crate::store::history::append(tx, &history).await?;
    crate::store::elements::write(tx, &work.elements).await?;
    let named = history
        .iter()
        .filter_map(|(id, h)| work.entries.get(*id).map(|e| (e.state.saga.as_str(), *h)));
    crate::store::counters::add(tx, &super::counters::tally(named)).await?;
    let mut finished = vec![];
    let mut messages = vec![];
    for (id, cmd) in work.commands.iter().filter(|(id, _)| keep(id)) {
        if let Command::Publish(e) = cmd {
            finished.push((id.clone(), status_str(&e.status)));
        }
        let traceparent = work
            .entries
            .get(id)
            .and_then(|e| e.state.traceparent.clone());
        messages.push(outbox_message(work.names, traceparent, cmd));
    }
    let outbox = outbox::insert(tx, messages, lease).await?;
    rejected.extend(work.rejected);
    Ok(Committed {
        outbox,
        rejected,
        unhandled: work.unhandled,
        finished,
    })
}

/// Starts whose saga another coordinator created after this batch locked its rows:
/// each is ignored when it repeats that saga's start, refused when it differs.
async fn concurrent_reuse(
    tx: &mut Tx,
    entries: &BTreeMap<String, Entry>,
    lost: &[&str],
) -> Result<Vec<(usize, String)>, StoreError> {
    if lost.is_empty() {
        return Ok(vec![]);
    }
    let ids: Vec<String> = lost.iter().map(|s| s.to_string()).collect();
    let stored = sagas::identities(tx, &ids).await?;
    let mut rejected = vec![];
    for (id, stored_saga, stored_input) in stored {
        let Some(e) = entries.get(&id) else { continue };
        let why = id_reuse(
            &id,
            &stored_saga,
            &stored_input,
            &e.state.saga,
            &e.state.input,
        );
        match (why, e.start_pos) {
            (Some(why), Some(pos)) => rejected.push((pos, why)),
            _ => tracing::info!(
                saga_id = %id,
                "start ignored: a saga with this id and this input was created concurrently"
            ),
        }
    }
    Ok(rejected)
}

fn status_str(s: &str) -> &'static str {
    crate::saga::state::SagaStatus::ALL
        .iter()
        .find(|st| st.as_str() == s)
        .map(|st| st.as_str())
        .unwrap_or("unknown")
}
