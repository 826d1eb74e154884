//! The catalog of loaded definitions and loading a directory of definition files.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::*;

#[derive(Debug, Clone)]
struct Entry {
    def: Arc<Definition>,
    origin: String,
}

/// A set of loaded definitions; several versions of one name may coexist (a running saga
/// keeps the version it started with).
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    entries: BTreeMap<(String, u32), Entry>,
}

impl Catalog {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a definition after validating it (so the catalog only ever holds valid ones).
    /// Refuses a second definition with the same name and version; the error names both
    /// origins.
    pub fn insert(&mut self, def: Definition, origin: &str) -> Result<(), DefinitionError> {
        def.validate(origin)?;
        let key = (def.name.clone(), def.version);
        if let Some(existing) = self.entries.get(&key) {
            return Err(DefinitionError {
                file: origin.to_string(),
                field: "version".to_string(),
                reason: format!(
                    "`{}` version {} is already defined in {}",
                    def.name, def.version, existing.origin
                ),
            });
        }
        let entry = Entry {
            def: Arc::new(def),
            origin: origin.to_string(),
        };
        self.entries.insert(key, entry);
        Ok(())
    }

    pub fn get(&self, name: &str, version: u32) -> Option<Arc<Definition>> {
        self.entries
            .get(&(name.to_string(), version))
            .map(|e| Arc::clone(&e.def))
    }

    /// The highest loaded version of `name`.
    pub fn latest(&self, name: &str) -> Option<Arc<Definition>> {
        self.entries
            .range((name.to_string(), 0)..=(name.to_string(), u32::MAX))
            .next_back()
            .map(|(_, e)| Arc::clone(&e.def))
    }

    /// Refuses activity steps whose attempts may outlive the broker's
    /// `consumer_timeout`: a worker holds a task unacked while its handler runs, and
    /// RabbitMQ closes the channel of a consumer that holds a message longer, then
    /// redelivers everything the channel held: the handler would run again on another
    /// worker while the first is still going, and every task on that channel would lose
    /// a delivery attempt. Such an activity needs the broker's `consumer_timeout`
    /// (and `queues.consumer_timeout_ms`) raised, or splitting into shorter steps.
    pub fn check_consumer_timeout(&self, consumer_timeout: Duration) -> Vec<DefinitionError> {
        let mut errors = Vec::new();
        for e in self.entries.values() {
            for (at, step) in e.def.units() {
                let StepKind::Activity(a) = &step.kind else {
                    continue;
                };
                if a.timeouts.start_to_close >= consumer_timeout {
                    errors.push(DefinitionError {
                        file: e.origin.clone(),
                        field: format!("{at}.start_to_close"),
                        reason: format!(
                            "{} is not below the broker's consumer_timeout ({}, queues.consumer_timeout_ms): RabbitMQ would close the worker's channel mid-run and redeliver the task; raise consumer_timeout on the broker and in queues.consumer_timeout_ms together, or split the activity",
                            humantime::format_duration(a.timeouts.start_to_close),
                            humantime::format_duration(consumer_timeout)
                        ),
                    });
                }
            }
        }
        errors
    }

    /// Refuses child-saga steps that name a definition not loaded, and definitions
    /// that include themselves, directly or through their children (a saga that
    /// starts itself would start children for ever). Children start the newest loaded
    /// version of their definition, so that is the version followed.
    pub fn check_children(&self) -> Vec<DefinitionError> {
        let mut errors = Vec::new();
        for e in self.entries.values() {
            for (at, step) in e.def.units() {
                let StepKind::Saga(child) = &step.kind else {
                    continue;
                };
                let reason = match self.latest(child) {
                    None => format!("no definition `{child}` is loaded"),
                    Some(_) => match self.cycle_through(&e.def.name, child) {
                        Some(path) => format!(
                            "`{}` includes itself through {}: a saga cannot start itself",
                            e.def.name,
                            path.join(" -> ")
                        ),
                        None => continue,
                    },
                };
                errors.push(DefinitionError {
                    file: e.origin.clone(),
                    field: format!("{at}.saga"),
                    reason,
                });
            }
        }
        errors
    }

    /// The chain of children from `child` back to `root`, if there is one.
    fn cycle_through(&self, root: &str, child: &str) -> Option<Vec<String>> {
        let mut stack = vec![vec![child.to_string()]];
        let mut seen = BTreeSet::new();
        while let Some(path) = stack.pop() {
            let last = path.last()?.clone();
            if last == root {
                return Some(path);
            }
            if !seen.insert(last.clone()) {
                continue;
            }
            let Some(def) = self.latest(&last) else {
                continue;
            };
            for next in def.children() {
                let mut longer = path.clone();
                longer.push(next.to_string());
                stack.push(longer);
            }
        }
        None
    }

    /// Every wait a retry policy of a loaded definition (actions and compensations)
    /// can put between two attempts.
    pub fn retry_waits(&self) -> BTreeSet<Duration> {
        self.entries
            .values()
            .flat_map(|e| e.def.units())
            .filter_map(|(_, step)| match &step.kind {
                StepKind::Activity(a) => Some([&a.retry, &a.compensate_retry]),
                _ => None,
            })
            .flatten()
            .flat_map(crate::saga::retry::waits)
            .collect()
    }

    /// All definitions, ordered by name, then version.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Definition>> {
        self.entries.values().map(|e| &e.def)
    }

    /// Union of [`Definition::activities`] over all definitions.
    pub fn activities(&self) -> BTreeSet<String> {
        self.iter().flat_map(|d| d.activities()).collect()
    }

    pub fn names(&self) -> BTreeSet<String> {
        self.entries.keys().map(|(name, _)| name.clone()).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Loads every `*.toml` in `dir` (sorted by file name, not recursive). Returns ALL errors
    /// found, across files, so an operator can fix everything in one round.
    pub fn load_dir(dir: &Path) -> Result<Catalog, Vec<DefinitionError>> {
        let files = toml_files(dir).map_err(|e| vec![e])?;
        let mut catalog = Catalog::new();
        let mut errors = Vec::new();
        for path in files {
            let origin = path.display().to_string();
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) => {
                    errors.push(io_error(&origin, &e));
                    continue;
                }
            };
            match parse_all(&origin, &text) {
                Ok(def) => {
                    if let Err(e) = catalog.insert(def, &origin) {
                        errors.push(e);
                    }
                }
                Err(mut errs) => errors.append(&mut errs),
            }
        }
        if errors.is_empty() {
            errors = catalog.check_children();
        }
        if errors.is_empty() {
            Ok(catalog)
        } else {
            Err(errors)
        }
    }
}

fn io_error(origin: &str, e: &std::io::Error) -> DefinitionError {
    DefinitionError {
        file: origin.to_string(),
        field: "<io>".to_string(),
        reason: e.to_string(),
    }
}

/// Regular files (symlinks followed) ending in `.toml`, sorted by file name.
fn toml_files(dir: &Path) -> Result<Vec<std::path::PathBuf>, DefinitionError> {
    let origin = dir.display().to_string();
    let entries = std::fs::read_dir(dir).map_err(|e| io_error(&origin, &e))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_error(&origin, &e))?;
        let path = entry.path();
        let is_toml = path.extension().is_some_and(|ext| ext == "toml");
        if is_toml && path.is_file() {
            files.push(path);
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}
