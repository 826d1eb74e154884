//! One batch of inputs -> one Postgres transaction: lock the sagas, run the machine,
//! write state, history and outbox together. Acking and publishing happen after the
//! commit, outside this module. What the batch accumulates in memory between the
//! lock and the write (the sagas, the machine's decisions) is [`work`]; the same
//! batch without a lock, for sagas whose committed state the coordinator holds and
//! for new sagas, is [`cached`].

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::broker::Names;
use crate::coordinator::id_reuse::id_reuse;
use crate::coordinator::input::Input;
use crate::coordinator::outbox_messages::outbox_message;
use crate::coordinator::spans::StepSpan;
use crate::saga::definition::Catalog;
use crate::saga::machine::{Command, Event, HistoryEntry, Need};
use crate::saga::state::SagaState;
use crate::store::batch::{self, BatchWrite, Written};
use crate::store::counters::Delta;
use crate::store::outbox::OutboxRow;
use crate::store::sagas::{self, Fence, SagaWrite};
use crate::store::{self, StoreError, Tx};

mod cached;
mod work;
pub use cached::{run_cached, CachedRun};
use work::{Entry, Work};

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
    /// The state of each saga the batch loaded or wrote, with the row it is once the
    /// transaction commits: for the coordinator's
    /// [`StateCache`](crate::coordinator::state_cache::StateCache), and only after that commit.
    pub states: Vec<(SagaState, Fence)>,
    /// The `saga.step` spans of what committed: [`Committed::emit_spans`] once the
    /// commit returned.
    pub(crate) spans: Vec<StepSpan>,
}

impl Committed {
    /// Adds what another part of the same batch committed.
    pub fn extend(&mut self, other: Committed) {
        self.outbox.extend(other.outbox);
        self.rejected.extend(other.rejected);
        self.unhandled.extend(other.unhandled);
        self.finished.extend(other.finished);
        self.states.extend(other.states);
        self.spans.extend(other.spans);
    }

    /// Emits the spans of what committed (call only after the commit returned).
    pub fn emit_spans(&mut self) {
        for span in self.spans.drain(..) {
            span.emit();
        }
    }
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
        work.apply(pos, input);
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

async fn write(tx: &mut Tx, mut work: Work<'_>, lease: Duration) -> Result<Committed, StoreError> {
    let new: Vec<String> = work
        .entries
        .values()
        .filter(|e| e.fence.is_none())
        .map(|e| e.state.id.clone())
        .collect();
    let written = batch::write(tx, batch_write(&work, lease)).await?;
    let created = created_at(&written);
    let lost: Vec<&str> = new
        .iter()
        .map(String::as_str)
        .filter(|id| !created.contains_key(*id))
        .collect();
    crate::store::elements::write(tx, &work.elements).await?;
    let mut rejected = concurrent_reuse(tx, &work.entries, &lost).await?;
    rejected.extend(std::mem::take(&mut work.rejected));
    let mut committed = committed(work, written.outbox, &created, |id| !lost.contains(&id));
    committed.rejected = rejected;
    Ok(committed)
}

/// What the batch writes: its new and changed sagas with their history, counter
/// increments and outbox messages.
fn batch_write<'w>(work: &'w Work<'_>, lease: Duration) -> BatchWrite<'w> {
    let (new, changed): (Vec<&Entry>, Vec<&Entry>) = work
        .entries
        .values()
        .filter(|e| e.fence.is_none() || e.changed)
        .partition(|e| e.fence.is_none());
    let history: Vec<(&str, &HistoryEntry)> = work
        .history
        .iter()
        .map(|(id, h)| (id.as_str(), h))
        .collect();
    let outbox = work
        .commands
        .iter()
        .map(|(id, cmd)| {
            let traceparent = work
                .entries
                .get(id)
                .and_then(|e| e.state.traceparent.clone());
            (id.as_str(), outbox_message(work.names, traceparent, cmd))
        })
        .collect();
    BatchWrite {
        new: new.into_iter().map(saga_write).collect(),
        changed: changed.into_iter().map(saga_write).collect(),
        counters: counter_deltas(work, &history),
        history,
        outbox,
        lease,
    }
}

/// The batch as committed, for the sagas `kept` says were written: the sagas that
/// ended, and each state with the row version it now has (for the state cache).
fn committed(
    work: Work<'_>,
    outbox: Vec<OutboxRow>,
    created: &BTreeMap<String, DateTime<Utc>>,
    kept: impl Fn(&str) -> bool,
) -> Committed {
    let finished = work
        .commands
        .iter()
        .filter(|(id, _)| kept(id))
        .filter_map(|(id, cmd)| match cmd {
            Command::Publish(e) => Some((id.clone(), status_str(&e.status))),
            _ => None,
        })
        .collect();
    let states = work
        .entries
        .into_values()
        .filter(|e| kept(&e.state.id))
        .filter_map(|e| {
            // A new row starts at version 1 (the column's default); each update adds one.
            let fence = match e.fence {
                None => Fence {
                    version: 1,
                    created_at: *created.get(&e.state.id)?,
                },
                Some(f) if e.changed => Fence {
                    version: f.version + 1,
                    ..f
                },
                Some(f) => f,
            };
            Some((e.state, fence))
        })
        .collect();
    let spans = work
        .spans
        .into_iter()
        .filter(|s| kept(s.saga_id()))
        .collect();
    Committed {
        outbox,
        rejected: work.rejected,
        unhandled: work.unhandled,
        finished,
        states,
        spans,
    }
}

/// When each saga the write created was created, by id.
fn created_at(written: &Written) -> BTreeMap<String, DateTime<Utc>> {
    written
        .inserted
        .iter()
        .cloned()
        .zip(written.created_at.iter().copied())
        .collect()
}

fn saga_write<'e>(e: &'e Entry) -> SagaWrite<'e> {
    SagaWrite {
        state: &e.state,
        fence: e.fence,
    }
}

/// The counter increments of the batch's history, per saga (the write keeps those of
/// the sagas it created or changed).
fn counter_deltas<'w>(
    work: &'w Work<'_>,
    history: &[(&'w str, &'w HistoryEntry)],
) -> Vec<(&'w str, Delta)> {
    let mut by_saga: BTreeMap<&str, Vec<(&str, &HistoryEntry)>> = BTreeMap::new();
    for (id, h) in history {
        if let Some(e) = work.entries.get(*id) {
            by_saga
                .entry(id)
                .or_default()
                .push((e.state.saga.as_str(), h));
        }
    }
    by_saga
        .into_iter()
        .flat_map(|(id, named)| {
            super::counters::tally(named)
                .into_iter()
                .map(move |d| (id, d))
        })
        .collect()
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
