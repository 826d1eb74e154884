//! Removing a namespace from the broker: what benchmarks and tests do to leave
//! nothing behind. Apart from `topology` because no service ever deletes topology (a
//! coordinator only declares, idempotently), so the destructive path is easy to find
//! and to keep out of production code.

use super::topology::DELAY_LEVELS_MS;
use super::{Connection, Names, Result};

/// Deletes a namespace's queues and exchanges (benchmarks and tests clean up with it).
pub async fn delete_namespace(conn: &Connection, n: &Names, activities: &[String]) -> Result<()> {
    let ch = conn.channel().await?;
    let mut queues = vec![n.coordinator_queue(), n.dlq_coordinator()];
    queues.extend(DELAY_LEVELS_MS.iter().map(|ms| n.delay(*ms)));
    for a in activities {
        queues.push(n.task_queue(a));
        queues.push(n.dlq(a));
    }
    for q in queues {
        ch.queue_delete(q.as_str().into(), Default::default())
            .await?;
    }
    let mut exchanges = vec![
        n.start(),
        n.start_unrouted(),
        n.tasks(),
        n.results(),
        n.signals(),
        n.operator(),
        n.events(),
        n.dlx(),
    ];
    exchanges.extend(DELAY_LEVELS_MS.iter().map(|ms| n.delay(*ms)));
    for e in exchanges {
        ch.exchange_delete(e.as_str().into(), Default::default())
            .await?;
    }
    let _ = ch.close(200, "deleted".into()).await;
    Ok(())
}
