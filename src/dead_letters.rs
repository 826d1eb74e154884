//! Dead-letter queues as an operator sees them: what is there, why, which saga it
//! belongs to, and replaying or purging a selection of it.

use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use serde::Serialize;

use crate::broker::Names;

/// One dead letter, as an operator reads it.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub queue: String,
    pub reason: String,
    /// The saga, step and attempt it belongs to.
    pub about: About,
    /// Every AMQP header, rendered as text (`x-death` included).
    pub headers: std::collections::BTreeMap<String, String>,
    pub routing_key: String,
    pub body: String,
}

/// A dead-letter queue and how many messages it holds.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetterQueue {
    pub queue: String,
    pub messages: u32,
}

/// Why the message was dead-lettered (see [`crate::broker::consumer::dead_letter_reason`]).
pub fn reason(headers: Option<&FieldTable>) -> String {
    crate::broker::consumer::dead_letter_reason(headers).unwrap_or_else(|| "unknown".into())
}

/// Depths of the coordinator's dead-letter queue and of each activity's (queues that
/// do not exist are skipped).
pub async fn summaries(
    conn: &lapin::Connection,
    names: &Names,
    activities: &[String],
) -> lapin::Result<Vec<DeadLetterQueue>> {
    let mut queues = vec![names.dlq_coordinator()];
    queues.extend(activities.iter().map(|a| names.dlq(a)));
    let infos = crate::broker::inspect::queue_infos(conn, &queues).await?;
    Ok(infos
        .into_iter()
        .map(|i| DeadLetterQueue {
            queue: i.queue,
            messages: i.ready,
        })
        .collect())
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
            about: about(&d.data),
            headers: render_headers(d.properties.headers().as_ref()),
            routing_key: d.routing_key.to_string(),
            body: String::from_utf8_lossy(&d.data).chars().take(500).collect(),
        });
    }
    if let Some(tag) = last_tag {
        crate::broker::consumer::requeue_through(&ch, tag).await?;
    }
    let _ = ch.close(200, "ok".into()).await;
    Ok(out)
}

/// Headers as text, for operators reading a dead letter.
pub fn render_headers(headers: Option<&FieldTable>) -> std::collections::BTreeMap<String, String> {
    headers
        .map(|h| {
            h.inner()
                .iter()
                .map(|(k, v)| (k.to_string(), render(v)))
                .collect()
        })
        .unwrap_or_default()
}

