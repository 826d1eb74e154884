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

mod runtime;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::messages::{Deadlines, ErrorInfo, TaskKind, TaskMessage};

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
}

impl ActivityContext {
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
#[derive(Clone, Default)]
pub struct Worker {
    handlers: BTreeMap<String, Handler>,
}

impl Worker {
    pub fn new() -> Self {
        Self::default()
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
