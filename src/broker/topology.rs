//! Exchange and queue names, and declaring them.
//!
//! Every name starts with the namespace. Consuming queues are quorum queues with a
//! delivery limit and at-least-once dead-lettering into `<ns>.dlx`. Retry waits ride
//! per-level delay queues: a fanout exchange `<ns>.delay.<ms>` feeds a queue of the
//! same name whose queue-level TTL dead-letters the message back to `<ns>.tasks`
//! under its original routing key (the activity). One TTL per queue, because expiry
//! only happens at the head of a queue.

use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};

use super::{Connection, Publisher, Result};
use crate::messages::COORDINATOR_REPLY_TO;

/// Delay levels in milliseconds. A retry wait is rounded to the nearest level
/// (geometric distance), so a wait from 100 ms up is off by at most ~25% (waits of
/// 50-100 ms take the 100 ms level; shorter ones go out at once); waits above the
/// last level are parked in Postgres instead (see `saga::machine::BROKER_DELAY_MAX`).
pub const DELAY_LEVELS_MS: &[u64] = &[
    100, 150, 200, 300, 450, 700, 1_000, 1_500, 2_000, 3_000, 4_500, 7_000, 10_000, 15_000, 20_000,
    30_000, 45_000, 60_000, 90_000, 120_000, 180_000, 270_000, 400_000, 600_000, 900_000,
    1_200_000, 1_800_000, 2_700_000, 3_600_000,
];

/// The delay level that best represents `delay` (zero for no wait).
pub fn delay_level(delay: Duration) -> Option<u64> {
    let ms = delay.as_millis() as f64;
    if ms < 50.0 {
        return None;
    }
    DELAY_LEVELS_MS.iter().copied().min_by(|a, b| {
        let da = (ms / *a as f64).ln().abs();
        let db = (ms / *b as f64).ln().abs();
        da.total_cmp(&db)
    })
}

/// The names of one deployment's exchanges and queues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    ns: String,
}

impl Names {
    pub fn new(namespace: &str) -> Self {
        Names {
            ns: namespace.to_string(),
        }
    }
    pub fn namespace(&self) -> &str {
        &self.ns
    }
    pub fn start(&self) -> String {
        format!("{}.start", self.ns)
    }
    /// Alternate exchange of `start`: catches unknown saga names so the coordinator
    /// can dead-letter them with a reason.
    pub fn start_unrouted(&self) -> String {
        format!("{}.start.unrouted", self.ns)
    }
    pub fn tasks(&self) -> String {
        format!("{}.tasks", self.ns)
    }
    pub fn results(&self) -> String {
        format!("{}.results", self.ns)
    }
    pub fn signals(&self) -> String {
        format!("{}.signals", self.ns)
    }
    /// Operator actions (retry, skip, compensate, resume-at): an exchange of their
    /// own, so the credentials that may send signals cannot send them.
    pub fn operator(&self) -> String {
        format!("{}.operator", self.ns)
    }
    pub fn events(&self) -> String {
        format!("{}.events", self.ns)
    }
    pub fn dlx(&self) -> String {
        format!("{}.dlx", self.ns)
    }
    pub fn coordinator_queue(&self) -> String {
        format!("{}.coordinator", self.ns)
    }
    pub fn task_queue(&self, activity: &str) -> String {
        format!("{}.task.{activity}", self.ns)
    }
    pub fn dlq(&self, activity: &str) -> String {
        format!("{}.dlq.{activity}", self.ns)
    }
    pub fn dlq_coordinator(&self) -> String {
        format!("{}.dlq.coordinator", self.ns)
    }
    pub fn delay(&self, level_ms: u64) -> String {
        format!("{}.delay.{level_ms}", self.ns)
    }
    /// The delay level an exchange name stands for, if it is one of ours.
    pub fn delay_level_of(&self, exchange: &str) -> Option<u64> {
        let ms: u64 = exchange
            .strip_prefix(&format!("{}.delay.", self.ns))?
            .parse()
            .ok()?;
        DELAY_LEVELS_MS.contains(&ms).then_some(ms)
    }
    /// Routing key on the DLX for an activity's dead letters.
    pub fn dlx_key_task(activity: &str) -> String {
        format!("task.{activity}")
    }
    pub const DLX_KEY_COORDINATOR: &'static str = "coordinator";
}

/// Queue arguments and limits from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    pub delivery_limit: u32,
    pub dlq_max_length: u64,
}

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.to_string()))
}

fn args(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert(ShortString::from(k.to_string()), v.clone());
    }
    t
}