fn render(v: &AMQPValue) -> String {
    match v {
        AMQPValue::LongString(s) => s.to_string(),
        AMQPValue::ShortString(s) => s.to_string(),
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::LongLongInt(n) => n.to_string(),
        AMQPValue::LongInt(n) => n.to_string(),
        AMQPValue::LongUInt(n) => n.to_string(),
        AMQPValue::ShortInt(n) => n.to_string(),
        AMQPValue::Timestamp(t) => t.to_string(),
        AMQPValue::FieldArray(a) => format!(
            "[{}]",
            a.as_slice()
                .iter()
                .map(render)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        AMQPValue::FieldTable(t) => format!(
            "{{{}}}",
            t.inner()
                .iter()
                .map(|(k, v)| format!("{k}: {}", render(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => format!("{other:?}"),
    }
}

/// What a dead letter is about, read from its body (tasks, results, starts, signals
/// all name the saga).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct About {
    pub saga_id: Option<String>,
    pub step: Option<String>,
    pub activity: Option<String>,
    pub attempt: Option<u64>,
}

/// Reads the saga, step and attempt a dead letter belongs to, when its body says.
pub fn about(body: &[u8]) -> About {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return About::default();
    };
    let text = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    About {
        saga_id: text("saga_id").or_else(|| text("id")),
        step: text("step"),
        activity: text("activity"),
        attempt: v.get("attempt").and_then(|x| x.as_u64()),
    }
}

/// Where a dead letter was going: our own headers, else the broker's `x-death`.
pub fn original_route(headers: Option<&FieldTable>) -> Option<(String, String)> {
    let h = headers?.inner();
    let text = |k: &str| match h.get(k) {
        Some(AMQPValue::LongString(s)) => Some(s.to_string()),
        _ => None,
    };
    if let (Some(e), Some(k)) = (
        text("x-sagaflow-original-exchange"),
        text("x-sagaflow-original-routing-key"),
    ) {
        return Some((e, k));
    }
    let Some(AMQPValue::FieldArray(deaths)) = h.get("x-death") else {
        return None;
    };
    let AMQPValue::FieldTable(last) = deaths.as_slice().first()? else {
        return None;
    };
    let exchange = match last.inner().get("exchange") {
        Some(AMQPValue::LongString(s)) => s.to_string(),
        _ => return None,
    };
    let key = match last.inner().get("routing-keys") {
        Some(AMQPValue::FieldArray(keys)) => match keys.as_slice().first() {
            Some(AMQPValue::LongString(k)) => k.to_string(),
            _ => return None,
        },
        _ => return None,
    };
    Some((exchange, key))
}

/// What to do with the selected dead letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterAction {
    /// Publish again where it was going (without the dead-letter headers), then remove.
    Replay,
    /// Remove.
    Purge,
}

/// Which dead letters of a queue an action touches.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only those of this saga.
    pub saga_id: Option<String>,
    /// At most this many.
    pub limit: usize,
    /// List what would be touched, touch nothing.
    pub dry_run: bool,
}

/// A dead letter an action touched (or would touch, in a dry run).
#[derive(Debug, Clone, Serialize)]
pub struct Touched {
    pub about: About,
    pub reason: String,
    pub route: Option<(String, String)>,
    /// False in a dry run, and for a replay that could not be done (left in place).
    pub applied: bool,
}

/// Replays or purges the dead letters of `queue` that `sel` selects. Each replay is
/// confirmed by the broker before its dead letter is removed, so a crash in between
/// replays it twice at worst — which the worker ledger and the saga machine absorb.
/// Dead letters not selected stay, in order.
pub async fn act(
    conn: &lapin::Connection,
    publisher: &crate::broker::Publisher,
    queue: &str,
    sel: &Selection,
    action: DeadLetterAction,
) -> lapin::Result<Vec<Touched>> {
    let ch = conn.create_channel().await?;
    let depth = ready(&ch, queue).await?;
    let mut touched = Vec::new();
    // The highest fetched delivery still unacked, and how many are: returned at the end.
    let (mut last_kept, mut kept) = (None, 0u32);
    for _ in 0..depth {
        if touched.len() >= sel.limit {
            break;
        }
        let Some(msg) = ch
            .basic_get(queue.into(), BasicGetOptions { no_ack: false })
            .await?
        else {
            break;
        };
        let d = &msg.delivery;
        let about = about(&d.data);
        let selected = sel
            .saga_id
            .as_ref()
            .is_none_or(|s| about.saga_id.as_ref() == Some(s));
        let mut item = Touched {
            about,
            reason: reason(d.properties.headers().as_ref()),
            route: original_route(d.properties.headers().as_ref()),
            applied: false,
        };
        if selected && !sel.dry_run && apply(publisher, &item, &d.data, action).await {
            ch.basic_ack(d.delivery_tag, Default::default()).await?;
            item.applied = true;
        } else {
            last_kept = Some(d.delivery_tag);
            kept += 1;
        }
        if selected {
            touched.push(item);
        }
    }
    if let Some(tag) = last_kept {
        // Everything fetched and not acked goes back, in order; return only once it is
        // back, so the next look at the queue sees it.
        crate::broker::consumer::requeue_through(&ch, tag).await?;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while ready(&ch, queue).await? < kept && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    let _ = ch.close(200, "ok".into()).await;
    Ok(touched)
}

/// Replays (publishes, confirmed) or purges one dead letter; false when it must stay.
async fn apply(
    publisher: &crate::broker::Publisher,
    item: &Touched,
    body: &[u8],
    action: DeadLetterAction,
) -> bool {
    if action == DeadLetterAction::Purge {
        return true;
    }
    let Some((exchange, key)) = &item.route else {
        return false; // no known destination: left in place
    };
    let out = crate::broker::Outgoing {
        exchange,
        routing_key: key,
        body,
        mandatory: true,
        headers: None,
    };
    match publisher.publish_all_or_fail(&[out]).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "replay not confirmed; the dead letter stays");
            false
        }
    }
}

