//! Declaring exchanges and queues (the names themselves are in `names`, deleting a
//! namespace in `teardown`; both are re-exported here under their old paths).
//!
//! Every name starts with the namespace. Consuming queues are quorum queues with a
//! delivery limit and at-least-once dead-lettering into `<ns>.dlx`. Retry waits ride
//! per-level delay queues: a fanout exchange `<ns>.delay.<ms>` feeds a queue of the
//! same name whose queue-level TTL dead-letters the message back to `<ns>.tasks`
//! under its original routing key (the activity). One TTL per queue, because expiry
//! only happens at the head of a queue.
//!
//! The coordinator declares the whole topology and must be allowed to. Every other
//! process declares what it uses only if its RabbitMQ user may (`configure`), and
//! otherwise checks that it exists: a least-privilege worker, service or operator
//! user declares nothing (see `docs/security.md`, "Broker permissions per role").

use std::collections::BTreeSet;
use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};

use super::{Connection, Publisher, Result};
use crate::messages::COORDINATOR_REPLY_TO;

pub use super::names::Names;
pub use super::teardown::delete_namespace;

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

/// The delay levels `waits` go through: retry waits the broker holds (up to
/// `saga::machine::BROKER_DELAY_MAX`; longer ones are parked in Postgres).
pub fn delay_levels_for(waits: impl IntoIterator<Item = Duration>) -> BTreeSet<u64> {
    waits
        .into_iter()
        .filter(|w| *w <= crate::saga::machine::BROKER_DELAY_MAX)
        .filter_map(delay_level)
        .collect()
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
/// A client whose user may not declare them (no `configure` permission: a service or
/// operator user) checks instead that they exist; see [`Declarer`].
pub async fn declare_exchanges(conn: &Connection, n: &Names) -> Result<()> {
    let mut d = Declarer::open(conn, Mode::IfPermitted).await?;
    d.exchanges(n, ALL_EXCHANGES).await?;
    d.finish().await;
    Ok(())
}

/// Declares what a worker consuming `activities` needs (idempotent): the exchanges it
/// binds to or publishes to (`<ns>.tasks`, `<ns>.results`, `<ns>.dlx`), and each
/// activity's task queue and dead-letter queue with their bindings. What its user may
/// not declare (a least-privilege worker has no `configure` permission at all) must
/// exist already, declared by a coordinator: it is checked, and its bindings are left
/// as the coordinator made them.
pub async fn declare_worker(
    conn: &Connection,
    n: &Names,
    activities: &[String],
    limits: QueueLimits,
) -> Result<()> {
    let mut d = Declarer::open(conn, Mode::IfPermitted).await?;
    d.exchanges(n, WORKER_EXCHANGES).await?;
    for a in activities {
        d.activity(n, a, limits).await?;
    }
    d.finish().await;
    Ok(())
}

/// Declares what a coordinator of `sagas` needs (idempotent): every exchange, the task
/// and dead-letter queues of `activities`, the `delay_levels` its retry policies use,
/// the coordinator's input queue and its dead-letter queue, and their bindings. The
/// coordinator owns the topology: a declaration its user may not make is an error
/// here, never skipped.
///
/// Declaring the delay levels here rather than on first use keeps queue creation out
/// of the load: RabbitMQ 3.10 (ra 2.2) can bring a quorum queue created moments
/// before the node is SIGKILLed back as a follower that never elects itself, and
/// every publish to it then waits for ever (docs/faults.md).
pub async fn declare_coordinator(
    conn: &Connection,
    n: &Names,
    sagas: Vec<String>,
    activities: Vec<String>,
    delay_levels: &BTreeSet<u64>,
    limits: QueueLimits,
) -> Result<()> {
    let mut d = Declarer::open(conn, Mode::Strict).await?;
    d.exchanges(n, ALL_EXCHANGES).await?;
    for a in &activities {
        d.activity(n, a, limits).await?;
    }
    for ms in delay_levels {
        delay_level_on(&d.ch, n, *ms).await?;
    }
    coordinator(&d.ch, n, sagas, activities, limits).await?;
    d.finish().await;
    Ok(())
}

/// Declares one delay level on the publisher's channel, before a message is sent
/// through it. Levels are declared on first use (see
/// `coordinator::relay::DelayLevels`): a deployment uses a few of them, and every
/// level is a quorum queue, which costs the broker file handles.
pub async fn declare_delay_level(publisher: &Publisher, n: &Names, ms: u64) -> Result<()> {
    delay_level_on(publisher.channel(), n, ms).await
}

/// Whether a declaration the broker refuses to this user is an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The coordinator: it owns the topology, so a refusal is an error.
    Strict,
    /// Every other process: a refused declaration (403 `ACCESS_REFUSED`: the user has
    /// no `configure` permission on the name) is replaced by a passive declare, which
    /// needs no permission and fails only when the object does not exist.
    IfPermitted,
}

/// The exchanges, in declaration order (an alternate exchange before the exchange
/// naming it).
#[derive(Debug, Clone, Copy)]
enum Exchange {
    StartUnrouted,
    Start,
    Tasks,
    Results,
    Signals,
    Operator,
    Events,
    Dlx,
}

const ALL_EXCHANGES: &[Exchange] = &[
    Exchange::StartUnrouted,
    Exchange::Start,
    Exchange::Tasks,
    Exchange::Results,
    Exchange::Signals,
    Exchange::Operator,
    Exchange::Events,
    Exchange::Dlx,
];

