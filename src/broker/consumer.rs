//! Consumption in one place: the coordinator, the worker and the dead-letter tools
//! take deliveries through an [`Intake`] and settle each one exactly once with a
//! [`Verdict`] (ack, hand back, dead-letter with a reason).
//!
//! Why settling needs care: an AMQP channel closes with `PRECONDITION_FAILED -
//! unknown delivery tag` when a frame names a tag already settled, and every channel
//! teardown returns all of its unacked deliveries with their delivery count raised,
//! so one wrong frame burns a delivery attempt of every message the channel held.
//! [`plan`] turns a batch's verdicts into frames that name every tag once.

use std::time::Duration;

use futures_util::stream::SelectAll;
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Consumer};

use super::publisher::dead_letter_headers;
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

/// What happens to one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Done with it.
    Ack,
    /// Return it to its queue (for another consumer, or later).
    HandBack,
    /// Publish it to the dead-letter exchange with this reason, then ack it.
    DeadLetter(String),
}

/// One settling frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    Ack { tag: u64, multiple: bool },
    Requeue { tag: u64 },
}

/// The frames that settle `batch` (tag, verdict), each tag exactly once.
///
/// With `sequential` (the caller settles a batch before it takes the next one, so
/// nothing below the batch's tags is outstanding), the acks collapse into one
/// multiple-ack at the highest acked tag, sent after the hand-backs so it cannot
/// cover them. Without it (the worker completes tasks out of order) every tag gets
/// its own frame.
pub fn plan(batch: &[(u64, &Verdict)], sequential: bool) -> Vec<Frame> {
    let mut frames: Vec<Frame> = batch
        .iter()
        .filter(|(_, v)| **v == Verdict::HandBack)
        .map(|(tag, _)| Frame::Requeue { tag: *tag })
        .collect();
    let acked = batch
        .iter()
        .filter(|(_, v)| **v != Verdict::HandBack)
        .map(|(tag, _)| *tag);
    if sequential {
        if let Some(tag) = acked.max() {
            frames.push(Frame::Ack {
                tag,
                multiple: true,
            });
        }
    } else {
        frames.extend(acked.map(|tag| Frame::Ack {
            tag,
            multiple: false,
        }));
    }
    frames
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

/// Settles an intake's deliveries; cheap to clone, so a stage that finishes work
/// out of order (the worker's completion stage) can hold its own.
#[derive(Clone)]
pub struct Settler {
    channel: Channel,
    names: Names,
    route: DeadLetterRoute,
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
        if !should_linger(batch.len(), max, linger) {
            return Ok(Some(batch));
        }
        let deadline = tokio::time::Instant::now() + linger;
        while batch.len() < max {
            match tokio::time::timeout_at(deadline, self.consumers.next()).await {
                Ok(Some(d)) => batch.push(Inbound::from_delivery(d?)),
                _ => break,
            }
        }
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
    /// Settles a batch taken with [`Intake::next_batch`], before the next batch is
    /// taken: dead letters are published (confirmed) first, then every delivery is
    /// acked or handed back exactly once.
    pub async fn settle(
        &self,
        dead: &Publisher,
        batch: &[Inbound],
        verdicts: &[Verdict],
    ) -> super::Result<()> {
        self.settle_with(dead, batch, verdicts, true).await
    }

    /// Settles some deliveries while others are still outstanding (out of order).
    pub async fn settle_each(
        &self,
        dead: &Publisher,
        batch: &[Inbound],
        verdicts: &[Verdict],
    ) -> super::Result<()> {
        self.settle_with(dead, batch, verdicts, false).await
    }

    async fn settle_with(
        &self,
        dead: &Publisher,
        batch: &[Inbound],
        verdicts: &[Verdict],
        sequential: bool,
    ) -> super::Result<()> {
        debug_assert_eq!(batch.len(), verdicts.len());
        self.dead_letter(dead, batch, verdicts).await?;
        let tagged: Vec<(u64, &Verdict)> = batch.iter().map(|m| m.tag).zip(verdicts).collect();
        for frame in plan(&tagged, sequential) {
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
    use std::collections::BTreeMap;

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

    /// Replays frames against the set of outstanding tags, as the broker does, and
    /// fails on any frame naming a tag that is not outstanding.
    fn replay(outstanding: &[u64], frames: &[Frame]) -> BTreeMap<u64, &'static str> {
        let mut open: Vec<u64> = outstanding.to_vec();
        let mut settled = BTreeMap::new();
        for f in frames {
            let (tag, multiple, what) = match *f {
                Frame::Ack { tag, multiple } => (tag, multiple, "ack"),
                Frame::Requeue { tag } => (tag, false, "requeue"),
            };
            assert!(
                open.contains(&tag),
                "unknown delivery tag {tag} in {frames:?}"
            );
            let hit: Vec<u64> = open
                .iter()
                .copied()
                .filter(|t| if multiple { *t <= tag } else { *t == tag })
                .collect();
            for t in hit {
                open.retain(|o| *o != t);
                assert!(settled.insert(t, what).is_none(), "tag {t} settled twice");
            }
        }
        settled
    }

    fn verdicts(pattern: &str) -> Vec<Verdict> {
        pattern
            .chars()
            .map(|c| match c {
                'a' => Verdict::Ack,
                'h' => Verdict::HandBack,
                _ => Verdict::DeadLetter("poison".into()),
            })
            .collect()
    }

    #[test]
    fn every_mix_settles_each_tag_exactly_once() {
        // Every pattern of three verdicts over four deliveries, both modes.
        for n in 0..81u32 {
            let pattern: String = (0..4)
                .map(|i| ['a', 'h', 'd'][(n / 3u32.pow(i) % 3) as usize])
                .collect();
            let v = verdicts(&pattern);
            let tags = [7u64, 8, 9, 10];
            let batch: Vec<(u64, &Verdict)> = tags.iter().copied().zip(&v).collect();
            for sequential in [true, false] {
                let settled = replay(&tags, &plan(&batch, sequential));
                assert_eq!(settled.len(), 4, "{pattern} sequential={sequential}");
                for (tag, verdict) in &batch {
                    let want = if **verdict == Verdict::HandBack {
                        "requeue"
                    } else {
                        "ack"
                    };
                    assert_eq!(settled[tag], want, "{pattern} tag {tag}");
                }
            }
        }
    }

    #[test]
    fn last_delivery_handed_back_is_not_acked_too() {
        // Today's bug: a nack of the last tag, then a multiple-ack of that same tag.
        let v = verdicts("ah");
        let frames = plan(&[(1, &v[0]), (2, &v[1])], true);
        assert_eq!(
            frames,
            vec![
                Frame::Requeue { tag: 2 },
                Frame::Ack {
                    tag: 1,
                    multiple: true
                }
            ]
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
