//! Reading a queue one message at a time without consuming it (`basic.get` with
//! manual acks): how the dead-letter tools look at, replay and purge dead letters.
//! What is fetched and not removed goes back to the queue, in order, when the
//! browse ends.

use std::collections::BTreeMap;
use std::time::Duration;

use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::Channel;

use super::{consumer, Connection, Result};

/// One fetched message, with what its headers say.
#[derive(Debug, Clone)]
pub struct Browsed {
    /// Pass it to [`Browser::remove`] or [`Browser::keep`].
    pub tag: u64,
    pub body: Vec<u8>,
    pub routing_key: String,
    /// Why it was dead-lettered: our header, else the broker's `x-death`.
    pub reason: Option<String>,
    /// Where it was going (exchange, routing key), when its headers say.
    pub route: Option<(String, String)>,
    /// Every header rendered as text (`x-death` included).
    pub headers: BTreeMap<String, String>,
}

/// A channel fetching messages from one queue.
pub struct Browser {
    ch: Channel,
    queue: String,
    /// The highest fetched delivery not removed, and how many are: returned at the end.
    last_kept: Option<u64>,
    kept: u32,
}

impl Browser {
    pub async fn open(conn: &Connection, queue: &str) -> Result<Browser> {
        Ok(Browser {
            ch: conn.channel().await?,
            queue: queue.to_string(),
            last_kept: None,
            kept: 0,
        })
    }

    /// Ready messages in the queue now.
    pub async fn ready(&self) -> Result<u32> {
        let opts = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        Ok(self
            .ch
            .queue_declare(self.queue.as_str().into(), opts, FieldTable::default())
            .await?
            .message_count())
    }

    /// The next message, or `None` when the queue has no more ready ones.
    pub async fn next(&mut self) -> Result<Option<Browsed>> {
        let got = self
            .ch
            .basic_get(
                self.queue.as_str().into(),
                BasicGetOptions { no_ack: false },
            )
            .await?;
        Ok(got.map(|m| {
            let d = m.delivery;
            let headers = d.properties.headers().as_ref();
            Browsed {
                tag: d.delivery_tag,
                reason: consumer::dead_letter_reason(headers),
                route: original_route(headers),
                headers: render_headers(headers),
                routing_key: d.routing_key.to_string(),
                body: d.data,
            }
        }))
    }

    /// Removes a fetched message from the queue for good.
    pub async fn remove(&mut self, tag: u64) -> Result<()> {
        Ok(self.ch.basic_ack(tag, Default::default()).await?)
    }

    /// Leaves a fetched message in the queue (it goes back at [`Browser::finish`]).
    pub fn keep(&mut self, tag: u64) {
        self.last_kept = Some(tag);
        self.kept += 1;
    }

    /// Returns every kept message to the queue in order, and returns once they are
    /// back (up to 5 s), so the next look at the queue sees them.
    pub async fn finish(self) -> Result<()> {
        if let Some(tag) = self.last_kept {
            consumer::requeue_through(&self.ch, tag).await?;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while self.ready().await? < self.kept && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let _ = self.ch.close(200, "ok".into()).await;
        Ok(())
    }
}

/// Headers as text, for operators reading a dead letter.
fn render_headers(headers: Option<&FieldTable>) -> BTreeMap<String, String> {
    headers
        .map(|h| {
            h.inner()
                .iter()
                .map(|(k, v)| (k.to_string(), render(v)))
                .collect()
        })
        .unwrap_or_default()
}

fn render(v: &AMQPValue) -> String {
    match v {
        AMQPValue::LongString(s) => s.to_string(),
        AMQPValue::ShortString(s) => s.to_string(),
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::LongLongInt(n) => n.to_string(),
        AMQPValue::LongInt(n) => n.to_string(),
        AMQPValue::LongUInt(n) => n.to_string(),
        AMQPValue::ShortInt(n) => n.to_string(),
        AMQPValue::Timestamp(t) => t.to_string(),
        AMQPValue::FieldArray(a) => format!(
            "[{}]",
            a.as_slice()
                .iter()
                .map(render)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        AMQPValue::FieldTable(t) => format!(
            "{{{}}}",
            t.inner()
                .iter()
                .map(|(k, v)| format!("{k}: {}", render(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => format!("{other:?}"),
    }
}

/// Where a dead letter was going: our own headers, else the broker's `x-death`.
fn original_route(headers: Option<&FieldTable>) -> Option<(String, String)> {
    let h = headers?.inner();
    let text = |k: &str| match h.get(k) {
        Some(AMQPValue::LongString(s)) => Some(s.to_string()),
        _ => None,
    };
    if let (Some(e), Some(k)) = (
        text("x-sagaflow-original-exchange"),
        text("x-sagaflow-original-routing-key"),
    ) {
        return Some((e, k));
    }
    let Some(AMQPValue::FieldArray(deaths)) = h.get("x-death") else {
        return None;
    };
    let AMQPValue::FieldTable(last) = deaths.as_slice().first()? else {
        return None;
    };
    let exchange = match last.inner().get("exchange") {
        Some(AMQPValue::LongString(s)) => s.to_string(),
        _ => return None,
    };
    let key = match last.inner().get("routing-keys") {
        Some(AMQPValue::FieldArray(keys)) => match keys.as_slice().first() {
            Some(AMQPValue::LongString(k)) => k.to_string(),
            _ => return None,
        },
        _ => return None,
    };
    Some((exchange, key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{FieldArray, LongString, ShortString};

    fn table(pairs: Vec<(&str, AMQPValue)>) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert(ShortString::from(k.to_string()), v);
        }
        t
    }

    fn s(v: &str) -> AMQPValue {
        AMQPValue::LongString(LongString::from(v.to_string()))
    }

    #[test]
    fn original_route_prefers_our_headers_then_x_death() {
        let ours = table(vec![
            ("x-sagaflow-original-exchange", s("ns.start")),
            ("x-sagaflow-original-routing-key", s("order")),
        ]);
        assert_eq!(
            original_route(Some(&ours)),
            Some(("ns.start".into(), "order".into()))
        );
        let death = table(vec![
            ("exchange", s("ns.tasks")),
            (
                "routing-keys",
                AMQPValue::FieldArray(FieldArray::from(vec![s("pay.charge")])),
            ),
        ]);
        let broker = table(vec![(
            "x-death",
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(death)])),
        )]);
        assert_eq!(
            original_route(Some(&broker)),
            Some(("ns.tasks".into(), "pay.charge".into()))
        );
        assert_eq!(original_route(None), None);
    }

    #[test]
    fn headers_render_as_text() {
        let death = table(vec![
            ("reason", s("delivery_limit")),
            ("count", AMQPValue::LongLongInt(1)),
        ]);
        let h = table(vec![
            (
                "x-death",
                AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(death)])),
            ),
            ("x-sagaflow-reason", s("bad")),
        ]);
        let r = render_headers(Some(&h));
        assert_eq!(r["x-sagaflow-reason"], "bad");
        assert_eq!(r["x-death"], "[{count: 1, reason: delivery_limit}]");
    }
}
