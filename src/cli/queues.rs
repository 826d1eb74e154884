//! `sagaflow queues`: ready messages and consumers of every task queue, the CLI mirror
//! of `GET /api/queues`.

use super::definitions::load_catalog;
use crate::config::Settings;

/// Prints the task queues of the loaded definitions and the coordinator's queue.
pub async fn show(settings: &Settings, json: bool) -> anyhow::Result<()> {
    let catalog = load_catalog(settings)?;
    let activities: Vec<String> = catalog.activities().into_iter().collect();
    let names = crate::broker::Names::new(&settings.namespace);
    let conn = crate::broker::connect(&settings.amqp.url, "sagaflow-cli").await?;
    let queues = crate::broker::inspect::task_queues(&conn, &names, &activities).await?;
    conn.close("bye").await;
    if json {
        println!("{}", serde_json::to_string_pretty(&queues)?);
        return Ok(());
    }
    println!(
        "{:<32} {:>8} {:>9}  queue",
        "activity", "ready", "consumers"
    );
    for q in queues {
        println!(
            "{:<32} {:>8} {:>9}  {}",
            q.activity, q.ready, q.consumers, q.queue
        );
    }
    Ok(())
}
