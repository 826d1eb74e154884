//! Batched consumption: wait for one delivery, then take what else arrives within a
//! short linger, so one Postgres transaction and one ack cover many messages.

use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Consumer};

/// Opens a channel with `prefetch` and starts consuming `queue` with manual acks.
pub async fn consume(
    conn: &lapin::Connection,
    queue: &str,
    tag: &str,
    prefetch: u16,
) -> lapin::Result<(Channel, Consumer)> {
    let ch = conn.create_channel().await?;
    ch.basic_qos(prefetch, BasicQosOptions::default()).await?;
    let consumer = ch
        .basic_consume(
            queue.into(),
            tag.into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok((ch, consumer))
}

/// The next batch: at least one delivery, at most `max`. `Ok(None)` when the consumer
/// ended (cancelled or connection closed).
pub async fn next_batch(
    consumer: &mut Consumer,
    max: usize,
    linger: Duration,
) -> lapin::Result<Option<Vec<Delivery>>> {
    let first = match consumer.next().await {
        None => return Ok(None),
        Some(d) => d?,
    };
    let mut batch = vec![first];
    let deadline = tokio::time::Instant::now() + linger;
    while batch.len() < max {
        match tokio::time::timeout_at(deadline, consumer.next()).await {
            Err(_) => break,
            Ok(None) => break,
            Ok(Some(d)) => batch.push(d?),
        }
    }
    Ok(Some(batch))
}

/// Acks every delivery up to and including `tag` on `ch` in one frame.
pub async fn ack_through(ch: &Channel, tag: u64) -> lapin::Result<()> {
    ch.basic_ack(tag, BasicAckOptions { multiple: true }).await
}

/// Returns every unacked delivery up to and including `tag` on `ch` to its queue,
/// in order, in one frame.
pub async fn requeue_through(ch: &Channel, tag: u64) -> lapin::Result<()> {
    ch.basic_nack(
        tag,
        lapin::options::BasicNackOptions {
            multiple: true,
            requeue: true,
        },
    )
    .await
}

/// Returns one delivery to its queue (for another consumer).
pub async fn requeue(ch: &Channel, tag: u64) -> lapin::Result<()> {
    ch.basic_nack(
        tag,
        lapin::options::BasicNackOptions {
            multiple: false,
            requeue: true,
        },
    )
    .await
}

/// How often the message was delivered before (quorum queues count in `x-delivery-count`).
pub fn delivery_count(d: &Delivery) -> u32 {
    use lapin::types::AMQPValue;
    let Some(headers) = d.properties.headers().as_ref() else {
        return 0;
    };
    match headers.inner().get("x-delivery-count") {
        Some(AMQPValue::LongLongInt(n)) => *n as u32,
        Some(AMQPValue::LongInt(n)) => *n as u32,
        Some(AMQPValue::LongUInt(n)) => *n,
        Some(AMQPValue::ShortInt(n)) => *n as u32,
        Some(AMQPValue::ShortUInt(n)) => u32::from(*n),
        Some(AMQPValue::ShortShortInt(n)) => *n as u32,
        Some(AMQPValue::ShortShortUInt(n)) => u32::from(*n),
        _ => 0,
    }
}

/// Acks one delivery.
pub async fn ack_one(ch: &Channel, tag: u64) -> lapin::Result<()> {
    ch.basic_ack(tag, BasicAckOptions { multiple: false }).await
}
