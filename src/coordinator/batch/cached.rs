//! The batch without a lock: for sagas whose committed state this coordinator holds
//! ([`StateCache`]), and for new sagas. The machine runs on the cached states (a
//! start, on none) and the whole write is one statement outside a transaction,
//! fenced by the cached row versions, and for a start by the insert itself. At low
//! load an input then costs one round trip to Postgres instead of four (`BEGIN`,
//! `SELECT … FOR UPDATE`, the write, `COMMIT`).
//!
//! Why it is as safe as the locked path: a saga's next state depends only on its
//! state and the inputs; the cached state is the one committed in the row its
//! [`Fence`] names (row version and `created_at`: a purged saga's id started again
//! counts from version 1 too), and the write of a saga applies only if its row is
//! still that one (checked by the `UPDATE` itself, row by row, after any concurrent
//! writer committed). A start assumes its id is not stored, and its rows are written only if
//! the insert finds it so. A saga whose row moved on, or whose id was taken, gets
//! nothing written, and its inputs run again under lock, as do inputs whose handling
//! could read or decide more than the state: operator actions, a start for a cached
//! (so existing) saga, a machine that asks for stored element rows, an input it
//! refuses, and sagas that did not change (a no-op on a stale state could drop an
//! input the current state would act on).

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::work::Work;
use super::{batch_write, committed, created_at, Committed};
use crate::broker::Names;
use crate::coordinator::input::Input;
use crate::coordinator::state_cache::StateCache;
use crate::saga::definition::Catalog;
use crate::saga::state::SagaState;
use crate::store::batch;
use crate::store::sagas::{Fence, Locked, StoredSaga};
use crate::store::StoreError;

/// What [`run_cached`] did: the part it committed, and the inputs left to run under
/// lock (all of them when it committed nothing).
#[derive(Debug, Default)]
pub struct CachedRun {
    pub committed: Committed,
    pub rest: Vec<(usize, Input)>,
}

/// Applies the inputs of the sagas found in `cache`, and the starts of sagas not in
/// it, without a lock; the rest (and those of sagas whose row moved on or whose id
/// was taken) come back in [`CachedRun::rest`]. On an error
/// the write may or may not have committed: the caller runs every input again under
/// lock, where any that did apply are duplicates the machine ignores.
pub async fn run_cached(
    pool: &PgPool,
    names: &Names,
    catalog: &Catalog,
    inputs: Vec<(usize, Input)>,
    lease: Duration,
    now: DateTime<Utc>,
    cache: &Mutex<StateCache>,
) -> Result<CachedRun, (StoreError, Vec<(usize, Input)>)> {
    let (mut fast, mut rest) = split(inputs);
    let ids: Vec<String> = fast.keys().cloned().collect();
    let taken = match cache.lock() {
        Ok(mut c) => c.take(&ids),
        Err(_) => vec![], // a panic elsewhere poisoned it: every batch locks
    };
    // A saga with a start must be new (not cached: the insert checks it is not
    // stored either); any other must be cached. The rest go the locked way.
    let held: HashSet<String> = taken.iter().map(|(s, _)| s.id.clone()).collect();
    fast.retain(|id, inputs| {
        let held = held.contains(id);
        let starts = inputs.iter().any(|(_, i)| matches!(i, Input::Start { .. }));
        if held == starts {
            rest.append(inputs);
        }
        held != starts
    });
    let taken: Vec<(SagaState, Fence)> = taken
        .into_iter()
        .filter(|(s, _)| fast.contains_key(&s.id))
        .collect();
    if fast.is_empty() {
        return Ok(CachedRun {
            committed: Committed::default(),
            rest,
        });
    }
    let sagas = taken
        .into_iter()
        .map(|(state, fence)| StoredSaga {
            state,
            row_version: fence.version,
            created_at: fence.created_at,
            updated_at: now, // not read by the machine
        })
        .collect();
    let locked = Locked {
        sagas,
        unreadable: vec![],
    };
    let mut work = Work::loaded(names, catalog, now, locked);
    let mut applied = vec![];
    for (pos, input) in fast.into_values().flatten() {
        work.apply(pos, input.clone());
        applied.push((pos, input));
    }
    if !decided_by_state_alone(&work) {
        rest.extend(applied);
        return Ok(CachedRun {
            committed: Committed::default(),
            rest,
        });
    }
    let written = match batch::write_alone(pool, batch_write(&work, lease)).await {
        Ok(w) => w,
        Err(e) => {
            rest.extend(applied);
            return Err((e, rest));
        }
    };
    let kept = written.kept();
    rest.extend(
        applied
            .into_iter()
            .filter(|(_, i)| !kept.contains(i.saga_id())),
    );
    let created = created_at(&written);
    let kept: HashSet<String> = kept.into_iter().map(str::to_string).collect();
    Ok(CachedRun {
        committed: committed(work, written.outbox, &created, |id| kept.contains(id)),
        rest,
    })
}

/// Positioned inputs by saga id.
type BySaga = BTreeMap<String, Vec<(usize, Input)>>;

/// The inputs by saga, for the sagas whose every input may run without a lock; the
/// others' inputs (an operator action) as they came.
fn split(inputs: Vec<(usize, Input)>) -> (BySaga, Vec<(usize, Input)>) {
    let locked_only = |i: &Input| matches!(i, Input::Operator { .. });
    let mut by_saga = BySaga::new();
    for (pos, input) in inputs {
        by_saga
            .entry(input.saga_id().to_string())
            .or_default()
            .push((pos, input));
    }
    let mut rest = vec![];
    by_saga.retain(|_, inputs| {
        let fast = !inputs.iter().any(|(_, i)| locked_only(i));
        if !fast {
            rest.append(inputs);
        }
        fast
    });
    (by_saga, rest)
}

/// Whether every decision of the batch came from the states alone, and every saga
/// changed (so the fenced write confirms each decision was taken on the current
/// state).
fn decided_by_state_alone(work: &Work<'_>) -> bool {
    work.needs.is_empty()
        && work.elements.is_empty()
        && work.rejected.is_empty()
        && work.unhandled.is_empty()
        && work.no_definition.is_empty()
        && work.unreadable.is_empty()
        && work.entries.values().all(|e| e.changed)
}
