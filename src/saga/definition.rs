//! TEMPORARY stub: replaced by the real model + parser.
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    pub name: String,
    pub version: u32,
    pub description: Option<String>,
    pub steps: Vec<Step>,
    pub schedules: Vec<()>,
}
impl Definition {
    pub fn step_index(&self, name: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.name == name)
    }
    pub fn activities(&self) -> BTreeSet<String> {
        let mut s = BTreeSet::new();
        for st in &self.steps {
            if let StepKind::Activity(a) = &st.kind {
                s.insert(a.activity.clone());
                if let Some(c) = &a.compensate {
                    s.insert(c.clone());
                }
            }
        }
        s
    }
}
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub name: String,
    pub kind: StepKind,
}
#[derive(Debug, Clone, PartialEq)]
pub enum StepKind {
    Activity(ActivityStep),
    Sleep(Duration),
    Wait(WaitStep),
}
#[derive(Debug, Clone, PartialEq)]
pub struct ActivityStep {
    pub activity: String,
    pub compensate: Option<String>,
    pub retry: RetryPolicy,
    pub compensate_retry: RetryPolicy,
    pub timeouts: Timeouts,
}
#[derive(Debug, Clone, PartialEq)]
pub struct WaitStep {
    pub signal: String,
    pub timeout: Option<Duration>,
    pub on_timeout: OnTimeout,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnTimeout {
    Fail,
    Continue,
}
#[derive(Debug, Clone, PartialEq)]
pub struct Timeouts {
    pub schedule_to_start: Option<Duration>,
    pub start_to_close: Duration,
    pub schedule_to_close: Option<Duration>,
    pub heartbeat: Option<Duration>,
}
impl Default for Timeouts {
    fn default() -> Self {
        Self {
            schedule_to_start: None,
            start_to_close: Duration::from_secs(60),
            schedule_to_close: None,
            heartbeat: None,
        }
    }
}
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub initial_interval: Duration,
    pub backoff_coefficient: f64,
    pub max_interval: Duration,
    pub max_attempts: u32,
    pub non_retryable: Vec<String>,
}
impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial_interval: Duration::from_secs(1),
            backoff_coefficient: 2.0,
            max_interval: Duration::from_secs(100),
            max_attempts: 5,
            non_retryable: vec![],
        }
    }
}
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}: {field}: {reason}")]
pub struct DefinitionError {
    pub file: String,
    pub field: String,
    pub reason: String,
}
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    defs: std::collections::BTreeMap<(String, u32), Arc<Definition>>,
}
impl Catalog {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn insert(&mut self, def: Definition, _origin: &str) -> Result<(), DefinitionError> {
        self.defs
            .insert((def.name.clone(), def.version), Arc::new(def));
        Ok(())
    }
    pub fn get(&self, name: &str, version: u32) -> Option<Arc<Definition>> {
        self.defs.get(&(name.to_string(), version)).cloned()
    }
    pub fn latest(&self, name: &str) -> Option<Arc<Definition>> {
        self.defs
            .iter()
            .filter(|((n, _), _)| n == name)
            .map(|(_, d)| d.clone())
            .last()
    }
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Definition>> {
        self.defs.values()
    }
    pub fn activities(&self) -> BTreeSet<String> {
        self.iter().flat_map(|d| d.activities()).collect()
    }
    pub fn names(&self) -> BTreeSet<String> {
        self.iter().map(|d| d.name.clone()).collect()
    }
    pub fn is_empty(&self) -> bool {
        self.defs.is_empty()
    }
    pub fn load_dir(_dir: &std::path::Path) -> Result<Catalog, Vec<DefinitionError>> {
        Ok(Catalog::new())
    }
}
