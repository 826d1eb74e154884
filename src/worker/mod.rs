//! The activity worker: the public API a Rust service embeds, and its runtime.
//!
//! ```no_run
//! use sagaflow::worker::{ActivityContext, ActivityError, Worker};
//! #[derive(serde::Deserialize)]
//! struct Input { saga: serde_json::Value }
//! let worker = Worker::new().activity("payments.charge", |ctx: ActivityContext, input: Input| async move {
//!     // Hand ctx.idempotency_key to the payment provider so a retry cannot charge twice.
//!     if input.saga["amount"].as_i64().unwrap_or(0) > 1000 {
//!         return Err(ActivityError::fatal("card_declined", "over the limit"));
//!     }
//!     Ok(serde_json::json!({ "charge_id": ctx.idempotency_key }))
//! });
//! ```

mod completion;
mod runtime;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::messages::{Deadlines, ErrorInfo, Outcome, ResultMessage, TaskKind, TaskMessage};

pub use runtime::WorkerError;

/// What a handler knows about the task it runs.
#[derive(Debug, Clone)]
pub struct ActivityContext {
    pub task_id: String,
    pub saga_id: String,
    pub saga: String,
    pub step: String,
    pub activity: String,
    pub kind: TaskKind,
    pub attempt: u32,
    pub max_attempts: u32,
    /// `<saga_id>:<step>:<kind>`, identical across attempts: give it to outside systems.
    pub idempotency_key: String,
    pub deadlines: Deadlines,
    /// Details of the last heartbeat of an earlier attempt: where to resume.
    pub heartbeat_details: Option<Value>,
    /// A `for_each` task's element, and its position in the array.
    pub item: Option<Value>,
    pub index: Option<u32>,
    reporter: Option<Reporter>,
}

/// Sends heartbeats of one attempt to the coordinator, at most one per third of the
/// heartbeat timeout (more would only load the coordinator).
/// A `started` or heartbeat report to publish: routing key, report, `traceparent`.
pub(crate) type Report = (String, ResultMessage, Option<String>);

#[derive(Clone)]
pub(crate) struct Reporter {
    tx: tokio::sync::mpsc::UnboundedSender<Report>,
    task: Arc<TaskMessage>,
    traceparent: Option<String>,
    last: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
    every: std::time::Duration,
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporter")
            .field("every", &self.every)
            .finish()
    }
}

impl Reporter {
    pub(crate) fn new(
        tx: tokio::sync::mpsc::UnboundedSender<Report>,
        task: &TaskMessage,
        traceparent: Option<String>,
    ) -> Self {
        let every =
            std::time::Duration::from_millis(task.deadlines.heartbeat_ms.unwrap_or(3_000) / 3);
        Reporter {
            tx,
            task: Arc::new(task.clone()),
            traceparent,
            last: Default::default(),
            every,
        }
    }

    fn heartbeat(&self, details: Value) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| t.elapsed() < self.every) {
            return;
        }
        *last = Some(std::time::Instant::now());
        let report = ResultMessage::report(&self.task, Outcome::Heartbeat, Some(details));
        let _ = self
            .tx
            .send((self.task.reply_to.clone(), report, self.traceparent.clone()));
    }
}

impl ActivityContext {
    /// Tells the coordinator this attempt is alive (needed when the step has a
    /// `heartbeat` timeout). `details` is handed to the next attempt if this one fails.
    /// Cheap to call often: sends are throttled.
    pub fn heartbeat(&self, details: Value) {
        if let Some(r) = &self.reporter {
            r.heartbeat(details);
        }
    }

    pub(crate) fn with_reporter(mut self, reporter: Reporter) -> Self {
        self.reporter = Some(reporter);
        self
    }

    fn from_task(t: &TaskMessage) -> Self {
        ActivityContext {
            task_id: t.task_id.clone(),
            saga_id: t.saga_id.clone(),
            saga: t.saga.clone(),
            step: t.step.clone(),
            activity: t.activity.clone(),
            kind: t.kind,
            attempt: t.attempt,
            max_attempts: t.max_attempts,
            idempotency_key: t.idempotency_key.clone(),
            deadlines: t.deadlines.clone(),
            heartbeat_details: t.heartbeat_details.clone(),
            item: t.item.clone(),
            index: t.index,
            reporter: None,
        }
    }
}

/// An activity's failure: a stable code (matched by `non_retryable`), a message, and
/// whether another attempt could succeed.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivityError {
    pub code: String,
    pub message: String,
    pub retryable: bool,
}

impl ActivityError {
    /// A failure another attempt may fix (a timeout, a 503).
    pub fn retryable(code: impl Into<String>, message: impl Into<String>) -> Self {
        ActivityError {
            code: code.into(),
            message: message.into(),
            retryable: true,
        }
    }
    /// A failure no retry can fix (a declined card): the step fails for good.
    pub fn fatal(code: impl Into<String>, message: impl Into<String>) -> Self {
        ActivityError {
            code: code.into(),
            message: message.into(),
            retryable: false,
        }
    }
    pub(crate) fn into_info(self) -> ErrorInfo {
        ErrorInfo {
            code: self.code,
            message: self.message,
            retryable: self.retryable,
        }
    }
}

type HandlerFuture = Pin<Box<dyn Future<Output = Result<Value, ActivityError>> + Send>>;
type Handler = Arc<dyn Fn(ActivityContext, Value) -> HandlerFuture + Send + Sync>;

/// A set of activity handlers, by activity name.
#[derive(Clone)]
pub struct Worker {
    handlers: BTreeMap<String, Handler>,
    health: crate::health::Health,
}

impl Default for Worker {
    fn default() -> Self {
        Worker {
            handlers: BTreeMap::new(),
            health: crate::health::Health::new("worker"),
        }
    }
}

impl Worker {
    pub fn new() -> Self {
        Self::default()
    }

    /// What this worker's probes report (serve it with [`crate::health::serve`]).
    pub fn health(&self) -> crate::health::Health {
        self.health.clone()
    }

    /// Registers `handler` for `activity`. Its input is the task's `input` object
    /// (`{"saga": ..., "steps": {...}}`, plus `"output"` for compensations) decoded as
    /// `I`; a body that does not decode fails the attempt with the non-retryable code
    /// `bad_input`.
    pub fn activity<I, O, F, Fut>(mut self, activity: &str, handler: F) -> Self
    where
        I: DeserializeOwned + Send + 'static,
        O: Serialize + Send + 'static,
        F: Fn(ActivityContext, I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, ActivityError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let erased: Handler = Arc::new(move |ctx, input| {
            let handler = handler.clone();
            Box::pin(async move {
                let input: I = serde_json::from_value(input).map_err(|e| {
                    ActivityError::fatal(
                        "bad_input",
                        format!("input does not match the handler's type: {e}"),
                    )
                })?;
                let output = handler(ctx, input).await?;
                serde_json::to_value(output)
                    .map_err(|e| ActivityError::fatal("bad_output", e.to_string()))
            })
        });
        self.handlers.insert(activity.to_string(), erased);
        self
    }

    /// Registered activity names.
    pub fn activities(&self) -> Vec<String> {
        self.handlers.keys().cloned().collect()
    }

    fn handler(&self, activity: &str) -> Option<Handler> {
        self.handlers.get(activity).cloned()
    }
}
