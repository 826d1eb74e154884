//! Publishing with publisher confirms and `mandatory`, pipelined: a batch is sent
//! in full, then its confirms are awaited, so a batch costs one round trip.

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::Confirmation;
use lapin::{BasicProperties, Channel, Connection};

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
    #[error("amqp: {0}")]
    Amqp(#[from] lapin::Error),
}

/// A channel in confirm mode.
#[derive(Clone)]
pub struct Publisher {
    channel: Channel,
}

impl Publisher {
    pub async fn open(conn: &Connection) -> lapin::Result<Publisher> {
        let channel = conn.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Publisher { channel })
    }

    /// The underlying channel (for declarations that must precede a publish).
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Publishes `batch` and waits for every confirm; one result per message, in order.
    pub async fn publish_all(&self, batch: &[Outgoing<'_>]) -> Vec<Result<(), PublishError>> {
        let mut pending = Vec::with_capacity(batch.len());
        for m in batch {
            let opts = BasicPublishOptions {
                mandatory: m.mandatory,
                ..Default::default()
            };
            let mut props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/json".into());
            if let Some(h) = &m.headers {
                props = props.with_headers(h.clone());
            }
            let sent = self
                .channel
                .basic_publish(m.exchange.into(), m.routing_key.into(), opts, m.body, props)
                .await;
            pending.push(sent);
        }
        let mut results = Vec::with_capacity(pending.len());
        for (sent, m) in pending.into_iter().zip(batch) {
            results.push(match sent {
                Ok(confirm) => check(confirm.await, m),
                Err(e) => Err(PublishError::Amqp(e)),
            });
        }
        results
    }

    /// Publishes `batch`, failing on the first message that was not confirmed.
    pub async fn publish_all_or_fail(&self, batch: &[Outgoing<'_>]) -> Result<(), PublishError> {
        self.publish_all(batch).await.into_iter().collect()
    }
}

fn check(confirmed: lapin::Result<Confirmation>, m: &Outgoing<'_>) -> Result<(), PublishError> {
    match confirmed? {
        Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
        Confirmation::Ack(Some(returned)) => Err(PublishError::Returned {
            exchange: m.exchange.to_string(),
            routing_key: m.routing_key.to_string(),
            reply: returned.reply_text.to_string(),
        }),
        Confirmation::Nack(_) => Err(PublishError::Nacked),
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
