//! Consumption in one place: the coordinator, the worker and the dead-letter tools
//! take deliveries through an [`Intake`] and settle each one exactly once with a
//! [`Verdict`] (ack, hand back, dead-letter with a reason); which frames that takes
//! is worked out in [`super::settlement`].

use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::SelectAll;
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Consumer};

use super::publisher::dead_letter_headers;
pub use super::settlement::Verdict;
use super::settlement::{Frame, Tags};
use super::{Names, Outgoing, Publisher};

/// One delivery, detached from lapin's types so the rest of the crate never sees them.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub tag: u64,
    pub exchange: String,
    pub routing_key: String,
    pub body: Vec<u8>,
    /// The AMQP `message_id` property.
    pub message_id: Option<String>,
    /// How often the broker delivered it before (`x-delivery-count` of quorum queues).
    pub delivery_count: u32,
    headers: Option<FieldTable>,
}

impl Inbound {
    fn from_delivery(d: Delivery) -> Self {
        let headers = d.properties.headers().clone();
        Inbound {
            tag: d.delivery_tag,
            exchange: d.exchange.to_string(),
            routing_key: d.routing_key.to_string(),
            message_id: d.properties.message_id().as_ref().map(|s| s.to_string()),
            delivery_count: headers.as_ref().map(delivery_count).unwrap_or(0),
            headers,
            body: d.data,
        }
    }

    /// Its `traceparent` header (W3C trace context), if it has one.
    pub fn traceparent(&self) -> Option<String> {
        super::publisher::traceparent_header(self.headers.as_ref())
    }

    /// Why the message was dead-lettered, when it was (see [`dead_letter_reason`]).
    pub fn dead_letter_reason(&self) -> Option<String> {
        dead_letter_reason(self.headers.as_ref())
    }
}

/// Why a message was dead-lettered: sagaflow's reason header, else the broker's most
/// recent `x-death` entry (`delivery_limit`, `rejected`, `expired`, `maxlen`, with
/// its queue). Not `x-first-death-reason`: a retried task died once already, by
/// design, when its delay queue's TTL sent it back.
pub(crate) fn dead_letter_reason(headers: Option<&FieldTable>) -> Option<String> {
    let h = headers?;
    let text = |t: &FieldTable, k: &str| match t.inner().get(k) {
        Some(AMQPValue::LongString(s)) => Some(s.to_string()),
        _ => None,
    };
    if let Some(r) = text(h, crate::messages::REASON_HEADER) {
        return Some(r);
    }
    let latest = match h.inner().get("x-death") {
        Some(AMQPValue::FieldArray(deaths)) => deaths.as_slice().iter().find_map(|d| match d {
            AMQPValue::FieldTable(t) => Some(t.clone()),
            _ => None,
        }),
        _ => None,
    };
    let (reason, queue) = match &latest {
        Some(t) => (text(t, "reason"), text(t, "queue")),
        None => (
            text(h, "x-first-death-reason"),
            text(h, "x-first-death-queue"),
        ),
    };
    let queue = queue.map(|q| format!(" in {q}")).unwrap_or_default();
    reason.map(|r| format!("broker: {r}{queue}"))
}

/// How often a message was delivered before (quorum queues count in `x-delivery-count`).
fn delivery_count(headers: &FieldTable) -> u32 {
    let n = match headers.inner().get("x-delivery-count") {
        Some(AMQPValue::LongLongInt(n)) => *n,
        Some(AMQPValue::LongInt(n)) => i64::from(*n),
        Some(AMQPValue::LongUInt(n)) => i64::from(*n),
        Some(AMQPValue::ShortInt(n)) => i64::from(*n),
        Some(AMQPValue::ShortUInt(n)) => i64::from(*n),
        Some(AMQPValue::ShortShortInt(n)) => i64::from(*n),
        Some(AMQPValue::ShortShortUInt(n)) => i64::from(*n),
        _ => 0,
    };
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

/// Where an intake's dead letters go on `<ns>.dlx`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterRoute {
    /// `<ns>.dlq.coordinator`.
    Coordinator,
    /// `<ns>.dlq.<activity>`, the activity being the delivery's routing key.
    Task,
}

/// A channel consuming one or more queues with manual acks.
pub struct Intake {
    consumers: SelectAll<Consumer>,
    settler: Settler,
}

