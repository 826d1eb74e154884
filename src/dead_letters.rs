//! Dead-letter queues as an operator sees them: what is there, why, which saga it
//! belongs to, and replaying or purging a selection of it.

use serde::Serialize;

use crate::broker::browse::{Browsed, Browser};
use crate::broker::{Connection, Names, Outgoing, Publisher};

/// One dead letter, as an operator reads it.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub queue: String,
    pub reason: String,
    /// The saga, step and attempt it belongs to.
    pub about: About,
    /// Every AMQP header, rendered as text (`x-death` included).
    pub headers: std::collections::BTreeMap<String, String>,
    pub routing_key: String,
    pub body: String,
}

/// A dead-letter queue and how many messages it holds.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetterQueue {
    pub queue: String,
    pub messages: u32,
}

/// Depths of the coordinator's dead-letter queue and of each activity's (queues that
/// do not exist are skipped).
pub async fn summaries(
    conn: &Connection,
    names: &Names,
    activities: &[String],
) -> crate::broker::Result<Vec<DeadLetterQueue>> {
    let mut queues = vec![names.dlq_coordinator()];
    queues.extend(activities.iter().map(|a| names.dlq(a)));
    let infos = crate::broker::inspect::queue_infos(conn, &queues).await?;
    Ok(infos
        .into_iter()
        .map(|i| DeadLetterQueue {
            queue: i.queue,
            messages: i.ready,
        })
        .collect())
}

/// Up to `limit` messages of `queue`, left in place (fetched, then requeued).
pub async fn peek(
    conn: &Connection,
    queue: &str,
    limit: usize,
) -> crate::broker::Result<Vec<DeadLetter>> {
    let mut browser = Browser::open(conn, queue).await?;
    let mut out = Vec::new();
    while out.len() < limit {
        let Some(m) = browser.next().await? else {
            break;
        };
        browser.keep(m.tag);
        out.push(DeadLetter {
            queue: queue.to_string(),
            reason: reason(&m),
            about: about(&m.body),
            routing_key: m.routing_key,
            body: String::from_utf8_lossy(&m.body).chars().take(500).collect(),
            headers: m.headers,
        });
    }
    browser.finish().await?;
    Ok(out)
}

/// Why the message was dead-lettered (see [`crate::broker::consumer::dead_letter_reason`]).
fn reason(m: &Browsed) -> String {
    m.reason.clone().unwrap_or_else(|| "unknown".into())
}

/// What a dead letter is about, read from its body (tasks, results, starts, signals
/// all name the saga).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct About {
    pub saga_id: Option<String>,
    pub step: Option<String>,
    pub activity: Option<String>,
    pub attempt: Option<u64>,
}

/// Reads the saga, step and attempt a dead letter belongs to, when its body says.
pub fn about(body: &[u8]) -> About {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return About::default();
    };
    let text = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    About {
        saga_id: text("saga_id").or_else(|| text("id")),
        step: text("step"),
        activity: text("activity"),
        attempt: v.get("attempt").and_then(|x| x.as_u64()),
    }
}

/// What to do with the selected dead letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterAction {
    /// Publish again where it was going (without the dead-letter headers), then remove.
    Replay,
    /// Remove.
    Purge,
}

/// Which dead letters of a queue an action touches.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only those of this saga.
    pub saga_id: Option<String>,
    /// At most this many.
    pub limit: usize,
    /// List what would be touched, touch nothing.
    pub dry_run: bool,
}

/// A dead letter an action touched (or would touch, in a dry run).
#[derive(Debug, Clone, Serialize)]
pub struct Touched {
    pub about: About,
    pub reason: String,
    pub route: Option<(String, String)>,
    /// False in a dry run, and for a replay that could not be done (left in place).
    pub applied: bool,
}

/// Replays or purges the dead letters of `queue` that `sel` selects. Each replay is
/// confirmed by the broker before its dead letter is removed, so a crash in between
/// replays it twice at worst — which the worker ledger and the saga machine absorb.
/// Dead letters not selected stay, in order.
pub async fn act(
    conn: &Connection,
    publisher: &Publisher,
    queue: &str,
    sel: &Selection,
    action: DeadLetterAction,
) -> crate::broker::Result<Vec<Touched>> {
    let mut browser = Browser::open(conn, queue).await?;
    let depth = browser.ready().await?;
    let mut touched = Vec::new();
    for _ in 0..depth {
        if touched.len() >= sel.limit {
            break;
        }
        let Some(m) = browser.next().await? else {
            break;
        };
        let about = about(&m.body);
        let selected = sel
            .saga_id
            .as_ref()
            .is_none_or(|s| about.saga_id.as_ref() == Some(s));
        let mut item = Touched {
            about,
            reason: reason(&m),
            route: m.route.clone(),
            applied: false,
        };
        if selected && !sel.dry_run && apply(publisher, &item, &m.body, action).await {
            browser.remove(m.tag).await?;
            item.applied = true;
        } else {
            browser.keep(m.tag);
        }
        if selected {
            touched.push(item);
        }
    }
    // Everything fetched and not removed goes back, in order, before this returns.
    browser.finish().await?;
    Ok(touched)
}

/// Replays (publishes, confirmed) or purges one dead letter; false when it must stay.
async fn apply(
    publisher: &Publisher,
    item: &Touched,
    body: &[u8],
    action: DeadLetterAction,
) -> bool {
    if action == DeadLetterAction::Purge {
        return true;
    }
    let Some((exchange, key)) = &item.route else {
        return false; // no known destination: left in place
    };
    let out = Outgoing {
        exchange,
        routing_key: key,
        body,
        mandatory: true,
        headers: None,
    };
    match publisher.publish_all_or_fail(&[out]).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "replay not confirmed; the dead letter stays");
            false
        }
    }
}

/// `coordinator`, an activity name or a full queue name -> the dead-letter queue name.
pub fn queue_name(names: &Names, which: &str) -> String {
    if which.starts_with(&format!("{}.dlq.", names.namespace())) {
        which.to_string()
    } else if which == "coordinator" {
        names.dlq_coordinator()
    } else {
        names.dlq(which)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn about_reads_tasks_and_starts() {
        let task = br#"{"saga_id":"o-1","step":"charge","activity":"pay","attempt":3}"#;
        assert_eq!(
            about(task),
            About {
                saga_id: Some("o-1".into()),
                step: Some("charge".into()),
                activity: Some("pay".into()),
                attempt: Some(3)
            }
        );
        assert_eq!(about(br#"{"id":"o-2"}"#).saga_id.as_deref(), Some("o-2"));
        assert_eq!(about(b"garbage"), About::default());
    }

    #[test]
    fn queue_names_resolve() {
        let n = Names::new("ns");
        assert_eq!(queue_name(&n, "coordinator"), "ns.dlq.coordinator");
        assert_eq!(queue_name(&n, "pay.charge"), "ns.dlq.pay.charge");
        assert_eq!(queue_name(&n, "ns.dlq.x"), "ns.dlq.x");
    }
}