/// What a worker binds its queues to (`tasks`, `dlx`) and publishes to (`results`,
/// and `dlx` for the tasks it dead-letters).
const WORKER_EXCHANGES: &[Exchange] = &[Exchange::Tasks, Exchange::Results, Exchange::Dlx];

impl Exchange {
    fn spec(self, n: &Names) -> (String, ExchangeKind, FieldTable) {
        let none = FieldTable::default;
        match self {
            Exchange::StartUnrouted => (n.start_unrouted(), ExchangeKind::Fanout, none()),
            Exchange::Start => (
                n.start(),
                ExchangeKind::Direct,
                args(&[("alternate-exchange", text(&n.start_unrouted()))]),
            ),
            Exchange::Tasks => (n.tasks(), ExchangeKind::Direct, none()),
            Exchange::Results => (n.results(), ExchangeKind::Direct, none()),
            Exchange::Signals => (n.signals(), ExchangeKind::Fanout, none()),
            Exchange::Operator => (n.operator(), ExchangeKind::Fanout, none()),
            Exchange::Events => (n.events(), ExchangeKind::Topic, none()),
            Exchange::Dlx => (n.dlx(), ExchangeKind::Direct, none()),
        }
    }
}

/// Declarations on a channel of its own, closed at the end: a failed declaration
/// closes its channel, and must not take another user's with it. In
/// [`Mode::IfPermitted`] a refused declaration reopens the channel and checks the
/// object passively instead.
struct Declarer<'a> {
    conn: &'a Connection,
    ch: Channel,
    mode: Mode,
}

impl<'a> Declarer<'a> {
    async fn open(conn: &'a Connection, mode: Mode) -> Result<Declarer<'a>> {
        Ok(Declarer {
            conn,
            ch: conn.channel().await?,
            mode,
        })
    }

    async fn finish(self) {
        let _ = self.ch.close(200, "declared".into()).await;
    }

    async fn exchanges(&mut self, n: &Names, which: &[Exchange]) -> Result<()> {
        for e in which {
            let (name, kind, arguments) = e.spec(n);
            self.exchange(&name, kind, arguments).await?;
        }
        Ok(())
    }

    /// Declares (or, when refused, checks) an exchange.
    async fn exchange(
        &mut self,
        name: &str,
        kind: ExchangeKind,
        arguments: FieldTable,
    ) -> Result<()> {
        match exchange(&self.ch, name, kind.clone(), arguments).await {
            Err(e) if self.tolerates(&e) => {
                self.ch = self.conn.channel().await?;
                let passive = ExchangeDeclareOptions {
                    passive: true,
                    ..Default::default()
                };
                let checked = self
                    .ch
                    .exchange_declare(name.into(), kind, passive, FieldTable::default())
                    .await;
                checked_exists("exchange", name, checked)
            }
            other => other,
        }
    }

    /// Declares (or, when refused, checks) a queue; true when this user declared it.
    async fn queue(&mut self, name: &str, arguments: FieldTable) -> Result<bool> {
        match queue(&self.ch, name, arguments).await {
            Ok(()) => Ok(true),
            Err(e) if self.tolerates(&e) => {
                self.ch = self.conn.channel().await?;
                let passive = QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                };
                let checked = self
                    .ch
                    .queue_declare(name.into(), passive, FieldTable::default())
                    .await
                    .map(|_| ());
                checked_exists("queue", name, checked).map(|()| false)
            }
            Err(e) => Err(e),
        }
    }

    fn tolerates(&self, e: &super::Error) -> bool {
        self.mode == Mode::IfPermitted && e.is_access_refused()
    }

    /// An activity's dead-letter queue and task queue, each bound when this user
    /// declared it (a queue it could only check was bound by whoever declared it).
    async fn activity(&mut self, n: &Names, activity: &str, limits: QueueLimits) -> Result<()> {
        let dlq = n.dlq(activity);
        if self.queue(&dlq, dlq_args(limits)).await? {
            bind(&self.ch, &dlq, &n.dlx(), &Names::dlx_key_task(activity)).await?;
        }
        let q = n.task_queue(activity);
        let arguments = consuming_queue_args(limits, &n.dlx(), &Names::dlx_key_task(activity));
        if self.queue(&q, arguments).await? {
            bind(&self.ch, &q, &n.tasks(), activity).await?;
        }
        Ok(())
    }
}

/// The outcome of the passive check that replaces a refused declaration.
fn checked_exists(what: &str, name: &str, outcome: lapin::Result<()>) -> Result<()> {
    match outcome {
        Ok(()) => {
            tracing::debug!("{what} {name} exists (this user may not declare it)");
            Ok(())
        }
        Err(e) => {
            tracing::warn!("{what} {name} does not exist and this user may not declare it (no configure permission): start a coordinator first, it declares the topology");
            Err(e.into())
        }
    }
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
    fn delay_levels_for_retry_waits_skip_short_and_parked_ones() {
        let waits = [
            Duration::from_millis(10),
            Duration::from_millis(100),
            Duration::from_millis(210),
            Duration::from_millis(400),
            Duration::from_secs(7200),
        ];
        assert_eq!(
            delay_levels_for(waits).into_iter().collect::<Vec<_>>(),
            vec![100, 200, 450]
        );
    }

    #[test]
    fn levels_are_strictly_increasing() {
        assert!(DELAY_LEVELS_MS.windows(2).all(|w| w[0] < w[1]));
    }
}