/// Settles an intake's deliveries, in any order; cheap to clone, so a stage that
/// finishes work out of order (the worker's completion stage) can hold its own.
#[derive(Clone)]
pub struct Settler {
    channel: Channel,
    names: Names,
    route: DeadLetterRoute,
    /// The channel's delivery tags. Locked while a batch's frames are sent, so no
    /// multiple-ack goes out before a frame it assumes sent (see [`Tags::settle`]).
    tags: Arc<tokio::sync::Mutex<Tags>>,
}

impl Intake {
    /// Opens a channel with `prefetch` and consumes each `(queue, consumer tag)`.
    pub async fn open(
        conn: &super::Connection,
        names: &Names,
        queues: &[(String, String)],
        prefetch: u16,
        route: DeadLetterRoute,
    ) -> super::Result<Intake> {
        let channel = conn.channel().await?;
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await?;
        let mut consumers = SelectAll::new();
        for (queue, tag) in queues {
            let c = channel
                .basic_consume(
                    queue.as_str().into(),
                    tag.as_str().into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            consumers.push(c);
        }
        Ok(Intake {
            consumers,
            settler: Settler {
                channel,
                names: names.clone(),
                route,
                tags: Arc::default(),
            },
        })
    }

    pub fn settler(&self) -> &Settler {
        &self.settler
    }

    /// The next batch, batched naturally: at least one delivery, at most `max`. It
    /// takes what has already arrived without waiting; only when more than one was
    /// already waiting (the queue is busy, so more are on the way) does it wait up to
    /// `linger` for more. A lone input at low load goes at once: a hop that waits for
    /// a batch that is not coming adds its linger to every step of every saga.
    /// `Ok(None)` when every consumer ended (cancelled or the connection closed).
    pub async fn next_batch(
        &mut self,
        max: usize,
        linger: Duration,
    ) -> super::Result<Option<Vec<Inbound>>> {
        let first = match self.consumers.next().await {
            None => return Ok(None),
            Some(d) => d?,
        };
        let mut batch = vec![Inbound::from_delivery(first)];
        while batch.len() < max {
            match futures_util::FutureExt::now_or_never(self.consumers.next()) {
                Some(Some(d)) => batch.push(Inbound::from_delivery(d?)),
                _ => break,
            }
        }
        if should_linger(batch.len(), max, linger) {
            let deadline = tokio::time::Instant::now() + linger;
            while batch.len() < max {
                match tokio::time::timeout_at(deadline, self.consumers.next()).await {
                    Ok(Some(d)) => batch.push(Inbound::from_delivery(d?)),
                    _ => break,
                }
            }
        }
        let mut tags = self.settler.tags.lock().await;
        batch.iter().for_each(|m| tags.received(m.tag));
        Ok(Some(batch))
    }

    /// Stops delivering from every consumer of this intake (the worker drains).
    pub async fn cancel(&self, consumer_tags: &[String]) {
        for tag in consumer_tags {
            let _ = self
                .settler
                .channel
                .basic_cancel(tag.as_str().into(), Default::default())
                .await;
        }
    }
}

/// Whether a batch of `ready` deliveries (what had arrived when it was taken) waits
/// for more: only when the queue is busy (more than one was waiting) and not full.
fn should_linger(ready: usize, max: usize, linger: Duration) -> bool {
    ready > 1 && ready < max && !linger.is_zero()
}

impl Settler {
    /// Settles deliveries of this intake, whether or not others are still
    /// outstanding: dead letters are published (confirmed) first, then every delivery
    /// is acked or handed back exactly once, acks below every open delivery in one
    /// multiple-ack.
    pub async fn settle(
        &self,
        dead: &Publisher,
        batch: &[Inbound],
        verdicts: &[Verdict],
    ) -> super::Result<()> {
        debug_assert_eq!(batch.len(), verdicts.len());
        self.dead_letter(dead, batch, verdicts).await?;
        let tagged: Vec<(u64, &Verdict)> = batch.iter().map(|m| m.tag).zip(verdicts).collect();
        let mut tags = self.tags.lock().await;
        for frame in tags.settle(&tagged) {
            self.send(frame).await?;
        }
        Ok(())
    }

    async fn send(&self, frame: Frame) -> lapin::Result<()> {
        match frame {
            Frame::Ack { tag, multiple } => {
                self.channel
                    .basic_ack(tag, BasicAckOptions { multiple })
                    .await
            }
            Frame::Requeue { tag } => {
                self.channel
                    .basic_nack(
                        tag,
                        BasicNackOptions {
                            multiple: false,
                            requeue: true,
                        },
                    )
                    .await
            }
        }
    }