/// Ready messages in `queue`.
async fn ready(ch: &lapin::Channel, queue: &str) -> lapin::Result<u32> {
    let opts = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    Ok(ch
        .queue_declare(queue.into(), opts, FieldTable::default())
        .await?
        .message_count())
}

/// `coordinator`, an activity name or a full queue name -> the dead-letter queue name.
pub fn queue_name(names: &Names, which: &str) -> String {
    if which.starts_with(&format!("{}.dlq.", names.namespace())) {
        which.to_string()
    } else if which == "coordinator" {
        names.dlq_coordinator()
    } else {
        names.dlq(which)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{FieldArray, LongString, ShortString};

    fn table(pairs: Vec<(&str, AMQPValue)>) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert(ShortString::from(k.to_string()), v);
        }
        t
    }

    fn s(v: &str) -> AMQPValue {
        AMQPValue::LongString(LongString::from(v.to_string()))
    }

    #[test]
    fn about_reads_tasks_and_starts() {
        let task = br#"{"saga_id":"o-1","step":"charge","activity":"pay","attempt":3}"#;
        assert_eq!(
            about(task),
            About {
                saga_id: Some("o-1".into()),
                step: Some("charge".into()),
                activity: Some("pay".into()),
                attempt: Some(3)
            }
        );
        assert_eq!(about(br#"{"id":"o-2"}"#).saga_id.as_deref(), Some("o-2"));
        assert_eq!(about(b"garbage"), About::default());
    }

    #[test]
    fn original_route_prefers_our_headers_then_x_death() {
        let ours = table(vec![
            ("x-sagaflow-original-exchange", s("ns.start")),
            ("x-sagaflow-original-routing-key", s("order")),
        ]);
        assert_eq!(
            original_route(Some(&ours)),
            Some(("ns.start".into(), "order".into()))
        );
        let death = table(vec![
            ("exchange", s("ns.tasks")),
            (
                "routing-keys",
                AMQPValue::FieldArray(FieldArray::from(vec![s("pay.charge")])),
            ),
        ]);
        let broker = table(vec![(
            "x-death",
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(death)])),
        )]);
        assert_eq!(
            original_route(Some(&broker)),
            Some(("ns.tasks".into(), "pay.charge".into()))
        );
        assert_eq!(original_route(None), None);
    }

    #[test]
    fn headers_render_as_text() {
        let death = table(vec![
            ("reason", s("delivery_limit")),
            ("count", AMQPValue::LongLongInt(1)),
        ]);
        let h = table(vec![
            (
                "x-death",
                AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(death)])),
            ),
            ("x-sagaflow-reason", s("bad")),
        ]);
        let r = render_headers(Some(&h));
        assert_eq!(r["x-sagaflow-reason"], "bad");
        assert_eq!(r["x-death"], "[{count: 1, reason: delivery_limit}]");
    }

    #[test]
    fn queue_names_resolve() {
        let n = Names::new("ns");
        assert_eq!(queue_name(&n, "coordinator"), "ns.dlq.coordinator");
        assert_eq!(queue_name(&n, "pay.charge"), "ns.dlq.pay.charge");
        assert_eq!(queue_name(&n, "ns.dlq.x"), "ns.dlq.x");
    }
}
