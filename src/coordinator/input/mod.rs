//! Turning a coordinator delivery (exchange, routing key, body) into an input, or a
//! reason to dead-letter it. Pure, so every malformed shape is a unit test.
//!
//! `[limits]` are enforced here, cheapest first: the body's size, then its nesting
//! (a byte scan), and only then serde; then each payload inside it and the saga id.
//!
//! One file per exchange, because each has its own wire shape and its own rules:
//! `start` (`<ns>.start`: ids, delays, signal-with-start), `result`
//! (`<ns>.results`), `signal` (`<ns>.signals`: signals and cancels, and the refusal
//! of operator actions there) and `operator` (`<ns>.operator`). This file holds what
//! they share: [`Input`], the dispatch on the exchange with the whole-body limits,
//! and the per-field limit checks. A returned `Err` is the dead-letter reason, as
//! an operator reads it.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::broker::Names;
use crate::config::Limits;
use crate::messages::{ParentLink, ResultMessage, StartSignal};
use crate::saga::machine::{IssuedFor, OperatorAction};

mod operator;
mod result;
mod signal;
mod start;
#[cfg(test)]
mod tests;

pub use start::reserved_id;

/// What a coordinator message asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Start {
        saga: String,
        id: String,
        version: Option<u32>,
        input: Value,
        run_at: Option<DateTime<Utc>>,
        /// Signal-with-start: delivered in the same batch, to the saga this starts or
        /// to the one that exists with this id.
        signal: Option<StartSignal>,
        /// Set when a parent saga's coordinator starts this one as its child.
        parent: Option<ParentLink>,
        /// The start message's `traceparent` header (W3C trace context), unchecked:
        /// the coordinator keeps it when valid and starts a new trace otherwise.
        traceparent: Option<String>,
    },
    Result(ResultMessage),
    Signal {
        saga_id: String,
        name: String,
        payload: Value,
    },
    Cancel {
        saga_id: String,
        reason: String,
    },
    /// An operator action (retry, resume_at, skip, compensate), with where the saga
    /// stood when it was decided and who sent it.
    Operator {
        saga_id: String,
        action: OperatorAction,
        issued_for: IssuedFor,
        /// Who issued it (an API token's name, `cli:<user>`), as the sender says; `None`
        /// from senders older than the field.
        actor: Option<String>,
    },
    /// A parent saga compensates: undo this completed child and answer `parent`.
    Undo {
        saga_id: String,
        parent: ParentLink,
    },
}

impl Input {
    pub fn saga_id(&self) -> &str {
        match self {
            Input::Start { id, .. } => id,
            Input::Result(r) => &r.saga_id,
            Input::Signal { saga_id, .. }
            | Input::Cancel { saga_id, .. }
            | Input::Operator { saga_id, .. }
            | Input::Undo { saga_id, .. } => saga_id,
        }
    }
}

/// Parses one delivery. `message_id` (an AMQP property) names the saga when a start
/// event has no `id`, so a redelivered start cannot create a second saga. Anything over
/// `limits` is refused with the limit named.
pub fn parse(
    names: &Names,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    message_id: Option<&str>,
    now: DateTime<Utc>,
    limits: &Limits,
) -> Result<Input, String> {
    let what = if exchange == names.start() {
        "start body"
    } else if exchange == names.results() {
        "result body"
    } else if exchange == names.signals() {
        "signal body"
    } else if exchange == names.operator() {
        "operator body"
    } else {
        return Err(format!("unexpected exchange `{exchange}`"));
    };
    limits
        .check_message(what, body)
        .map_err(|e| e.to_string())?;
    if exchange == names.start() {
        start::parse_start(routing_key, body, message_id, now, limits)
    } else if exchange == names.results() {
        result::parse_result(body, limits)
    } else if exchange == names.operator() {
        operator::parse_operator(body, limits)
    } else {
        signal::parse_signal(body, limits, &names.operator())
    }
}

fn check_id(limits: &Limits, field: &str, id: &str) -> Result<(), String> {
    limits.check_id(field, id).map_err(|e| e.to_string())
}

fn check_payload(limits: &Limits, what: &str, v: &Value) -> Result<(), String> {
    limits.check_payload(what, v).map_err(|e| e.to_string())
}
