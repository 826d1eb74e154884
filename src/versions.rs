//! Version drain: which stored sagas and schedules still depend on each definition
//! version, and whether a version is safe to unload. Pure (no I/O): the counts come
//! from [`crate::store::versions`], the loaded versions from the process's
//! [`Catalog`]; `sagaflow versions`, `GET /api/versions`, the dashboard and the
//! coordinator's unloaded-version check ([`crate::coordinator::versions`]) all read
//! these functions, so they agree.
//!
//! What holds a version:
//! - its sagas that have not ended (`scheduled`: a delayed start, which pins the
//!   version it was started with; `running`; `compensating`). Unloaded, they stop
//!   moving: every coordinator hands their messages back and postpones their wake-ups.
//! - its `failed` sagas. They ended, but they wait for an operator (retry, skip,
//!   compensate), and the coordinator needs their definition to apply the action.
//! - cron schedules. A schedule names a saga, not a version: each tick starts the
//!   newest loaded version of it. So schedules are counted against the newest loaded
//!   version of their saga only; unloading that version moves them to the next one
//!   down (or, when none is left, they start nothing).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::saga::definition::Catalog;

/// The stored sagas of one (definition name, version) that hold it, by status.
/// Versions whose sagas all ended (apart from `failed`) have no row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredVersion {
    pub saga: String,
    pub version: i64,
    pub scheduled: i64,
    pub running: i64,
    pub compensating: i64,
    pub failed: i64,
}

impl StoredVersion {
    /// Sagas that have not ended: they would move on if a coordinator loaded them.
    pub fn open(&self) -> i64 {
        self.scheduled + self.running + self.compensating
    }
}

/// What the store says holds versions: saga counts per version and schedules per saga.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stored {
    pub versions: Vec<StoredVersion>,
    /// Schedules per saga name (paused ones included: resumed, they start it again).
    pub schedules: Vec<(String, i64)>,
}

/// One definition version as `sagaflow versions` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VersionReport {
    pub saga: String,
    pub version: i64,
    /// Loaded by this process (the coordinator, the API or the CLI reading `sagas_dir`).
    pub loaded: bool,
    /// The newest loaded version of its name: the one starts without `version` and
    /// schedule ticks run.
    pub latest: bool,
    /// Delayed starts waiting for their start time (status `scheduled`).
    pub scheduled: i64,
    pub running: i64,
    pub compensating: i64,
    /// Failed sagas, waiting for an operator: they still need their definition.
    pub failed: i64,
    /// Cron schedules whose ticks start this version (counted on the latest only).
    pub schedules: i64,
    /// Nothing stored depends on this version: removing its file is safe.
    pub safe_to_unload: bool,
    /// Why it is not safe to unload (or, when not loaded, what is stuck on it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Schedules of a saga of which no version is loaded: their ticks start nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UnloadedSchedules {
    pub saga: String,
    pub schedules: i64,
}

/// The whole drain report: every loaded version, and every version that is not
/// loaded but still held by stored sagas.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Report {
    /// Ordered by saga name, then version.
    pub versions: Vec<VersionReport>,
    /// Schedules that start nothing here, by saga name.
    pub unloaded_schedules: Vec<UnloadedSchedules>,
}

/// Non-terminal sagas of a version this process does not load (the coordinator's
/// alarm and the `sagaflow_sagas_unloaded_version` gauge).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unloaded {
    pub saga: String,
    pub version: i64,
    /// Scheduled, running and compensating sagas.
    pub open: i64,
}

/// The (name, version) pairs a catalog loads.
pub fn loaded(catalog: &Catalog) -> Vec<(String, u32)> {
    catalog
        .iter()
        .map(|d| (d.name.clone(), d.version))
        .collect()
}

