//! Watching saga events (`<ns>.events`) from an exclusive, auto-deleted queue: the
//! benchmarks and the demo wait for outcomes this way, as a service would.

use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;

use super::{topology, Connection, Names, Result};

/// A consumer of the events whose routing key matches a pattern.
pub struct Subscription {
    consumer: lapin::Consumer,
}

impl Subscription {
    /// Subscribes to `saga.<saga>.*` events of `names`' namespace. The queue is
    /// declared (and bound) before this returns, so no event published afterwards is
    /// missed; it goes away with the connection.
    pub async fn saga_events(conn: &Connection, names: &Names, saga: &str) -> Result<Self> {
        topology::declare_exchanges(conn, names).await?;
        let ch = conn.channel().await?;
        let q = format!(
            "{}.subscription.{}",
            names.namespace(),
            uuid::Uuid::now_v7()
        );
        let opts = QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..Default::default()
        };
        ch.queue_declare(q.as_str().into(), opts, FieldTable::default())
            .await?;
        let key = format!("saga.{saga}.*");
        ch.queue_bind(
            q.as_str().into(),
            names.events().as_str().into(),
            key.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        let consumer = ch
            .basic_consume(
                q.as_str().into(),
                "subscription".into(),
                // Auto-ack: a watcher must not load the broker with one ack per event.
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        Ok(Subscription { consumer })
    }

    /// The next event's body, or `None` when `deadline` passed or the consumer ended.
    pub async fn next_before(&mut self, deadline: tokio::time::Instant) -> Option<Vec<u8>> {
        match tokio::time::timeout_at(deadline, self.consumer.next()).await {
            Ok(Some(Ok(d))) => Some(d.data),
            _ => None,
        }
    }
}
