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
    conn: &super::Connection,
    queues: &[String],
) -> super::Result<Vec<QueueInfo>> {
    let mut out = Vec::new();
    for q in queues {
        // A passive declare on a missing queue closes the channel: a fresh one each time.
        let ch = conn.channel().await?;
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

/// A task queue (or the coordinator's input queue) with its counts.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct TaskQueue {
    /// The activity, or `coordinator` for the coordinator's input queue.
    pub activity: String,
    pub queue: String,
    pub ready: u32,
    pub consumers: u32,
}

/// Counts of the task queues of `activities` plus the coordinator's queue; queues
/// not declared yet are left out.
pub async fn task_queues(
    conn: &super::Connection,
    names: &crate::broker::Names,
    activities: &[String],
) -> super::Result<Vec<TaskQueue>> {
    let mut pairs: Vec<(String, String)> = activities
        .iter()
        .map(|a| (names.task_queue(a), a.clone()))
        .collect();
    pairs.push((names.coordinator_queue(), "coordinator".into()));
    let queues: Vec<String> = pairs.iter().map(|(q, _)| q.clone()).collect();
    let infos = queue_infos(conn, &queues).await?;
    Ok(pairs
        .into_iter()
        .filter_map(|(queue, activity)| {
            let i = infos.iter().find(|i| i.queue == queue)?;
            Some(TaskQueue {
                activity,
                queue,
                ready: i.ready,
                consumers: i.consumers,
            })
        })
        .collect())
}
