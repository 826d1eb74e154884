//! Publishing with publisher confirms and `mandatory`, pipelined: a batch is sent
//! in full, then its confirms are awaited, so a batch costs one round trip; a
//! message the broker returns is matched to the one sent by its batch position.

use std::sync::Arc;

use futures_util::future::{join_all, maybe_done};
use lapin::message::BasicReturnMessage;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::Confirmation;
use lapin::{BasicProperties, Channel};

use super::Connection;

use crate::messages::REASON_HEADER;

/// One message to publish.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    pub exchange: &'a str,
    pub routing_key: &'a str,
    pub body: &'a [u8],
    /// Unroutable is a failure when set (the broker returns the message).
    pub mandatory: bool,
    pub headers: Option<FieldTable>,
}

/// Why one message was not safely handed to the broker.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("unroutable: {exchange}/{routing_key}: {reply}")]
    Returned {
        exchange: String,
        routing_key: String,
        reply: String,
    },
    #[error("broker refused (nack)")]
    Nacked,
    #[error("no confirm within {0:?} (the broker or the channel is wedged)")]
    ConfirmTimeout(std::time::Duration),
    #[error("amqp: {0}")]
    Amqp(lapin::Error),
}

impl PublishError {
    /// Whether publishing the same message again, on the same channel, can succeed
    /// without anyone changing anything: the queue refused it for now (a nack: a
    /// queue at its length limit) or did not confirm it in time (a quorum queue
    /// without a leader holds confirms until it has one again). A returned message
    /// has no queue to go to until someone binds one, and an AMQP error means the
    /// channel is gone.
    pub fn is_transient(&self) -> bool {
        matches!(self, PublishError::Nacked | PublishError::ConfirmTimeout(_))
    }
}

impl From<lapin::Error> for PublishError {
    fn from(e: lapin::Error) -> Self {
        PublishError::Amqp(e)
    }
}

/// How long a batch may wait for its confirms. A broker restarting from a crash can
/// accept publishes and never confirm them on the old channel; without a bound the
/// outbox relay would wait for ever while the process looked healthy.
pub const CONFIRM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Header carrying a mandatory message's position in its batch, so a message the
/// broker returns is matched to the message that was sent, not guessed.
pub const BATCH_SEQ_HEADER: &str = "x-sagaflow-batch-seq";

/// A channel in confirm mode.
#[derive(Clone)]
pub struct Publisher {
    channel: Channel,
    /// One batch at a time per channel: a returned message is reported with the next
    /// confirm lapin completes, so two batches in flight on one channel could take
    /// each other's returns.
    one_batch: Arc<tokio::sync::Mutex<()>>,
}

impl Publisher {
    /// Opens a channel of its own on `conn` in confirm mode.
    pub async fn open(conn: &Connection) -> super::Result<Publisher> {
        let channel = conn.channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Publisher {
            channel,
            one_batch: Arc::default(),
        })
    }

    /// Closes the channel (a publisher opened for one operator action).
    pub async fn close(&self) {
        let _ = self.channel.close(200, "done".into()).await;
    }

    /// Whether the channel is still open: the broker closes it after refusing a
    /// publish (a missing exchange, or no `write` permission on it), and a closed
    /// channel publishes nothing more.
    pub fn is_open(&self) -> bool {
        self.channel.status().connected()
    }

    /// The underlying channel (for declarations that must precede a publish).
    pub(crate) fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Publishes `batch` and waits for every confirm; one result per message, in order.
    ///
    /// Every publish is started before any is awaited: lapin queues a message's frames
    /// on the first poll and resolves the future once its I/O thread wrote them, so
    /// awaiting one publish at a time costs a thread hand-over and a socket write per
    /// message, while polling them together lets it write many frames per syscall.
    /// Each publish is polled once, in order, before they are awaited together, so the
    /// frames are queued, and reach the broker, in the batch's order.
    ///
    /// The broker then acknowledges several messages at once, and lapin hands a
    /// returned (unroutable) message to whichever of them it completes first; the
    /// batch position in [`BATCH_SEQ_HEADER`] tells which message really came back.
    pub async fn publish_all(&self, batch: &[Outgoing<'_>]) -> Vec<Result<(), PublishError>> {
        match tokio::time::timeout(CONFIRM_TIMEOUT, self.publish_confirmed(batch)).await {
            Ok(results) => results,
            Err(_) => batch
                .iter()
                .map(|_| Err(PublishError::ConfirmTimeout(CONFIRM_TIMEOUT)))
                .collect(),
        }
    }

    async fn publish_confirmed(&self, batch: &[Outgoing<'_>]) -> Vec<Result<(), PublishError>> {
        let _one_batch = self.one_batch.lock().await;
        let mut sends: Vec<_> = batch
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let opts = BasicPublishOptions {
                    mandatory: m.mandatory,
                    ..Default::default()
                };
                Box::pin(maybe_done(self.channel.basic_publish(
                    m.exchange.into(),
                    m.routing_key.into(),
                    opts,
                    m.body,
                    properties(m, i),
                )))
            })
            .collect();
        for send in sends.iter_mut() {
            // The first poll queues the frames (`MaybeDone` keeps a result that is
            // ready at once, so the second poll below cannot resume a finished future).
            let _ = futures_util::poll!(send.as_mut());
        }
        join_all(sends.iter_mut().map(|s| s.as_mut())).await;
        let mut results = Vec::with_capacity(batch.len());
        let mut returned = Vec::new();
        for send in sends.iter_mut() {
            let sent = send
                .as_mut()
                .take_output()
                .expect("every publish finished: join_all returned");
            results.push(match sent {
                Ok(confirm) => confirmed(confirm.await, &mut returned),
                Err(e) => Err(PublishError::Amqp(e)),
            });
        }
        for r in returned {
            match batch_seq(&r).filter(|i| *i < batch.len()) {
                Some(i) => {
                    results[i] = Err(PublishError::Returned {
                        exchange: batch[i].exchange.to_string(),
                        routing_key: batch[i].routing_key.to_string(),
                        reply: r.reply_text.to_string(),
                    })
                }
                None => tracing::warn!(
                    exchange = %r.delivery.exchange,
                    routing_key = %r.delivery.routing_key,
                    "the broker returned a message this batch cannot place"
                ),
            }
        }
        results
    }

    /// Publishes `batch`, failing on the first message that was not confirmed.
    pub async fn publish_all_or_fail(&self, batch: &[Outgoing<'_>]) -> super::Result<()> {
        let all: Result<(), PublishError> = self.publish_all(batch).await.into_iter().collect();
        Ok(all?)
    }
}