/// The report of `stored` against the `loaded` (name, version) pairs.
pub fn report(loaded: &[(String, u32)], stored: &Stored) -> Report {
    let loaded: BTreeSet<(String, i64)> = loaded
        .iter()
        .map(|(n, v)| (n.clone(), i64::from(*v)))
        .collect();
    let mut latest: BTreeMap<&str, i64> = BTreeMap::new();
    for (name, version) in &loaded {
        let l = latest.entry(name.as_str()).or_insert(*version);
        *l = (*l).max(*version);
    }
    let mut rows: BTreeMap<(String, i64), StoredVersion> = loaded
        .iter()
        .map(|(saga, version)| {
            let counts = StoredVersion {
                saga: saga.clone(),
                version: *version,
                ..Default::default()
            };
            ((saga.clone(), *version), counts)
        })
        .collect();
    for s in &stored.versions {
        let row = rows.entry((s.saga.clone(), s.version)).or_default();
        row.saga.clone_from(&s.saga);
        row.version = s.version;
        row.scheduled += s.scheduled;
        row.running += s.running;
        row.compensating += s.compensating;
        row.failed += s.failed;
    }
    let mut schedules: BTreeMap<&str, i64> = BTreeMap::new();
    for (saga, n) in &stored.schedules {
        *schedules.entry(saga.as_str()).or_default() += n;
    }
    let versions = rows
        .into_iter()
        .map(|((saga, version), counts)| {
            let is_loaded = loaded.contains(&(saga.clone(), version));
            let is_latest = latest.get(saga.as_str()) == Some(&version);
            let scheduled_by = if is_latest {
                schedules.get(saga.as_str()).copied().unwrap_or(0)
            } else {
                0
            };
            let reason = reason(&counts, is_loaded, scheduled_by);
            VersionReport {
                saga,
                version,
                loaded: is_loaded,
                latest: is_latest,
                scheduled: counts.scheduled,
                running: counts.running,
                compensating: counts.compensating,
                failed: counts.failed,
                schedules: scheduled_by,
                safe_to_unload: reason.is_none(),
                reason,
            }
        })
        .collect();
    let unloaded_schedules = schedules
        .into_iter()
        .filter(|(saga, n)| *n > 0 && !latest.contains_key(saga))
        .map(|(saga, schedules)| UnloadedSchedules {
            saga: saga.to_string(),
            schedules,
        })
        .collect();
    Report {
        versions,
        unloaded_schedules,
    }
}

/// Why a version is held, or `None` when nothing is.
fn reason(c: &StoredVersion, loaded: bool, schedules: i64) -> Option<String> {
    let mut held = vec![];
    for (n, what) in [
        (c.running, "running"),
        (c.compensating, "compensating"),
        (c.scheduled, "scheduled (delayed start)"),
        (c.failed, "failed (waiting for an operator)"),
    ] {
        if n > 0 {
            held.push(format!("{n} {what}"));
        }
    }
    if schedules > 0 {
        let (s, verb) = if schedules == 1 {
            ("", "starts")
        } else {
            ("s", "start")
        };
        held.push(format!(
            "{schedules} schedule{s} {verb} it (the latest loaded version)"
        ));
    }
    if held.is_empty() {
        return None;
    }
    let held = held.join(", ");
    Some(if loaded {
        format!("{held}; unload it once they have ended")
    } else {
        format!(
            "not loaded here, yet {held}: load this version again on a coordinator until they end"
        )
    })
}

/// The versions with non-terminal sagas that `loaded` does not contain, in order.
pub fn unloaded(loaded: &[(String, u32)], stored: &Stored) -> Vec<Unloaded> {
    let loaded: BTreeSet<(&str, i64)> = loaded
        .iter()
        .map(|(n, v)| (n.as_str(), i64::from(*v)))
        .collect();
    let mut out: BTreeMap<(String, i64), i64> = BTreeMap::new();
    for s in &stored.versions {
        if s.open() > 0 && !loaded.contains(&(s.saga.as_str(), s.version)) {
            *out.entry((s.saga.clone(), s.version)).or_default() += s.open();
        }
    }
    out.into_iter()
        .map(|((saga, version), open)| Unloaded {
            saga,
            version,
            open,
        })
        .collect()
}

#[cfg(test)]
#[path = "versions_tests.rs"]
mod tests;