/// Arguments of a consuming quorum queue that dead-letters to the DLX under `dlx_key`.
fn consuming_queue_args(limits: QueueLimits, dlx: &str, dlx_key: &str) -> FieldTable {
    args(&[
        ("x-queue-type", text("quorum")),
        (
            "x-delivery-limit",
            AMQPValue::LongLongInt(limits.delivery_limit as i64),
        ),
        ("x-dead-letter-exchange", text(dlx)),
        ("x-dead-letter-routing-key", text(dlx_key)),
        ("x-dead-letter-strategy", text("at-least-once")),
        ("x-overflow", text("reject-publish")),
    ])
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

async fn exchange(
    ch: &Channel,
    name: &str,
    kind: ExchangeKind,
    arguments: FieldTable,
) -> Result<()> {
    let opts = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    Ok(ch
        .exchange_declare(name.into(), kind, opts, arguments)
        .await?)
}

async fn queue(ch: &Channel, name: &str, arguments: FieldTable) -> Result<()> {
    ch.queue_declare(name.into(), durable(), arguments).await?;
    Ok(())
}

async fn bind(ch: &Channel, queue: &str, exchange: &str, key: &str) -> Result<()> {
    Ok(ch
        .queue_bind(
            queue.into(),
            exchange.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?)
}

/// Declares what a client needs (idempotent): the exchanges every process relies on.
pub async fn declare_exchanges(conn: &Connection, n: &Names) -> Result<()> {
    on_own_channel(conn, |ch| async move { exchanges(&ch, n).await }).await
}

/// Declares what a worker consuming `activities` needs (idempotent): the exchanges,
/// and each activity's task queue and dead-letter queue.
pub async fn declare_worker(
    conn: &Connection,
    n: &Names,
    activities: &[String],
    limits: QueueLimits,
) -> Result<()> {
    on_own_channel(conn, |ch| async move {
        exchanges(&ch, n).await?;
        for a in activities {
            activity(&ch, n, a, limits).await?;
        }
        Ok(())
    })
    .await
}

/// Declares what a coordinator of `sagas` needs (idempotent): everything a worker of
/// `activities` needs, plus the coordinator's input queue and its dead-letter queue.
pub async fn declare_coordinator(
    conn: &Connection,
    n: &Names,
    sagas: Vec<String>,
    activities: Vec<String>,
    limits: QueueLimits,
) -> Result<()> {
    declare_worker(conn, n, &activities, limits).await?;
    on_own_channel(conn, |ch| async move {
        coordinator(&ch, n, sagas, activities, limits).await
    })
    .await
}

/// Declares one delay level on the publisher's channel, before a message is sent
/// through it. Levels are declared on first use (see
/// `coordinator::relay::DelayLevels`): a deployment uses a few of them, and every
/// level is a quorum queue, which costs the broker file handles.
pub async fn declare_delay_level(publisher: &Publisher, n: &Names, ms: u64) -> Result<()> {
    delay_level_on(publisher.channel(), n, ms).await
}

/// Runs `work` on a channel of its own, closed afterwards: a failed declaration
/// closes its channel, and must not take another user's with it.
async fn on_own_channel<F, Fut>(conn: &Connection, work: F) -> Result<()>
where
    F: FnOnce(Channel) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let ch = conn.channel().await?;
    work(ch.clone()).await?;
    let _ = ch.close(200, "declared".into()).await;
    Ok(())
}

async fn exchanges(ch: &Channel, n: &Names) -> Result<()> {
    exchange(
        ch,
        &n.start_unrouted(),
        ExchangeKind::Fanout,
        FieldTable::default(),
    )
    .await?;
    let ae = args(&[("alternate-exchange", text(&n.start_unrouted()))]);
    exchange(ch, &n.start(), ExchangeKind::Direct, ae).await?;
    exchange(ch, &n.tasks(), ExchangeKind::Direct, FieldTable::default()).await?;
    exchange(
        ch,
        &n.results(),
        ExchangeKind::Direct,
        FieldTable::default(),
    )
    .await?;
    exchange(
        ch,
        &n.signals(),
        ExchangeKind::Fanout,
        FieldTable::default(),
    )
    .await?;
    exchange(
        ch,
        &n.operator(),
        ExchangeKind::Fanout,
        FieldTable::default(),
    )
    .await?;
    exchange(ch, &n.events(), ExchangeKind::Topic, FieldTable::default()).await?;
    exchange(ch, &n.dlx(), ExchangeKind::Direct, FieldTable::default()).await
}

fn dlq_args(limits: QueueLimits) -> FieldTable {
    args(&[
        ("x-queue-type", text("quorum")),
        (
            "x-max-length",
            AMQPValue::LongLongInt(limits.dlq_max_length as i64),
        ),
        ("x-overflow", text("reject-publish")),
    ])
}

/// Declares an activity's task queue and its dead-letter queue.
async fn activity(ch: &Channel, n: &Names, activity: &str, limits: QueueLimits) -> Result<()> {
    let dlq = n.dlq(activity);
    queue(ch, &dlq, dlq_args(limits)).await?;
    bind(ch, &dlq, &n.dlx(), &Names::dlx_key_task(activity)).await?;
    let q = n.task_queue(activity);
    queue(
        ch,
        &q,
        consuming_queue_args(limits, &n.dlx(), &Names::dlx_key_task(activity)),
    )
    .await?;
    bind(ch, &q, &n.tasks(), activity).await
}

/// Declares one delay level: its fanout exchange and its TTL queue.
async fn delay_level_on(ch: &Channel, n: &Names, ms: u64) -> Result<()> {
    let name = n.delay(ms);
    exchange(ch, &name, ExchangeKind::Fanout, FieldTable::default()).await?;
    let a = args(&[
        ("x-queue-type", text("quorum")),
        ("x-message-ttl", AMQPValue::LongLongInt(ms as i64)),
        ("x-dead-letter-exchange", text(&n.tasks())),
        ("x-dead-letter-strategy", text("at-least-once")),
        ("x-overflow", text("reject-publish")),
    ]);
    queue(ch, &name, a).await?;
    bind(ch, &name, &name, "").await
}

/// Declares the coordinator's input queue and binds it to starts of `sagas`, results,
/// signals and the dead letters of `activities` (a dead task is a failed attempt);
/// plus the coordinator dead-letter queue.
async fn coordinator(
    ch: &Channel,
    n: &Names,
    sagas: Vec<String>,
    activities: Vec<String>,
    limits: QueueLimits,
) -> Result<()> {
    let dlq = n.dlq_coordinator();
    queue(ch, &dlq, dlq_args(limits)).await?;
    bind(ch, &dlq, &n.dlx(), Names::DLX_KEY_COORDINATOR).await?;
    let q = n.coordinator_queue();
    queue(
        ch,
        &q,
        consuming_queue_args(limits, &n.dlx(), Names::DLX_KEY_COORDINATOR),
    )
    .await?;
    for saga in sagas {
        bind(ch, &q, &n.start(), &saga).await?;
    }
    bind(ch, &q, &n.start_unrouted(), "").await?;
    bind(ch, &q, &n.results(), COORDINATOR_REPLY_TO).await?;
    for activity in activities {
        bind(ch, &q, &n.dlx(), &Names::dlx_key_task(&activity)).await?;
    }
    bind(ch, &q, &n.operator(), "").await?;
    bind(ch, &q, &n.signals(), "").await
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_delays_need_no_delay_queue() {
        assert_eq!(delay_level(Duration::ZERO), None);
        assert_eq!(delay_level(Duration::from_millis(10)), None);
    }

    #[test]
    fn delays_round_to_the_nearest_level() {
        let cases = [
            (1_000, 1_000),
            (1_200, 1_000),
            (1_300, 1_500),
            (4_000, 4_500),
            (100_000, 90_000),
            (7_200_000, 3_600_000),
        ];
        for (ms, level) in cases {
            assert_eq!(
                delay_level(Duration::from_millis(ms)),
                Some(level),
                "{ms}ms"
            );
        }
    }

    #[test]
    fn rounding_error_stays_within_a_quarter_up_to_the_last_level() {
        for ms in (100..=3_600_000u64).step_by(997) {
            let level = delay_level(Duration::from_millis(ms)).unwrap() as f64;
            let err = (level - ms as f64).abs() / ms as f64;
            assert!(err <= 0.26, "{ms}ms -> {level}ms ({err:.2})");
        }
    }

    #[test]
    fn levels_are_strictly_increasing() {
        assert!(DELAY_LEVELS_MS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn names_carry_the_namespace() {
        let n = Names::new("ns1");
        assert_eq!(n.task_queue("payments.charge"), "ns1.task.payments.charge");
        assert_eq!(n.dlq("payments.charge"), "ns1.dlq.payments.charge");
        assert_eq!(n.dlq_coordinator(), "ns1.dlq.coordinator");
        assert_eq!(n.delay(1000), "ns1.delay.1000");
        assert_eq!(n.delay_level_of("ns1.delay.1000"), Some(1000));
        assert_eq!(n.delay_level_of("ns1.delay.1234"), None);
        assert_eq!(n.delay_level_of("ns2.delay.1000"), None);
        assert_eq!(n.delay_level_of("ns1.tasks"), None);
    }
}