/// Persistent JSON, with the caller's headers and, on a mandatory message, its
/// position in the batch.
fn properties(m: &Outgoing<'_>, position: usize) -> BasicProperties {
    let props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into());
    let mut headers = m.headers.clone();
    if m.mandatory {
        headers.get_or_insert_with(FieldTable::default).insert(
            BATCH_SEQ_HEADER.into(),
            AMQPValue::LongLongInt(position as i64),
        );
    }
    match headers {
        Some(h) => props.with_headers(h),
        None => props,
    }
}

/// The outcome of one confirm; a returned message it carries goes to `returned`
/// (it may belong to another message of the batch).
fn confirmed(
    confirmation: lapin::Result<Confirmation>,
    returned: &mut Vec<BasicReturnMessage>,
) -> Result<(), PublishError> {
    match confirmation? {
        Confirmation::Ack(r) => {
            returned.extend(r);
            Ok(())
        }
        Confirmation::NotRequested => Ok(()),
        Confirmation::Nack(r) => {
            returned.extend(r);
            Err(PublishError::Nacked)
        }
    }
}

fn batch_seq(r: &BasicReturnMessage) -> Option<usize> {
    let headers = r.delivery.properties.headers().as_ref()?;
    match headers.inner().get(BATCH_SEQ_HEADER)? {
        AMQPValue::LongLongInt(i) => usize::try_from(*i).ok(),
        _ => None,
    }
}

/// The headers of a message that carries a trace context: `traceparent` (W3C trace
/// context, `crate::traceparent`), as a long string.
pub fn trace_headers(traceparent: Option<&str>) -> Option<FieldTable> {
    let tp = traceparent?;
    let mut t = FieldTable::default();
    t.insert(
        ShortString::from(crate::traceparent::HEADER),
        AMQPValue::LongString(LongString::from(tp.to_string())),
    );
    Some(t)
}

/// The `traceparent` header of a delivery, as sent (validated where it is used).
pub(crate) fn traceparent_header(headers: Option<&FieldTable>) -> Option<String> {
    match headers?.inner().get(crate::traceparent::HEADER)? {
        AMQPValue::LongString(s) => Some(s.to_string()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

/// Headers for a message sagaflow dead-letters itself: why, and where it came from.
pub fn dead_letter_headers(
    reason: &str,
    exchange: &str,
    routing_key: &str,
    queue: &str,
) -> FieldTable {
    let mut t = FieldTable::default();
    let mut put = |k: &str, v: &str| {
        t.insert(
            ShortString::from(k.to_string()),
            AMQPValue::LongString(LongString::from(v.to_string())),
        );
    };
    put(REASON_HEADER, reason);
    put("x-sagaflow-original-exchange", exchange);
    put("x-sagaflow-original-routing-key", routing_key);
    put("x-sagaflow-original-queue", queue);
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_refusals_and_missing_confirms_are_worth_publishing_again() {
        assert!(PublishError::Nacked.is_transient());
        assert!(PublishError::ConfirmTimeout(CONFIRM_TIMEOUT).is_transient());
        let returned = PublishError::Returned {
            exchange: "ns.results".into(),
            routing_key: "coordinator".into(),
            reply: "NO_ROUTE".into(),
        };
        assert!(!returned.is_transient(), "no queue until someone binds one");
        let closed = PublishError::Amqp(lapin::Error::from(lapin::ErrorKind::InvalidChannelState(
            lapin::ChannelState::Closed,
            "basic.publish",
        )));
        assert!(!closed.is_transient(), "the channel is gone");
    }
}
