//! The states this coordinator committed last, by saga id, with the row each was
//! committed as (its [`Fence`]: `row_version` and `created_at`): a batch of results for sagas found here runs without the
//! `BEGIN` / `SELECT … FOR UPDATE` / `COMMIT` round trips (`batch::run_cached`).
//!
//! The cache is a hint, never the truth. Every write made from it is fenced by the
//! row it holds, so a state another coordinator (or this one's timer loop,
//! or the purge) changed since makes that write match no row, and the batch's inputs
//! for that saga run again under lock. What it must never hold is a state that was
//! not committed as that version: entries are put only after their commit returned
//! success, and taken out (not copied) while a batch uses them, so a failed write
//! leaves nothing behind.

use std::collections::{HashMap, VecDeque};

use crate::saga::state::SagaState;
use crate::store::sagas::Fence;

/// Bounded by count; the oldest entry goes first when full.
#[derive(Debug)]
pub struct StateCache {
    capacity: usize,
    /// id -> (state, the row it was committed as, when it was put: a position in
    /// `order`).
    entries: HashMap<String, (SagaState, Fence, u64)>,
    /// Put order, oldest first; a stale position (the id was put again or taken)
    /// is skipped when evicting.
    order: VecDeque<(u64, String)>,
    next: u64,
}

impl StateCache {
    /// A cache of up to `capacity` sagas; 0 keeps nothing (every batch locks).
    pub fn new(capacity: usize) -> Self {
        StateCache {
            capacity,
            entries: HashMap::new(),
            order: VecDeque::new(),
            next: 0,
        }
    }

    /// Takes the states of those of `ids` it holds out (a batch uses them, and puts
    /// back what it commits).
    pub fn take(&mut self, ids: &[String]) -> Vec<(SagaState, Fence)> {
        let taken = ids
            .iter()
            .filter_map(|id| self.entries.remove(id))
            .map(|(state, fence, _)| (state, fence))
            .collect();
        self.trim_order();
        taken
    }

    /// Keeps `state` as committed in the row `fence` names; an ended saga is dropped instead
    /// (inputs for it are rare and need no speed). A state older than the one held
    /// for the same row (two batches of one coordinator committed one after the
    /// other, and the later one put first) is not kept.
    pub fn put(&mut self, state: SagaState, fence: Fence) {
        if self.capacity == 0 || state.status.is_terminal() {
            self.entries.remove(&state.id);
            return;
        }
        if self.entries.get(&state.id).is_some_and(|(_, held, _)| {
            held.created_at == fence.created_at && held.version > fence.version
        }) {
            return;
        }
        let at = self.next;
        self.next += 1;
        self.order.push_back((at, state.id.clone()));
        self.entries.insert(state.id.clone(), (state, fence, at));
        while self.entries.len() > self.capacity {
            let Some((at, id)) = self.order.pop_front() else {
                break;
            };
            if self.entries.get(&id).is_some_and(|e| e.2 == at) {
                self.entries.remove(&id);
            }
        }
        self.trim_order();
    }

    /// Forgets `id` (its state is no longer known to be the committed one).
    pub fn forget(&mut self, id: &str) {
        self.entries.remove(id);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Keeps `order` from growing past twice the entries with stale positions.
    fn trim_order(&mut self) {
        if self.order.len() > 2 * self.entries.len() + 64 {
            let entries = &self.entries;
            self.order
                .retain(|(at, id)| entries.get(id).is_some_and(|e| e.2 == *at));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::saga::state::SagaStatus;

    fn state(id: &str) -> SagaState {
        let def = crate::saga::definition::parse(
            "t.toml",
            "name = \"t\"\nversion = 1\n[[steps]]\nname = \"a\"\nactivity = \"x\"\n",
        )
        .unwrap();
        crate::saga::machine::start(&def, id, serde_json::json!({}), None, chrono::Utc::now()).state
    }

    /// The fence of version `n` of one saga row.
    fn v(n: i64) -> Fence {
        Fence {
            version: n,
            created_at: chrono::DateTime::UNIX_EPOCH,
        }
    }

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn taken(c: &mut StateCache, v: &[&str]) -> Vec<(String, i64)> {
        c.take(&ids(v))
            .into_iter()
            .map(|(s, f)| (s.id, f.version))
            .collect()
    }

    #[test]
    fn take_takes_out_what_it_holds() {
        let mut c = StateCache::new(10);
        c.put(state("a"), v(3));
        c.put(state("b"), v(5));
        let got = taken(&mut c, &["b", "z", "a"]);
        assert_eq!(got, [("b".to_string(), 5), ("a".to_string(), 3)]);
        assert!(c.is_empty(), "taken, not copied");
        assert!(taken(&mut c, &["a"]).is_empty());
    }

    #[test]
    fn the_oldest_goes_first_and_a_second_put_renews() {
        let mut c = StateCache::new(2);
        c.put(state("a"), v(1));
        c.put(state("b"), v(1));
        c.put(state("a"), v(2));
        c.put(state("c"), v(1));
        assert!(taken(&mut c, &["b"]).is_empty(), "b was the oldest");
        assert_eq!(
            taken(&mut c, &["a"]),
            [("a".to_string(), 2)],
            "the latest put wins"
        );
        assert_eq!(taken(&mut c, &["c"]).len(), 1);
    }

    #[test]
    fn an_older_version_of_the_same_row_does_not_replace_a_newer_one() {
        let mut c = StateCache::new(10);
        c.put(state("a"), v(3));
        c.put(state("a"), v(2));
        assert_eq!(taken(&mut c, &["a"]), [("a".to_string(), 3)]);
        c.put(state("a"), v(3));
        let restarted = Fence {
            version: 1,
            created_at: chrono::Utc::now(),
        };
        c.put(state("a"), restarted);
        assert_eq!(
            taken(&mut c, &["a"]),
            [("a".to_string(), 1)],
            "a row purged and created again counts from 1"
        );
    }

    #[test]
    fn ended_sagas_and_a_zero_capacity_keep_nothing() {
        let mut c = StateCache::new(10);
        c.put(state("a"), v(1));
        let mut ended = state("a");
        ended.status = SagaStatus::Completed;
        c.put(ended, v(2));
        assert!(c.is_empty());
        let mut off = StateCache::new(0);
        off.put(state("a"), v(1));
        assert!(off.is_empty());
        c.put(state("b"), v(1));
        c.forget("b");
        assert!(c.is_empty());
    }

    #[test]
    fn put_order_stays_bounded_under_churn() {
        let mut c = StateCache::new(4);
        for i in 0..10_000 {
            let id = format!("s{}", i % 8);
            c.put(state(&id), v(i));
            if i % 3 == 0 {
                let _ = c.take(&[id]);
            }
        }
        assert!(c.len() <= 4);
        assert!(c.order.len() <= 2 * c.len() + 64 + 1);
    }
}