    /// Publishes the dead-lettered deliveries to `<ns>.dlx` with their reasons.
    async fn dead_letter(
        &self,
        dead: &Publisher,
        batch: &[Inbound],
        verdicts: &[Verdict],
    ) -> super::Result<()> {
        let dlx = self.names.dlx();
        let refused: Vec<(&Inbound, &str, String, String)> = batch
            .iter()
            .zip(verdicts)
            .filter_map(|(m, v)| match v {
                Verdict::DeadLetter(reason) => Some((m, reason.as_str())),
                _ => None,
            })
            .map(|(m, reason)| {
                let (key, queue) = match self.route {
                    DeadLetterRoute::Coordinator => (
                        Names::DLX_KEY_COORDINATOR.to_string(),
                        self.names.coordinator_queue(),
                    ),
                    DeadLetterRoute::Task => (
                        Names::dlx_key_task(&m.routing_key),
                        self.names.task_queue(&m.routing_key),
                    ),
                };
                (m, reason, key, queue)
            })
            .collect();
        if refused.is_empty() {
            return Ok(());
        }
        let msgs: Vec<Outgoing> = refused
            .iter()
            .map(|(m, reason, key, queue)| {
                tracing::warn!(reason = %reason, exchange = %m.exchange, routing_key = %m.routing_key, "dead-lettering");
                Outgoing {
                    exchange: &dlx,
                    routing_key: key,
                    body: &m.body,
                    mandatory: true,
                    headers: Some(dead_letter_headers(
                        reason,
                        &m.exchange,
                        &m.routing_key,
                        queue,
                    )),
                }
            })
            .collect();
        dead.publish_all_or_fail(&msgs).await
    }
}

/// Returns every unacked delivery up to and including `tag` on `ch` to its queue,
/// in order, in one frame (the dead-letter tools browse a queue with `basic_get`).
pub(crate) async fn requeue_through(ch: &Channel, tag: u64) -> lapin::Result<()> {
    ch.basic_nack(
        tag,
        BasicNackOptions {
            multiple: true,
            requeue: true,
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_delivery_never_lingers() {
        let linger = Duration::from_millis(2);
        assert!(!should_linger(1, 256, linger));
        assert!(should_linger(2, 256, linger));
        assert!(!should_linger(256, 256, linger), "a full batch goes");
        assert!(
            !should_linger(5, 256, Duration::ZERO),
            "linger 0: never waits"
        );
    }

    #[test]
    fn the_reason_is_ours_or_the_most_recent_death() {
        use lapin::types::{FieldArray, LongString};
        let death = |reason: &str, queue: &str| {
            let mut t = FieldTable::default();
            t.insert(
                "reason".into(),
                AMQPValue::LongString(LongString::from(reason)),
            );
            t.insert(
                "queue".into(),
                AMQPValue::LongString(LongString::from(queue)),
            );
            AMQPValue::FieldTable(t)
        };
        let mut h = FieldTable::default();
        assert_eq!(dead_letter_reason(Some(&h)), None);
        h.insert(
            "x-first-death-reason".into(),
            AMQPValue::LongString(LongString::from("expired")),
        );
        h.insert(
            "x-death".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![
                death("delivery_limit", "ns.task.a"),
                death("expired", "ns.delay.100"),
            ])),
        );
        assert_eq!(
            dead_letter_reason(Some(&h)).as_deref(),
            Some("broker: delivery_limit in ns.task.a")
        );
        h.insert(
            crate::messages::REASON_HEADER.into(),
            AMQPValue::LongString(LongString::from("task body: eof")),
        );
        assert_eq!(
            dead_letter_reason(Some(&h)).as_deref(),
            Some("task body: eof")
        );
    }

    #[test]
    fn delivery_count_reads_any_integer_type() {
        let mut h = FieldTable::default();
        assert_eq!(delivery_count(&h), 0);
        h.insert("x-delivery-count".into(), AMQPValue::LongLongInt(3));
        assert_eq!(delivery_count(&h), 3);
        h.insert("x-delivery-count".into(), AMQPValue::ShortInt(-1));
        assert_eq!(delivery_count(&h), 0);
    }
}
