//! One struct per `[section]` of the settings (all but `[api]` and `[limits]`, which
//! have their own files). The doc comments are what each key means; the `Debug`
//! impls redact the passwords in URLs, because settings are logged at start.

use serde::Deserialize;

/// How long ended sagas are kept, and how fast coordinators delete expired ones.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    /// Kept this long after a saga ends unless its definition sets `retention`
    /// (a duration such as `30d`; `0` keeps sagas for ever).
    pub default: String,
    /// How often each coordinator looks for expired sagas.
    pub interval_ms: u64,
    /// Sagas deleted per transaction (with their history and ledger rows).
    pub batch_size: u32,
    /// At most this many sagas deleted per second by one coordinator, so a backlog
    /// of expired sagas does not compete with live traffic for the database.
    pub max_per_second: u32,
}

impl RetentionSettings {
    /// The default retention; `None` keeps for ever. Checked when settings load.
    pub fn default_retention(&self) -> Option<std::time::Duration> {
        crate::saga::definition::parse_duration(&self.default)
            .ok()
            .filter(|d| !d.is_zero())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The broker. `Debug` shows the URL without its password.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpSettings {
    /// `amqp://` or `amqps://` (TLS; `cacertfile`, `certfile`, `keyfile` in the query:
    /// docs/security.md).
    pub url: String,
}

impl std::fmt::Debug for AmqpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpSettings")
            .field("url", &crate::redact::url(&self.url))
            .finish()
    }
}

/// The database. `Debug` shows the URL without its password.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// The database is created when it does not exist. TLS by `sslmode=require`,
    /// `verify-ca` or `verify-full`, the CA by `sslrootcert=` (docs/security.md).
    pub url: String,
    pub max_connections: u32,
    /// How long one connection attempt may take (TCP, TLS, authentication), and how
    /// long a caller waits for a pooled connection (at least 100).
    pub connect_timeout_ms: u64,
    /// Postgres `lock_timeout` of every pooled session: a statement waiting longer
    /// than this for a row or table lock fails (55P03, transient) instead of queueing
    /// behind a stuck session. 0 disables it.
    pub lock_timeout_ms: u64,
    /// Postgres `statement_timeout` of every pooled session (57014, transient).
    /// 0 disables it.
    pub statement_timeout_ms: u64,
    /// Postgres `idle_in_transaction_session_timeout` of every pooled session: the
    /// server ends a session that sits in an open transaction this long (a stalled
    /// process holding saga row locks). 0 disables it.
    pub idle_in_transaction_session_timeout_ms: u64,
}

impl std::fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let DatabaseSettings {
            url,
            max_connections,
            connect_timeout_ms,
            lock_timeout_ms,
            statement_timeout_ms,
            idle_in_transaction_session_timeout_ms,
        } = self;
        f.debug_struct("DatabaseSettings")
            .field("url", &crate::redact::url(url))
            .field("max_connections", max_connections)
            .field("connect_timeout_ms", connect_timeout_ms)
            .field("lock_timeout_ms", lock_timeout_ms)
            .field("statement_timeout_ms", statement_timeout_ms)
            .field(
                "idle_in_transaction_session_timeout_ms",
                idle_in_transaction_session_timeout_ms,
            )
            .finish()
    }
}

impl DatabaseSettings {
    /// The built-in defaults for `url` (what `store::connect` uses).
    pub fn new(url: &str, max_connections: u32) -> Self {
        DatabaseSettings {
            url: url.to_string(),
            max_connections,
            connect_timeout_ms: 10_000,
            lock_timeout_ms: 5_000,
            statement_timeout_ms: 30_000,
            idle_in_transaction_session_timeout_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorSettings {
    /// Input messages handled per Postgres transaction.
    pub batch_size: usize,
    /// How long to wait for more messages before running a partial batch.
    pub batch_linger_ms: u64,
    pub prefetch: u16,
    /// An outbox row whose publisher vanished is republished after this lease.
    pub outbox_lease_ms: u64,
    pub sweep_interval_ms: u64,
    /// How often due wake-ups (sleeps, delayed starts, wait timeouts) and cron schedules
    /// are looked for.
    pub timer_poll_ms: u64,
    /// Wake-up scanners running side by side (they split due sagas with SKIP LOCKED).
    pub wake_concurrency: usize,
    /// Where the process serves its own `/livez`, `/readyz` and `/metrics`; empty: off.
    pub health_listen: String,
    /// How often the stuck-saga reconciler looks.
    pub reconcile_interval_ms: u64,
    /// How long a saga with nothing to move it may sit before it is flagged stuck.
    pub stuck_after_ms: u64,
    /// Sagas whose last committed state the coordinator keeps, so the next result
    /// for one is applied without a lock (fenced by its row version); 0: always lock.
    pub state_cache_sagas: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    /// Tasks in flight per activity queue.
    pub prefetch: u16,
    /// Activities to consume; empty means every registered handler.
    pub activities: Vec<String>,
    /// After SIGTERM, how long in-flight handlers may run to completion (their results
    /// are then published and acked) before they are abandoned and redelivered.
    pub drain_grace_ms: u64,
    /// Where the process serves its own `/livez`, `/readyz` and `/metrics`; empty: off.
    pub health_listen: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSettings {
    /// `x-delivery-limit` of quorum task queues: deliveries before dead-lettering.
    pub delivery_limit: u32,
    /// `x-max-length` of dead-letter queues.
    pub dlq_max_length: u64,
    /// The broker's `consumer_timeout` (RabbitMQ's default: 30 minutes); definitions
    /// whose attempts may run longer are refused at load.
    pub consumer_timeout_ms: u64,
}

#[cfg(test)]
mod tests {
    use crate::config::Settings;

    #[test]
    fn url_passwords_never_show_in_debug_output() {
        let mut s = Settings::load(None).unwrap();
        s.amqp.url = "amqps://app:amqpS3cret@mq:5671/%2f".into();
        s.database.url =
            "postgres://app:pgS3cret@db/x?sslmode=verify-full&password=pgS3cret".into();
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("amqpS3cret") && !shown.contains("pgS3cret"),
            "{shown}"
        );
        assert!(shown.contains("amqps://app:***@mq:5671/%2f"), "{shown}");
        assert!(shown.contains("lock_timeout_ms"), "{shown}");
    }
}
