//! Read-only queue inspection without the management plugin: a passive declare
//! answers with the ready-message and consumer counts.

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use serde::Serialize;

/// A queue's counts as the broker reports them to a passive declare.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct QueueInfo {
    pub queue: String,
    /// Messages ready for delivery (not counting unacked ones).
    pub ready: u32,
    pub consumers: u32,
}

/// Counts of `queues`; a queue that does not exist is left out.
pub async fn queue_infos(
    conn: &lapin::Connection,
    queues: &[String],
) -> lapin::Result<Vec<QueueInfo>> {
    let mut out = Vec::new();
    for q in queues {
        // A passive declare on a missing queue closes the channel: a fresh one each time.
        let ch = conn.create_channel().await?;
        let opts = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        if let Ok(info) = ch
            .queue_declare(q.as_str().into(), opts, FieldTable::default())
            .await
        {
            out.push(QueueInfo {
                queue: q.clone(),
                ready: info.message_count(),
                consumers: info.consumer_count(),
            });
            let _ = ch.close(200, "ok".into()).await;
        }
    }
    Ok(out)
}
