//! Reading dead-letter queues: what is there and why. (Replay and purge tooling is
//! the operator surface's job.)

use lapin::options::{BasicGetOptions, BasicNackOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use serde::Serialize;

use crate::broker::Names;

/// One dead letter, as an operator reads it.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub queue: String,
    pub reason: String,
    pub routing_key: String,
    pub body: String,
}

/// A dead-letter queue and how many messages it holds.
#[derive(Debug, Clone, Serialize)]
pub struct DlqSummary {
    pub queue: String,
    pub messages: u32,
}

/// Why the message was dead-lettered: our header, else the broker's `x-death` reason.
pub fn reason(headers: Option<&FieldTable>) -> String {
    let Some(h) = headers else {
        return "unknown".into();
    };
    let get = |k: &str| h.inner().get(k).cloned();
    if let Some(AMQPValue::LongString(s)) = get(crate::messages::REASON_HEADER) {
        return s.to_string();
    }
    if let Some(AMQPValue::LongString(s)) = get("x-first-death-reason") {
        let queue = match get("x-first-death-queue") {
            Some(AMQPValue::LongString(q)) => format!(" in {q}"),
            _ => String::new(),
        };
        return format!("broker: {s}{queue}");
    }
    "unknown".into()
}

/// Counts of the coordinator DLQ and of each activity's DLQ (queues that do not
/// exist are skipped).
pub async fn summaries(
    conn: &lapin::Connection,
    names: &Names,
    activities: &[String],
) -> lapin::Result<Vec<DlqSummary>> {
    let mut queues = vec![names.dlq_coordinator()];
    queues.extend(activities.iter().map(|a| names.dlq(a)));
    let mut out = Vec::new();
    for q in queues {
        // A passive declare on a missing queue closes the channel: use a fresh one each time.
        let ch = conn.create_channel().await?;
        let opts = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        if let Ok(info) = ch
            .queue_declare(q.as_str().into(), opts, FieldTable::default())
            .await
        {
            out.push(DlqSummary {
                queue: q,
                messages: info.message_count(),
            });
            let _ = ch.close(200, "ok".into()).await;
        }
    }
    Ok(out)
}

/// Up to `limit` messages of `queue`, left in place (fetched, then requeued).
pub async fn peek(
    conn: &lapin::Connection,
    queue: &str,
    limit: usize,
) -> lapin::Result<Vec<DeadLetter>> {
    let ch = conn.create_channel().await?;
    let mut out = Vec::new();
    let mut last_tag = None;
    while out.len() < limit {
        let Some(msg) = ch
            .basic_get(queue.into(), BasicGetOptions { no_ack: false })
            .await?
        else {
            break;
        };
        let d = &msg.delivery;
        last_tag = Some(d.delivery_tag);
        out.push(DeadLetter {
            queue: queue.to_string(),
            reason: reason(d.properties.headers().as_ref()),
            routing_key: d.routing_key.to_string(),
            body: String::from_utf8_lossy(&d.data).chars().take(500).collect(),
        });
    }
    if let Some(tag) = last_tag {
        ch.basic_nack(
            tag,
            BasicNackOptions {
                multiple: true,
                requeue: true,
            },
        )
        .await?;
    }
    let _ = ch.close(200, "ok".into()).await;
    Ok(out)
}
