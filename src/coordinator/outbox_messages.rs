//! What each machine command publishes: the outbox message a batch writes for it.
//! Every message carries the saga's trace context, so a saga's tasks, events, child
//! starts and answers are one trace.

use std::time::Duration;

use crate::broker::topology::delay_level;
use crate::broker::Names;
use crate::saga::machine::Command;
use crate::store::outbox::OutboxMessage;

/// The message `cmd` publishes, carrying `traceparent`.
pub(super) fn outbox_message(
    names: &Names,
    traceparent: Option<String>,
    cmd: &Command,
) -> OutboxMessage {
    let mut m = outbox_body(names, cmd);
    m.traceparent = traceparent;
    m
}

fn outbox_body(names: &Names, cmd: &Command) -> OutboxMessage {
    match cmd {
        Command::Dispatch { task, delay } => OutboxMessage {
            exchange: dispatch_exchange(names, *delay),
            routing_key: task.activity.clone(),
            body: serde_json::to_vec(task).expect("task serialises"),
            mandatory: true,
            traceparent: None,
        },
        Command::Publish(event) => OutboxMessage {
            exchange: names.events(),
            routing_key: format!("saga.{}.{}", event.saga, event.status),
            body: serde_json::to_vec(event).expect("event serialises"),
            mandatory: false,
            traceparent: None,
        },
        // A child saga is started, cancelled and undone through the coordinators'
        // own inputs, exactly as a client or an operator would, so whichever
        // coordinator takes the message applies it in its own transaction.
        Command::StartChild(start) => OutboxMessage {
            exchange: names.start(),
            routing_key: start.saga.clone().unwrap_or_default(),
            body: serde_json::to_vec(start).expect("start event serialises"),
            mandatory: true,
            traceparent: None,
        },
        Command::CancelChild { saga_id, reason } => OutboxMessage {
            exchange: names.signals(),
            routing_key: String::new(),
            body: serde_json::to_vec(&serde_json::json!({
                "saga_id": saga_id, "cancel": true, "reason": reason
            }))
            .expect("cancel serialises"),
            mandatory: true,
            traceparent: None,
        },
        Command::UndoChild { saga_id, parent } => OutboxMessage {
            exchange: names.operator(),
            routing_key: String::new(),
            body: serde_json::to_vec(&serde_json::json!({
                "saga_id": saga_id, "undo_for": parent
            }))
            .expect("undo serialises"),
            mandatory: true,
            traceparent: None,
        },
        Command::Reply(result) => OutboxMessage {
            exchange: names.results(),
            routing_key: crate::messages::COORDINATOR_REPLY_TO.to_string(),
            body: serde_json::to_vec(result).expect("result serialises"),
            mandatory: true,
            traceparent: None,
        },
    }
}

/// Where a task goes: straight to the tasks exchange, or through a delay level.
fn dispatch_exchange(names: &Names, delay: Duration) -> String {
    match delay_level(delay) {
        Some(level) => names.delay(level),
        None => names.tasks(),
    }
}
