//! Typed settings: built-in defaults, then `config/default.toml` (or the file named by
//! `--config`), then `SAGAFLOW__SECTION__KEY` environment variables. Validated once.

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub mod limits;

pub use limits::{LimitError, Limits};

/// Everything a sagaflow process needs to know.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Prefix of every exchange and queue name.
    pub namespace: String,
    /// Where `*.toml` saga definitions are loaded from.
    pub sagas_dir: PathBuf,
    /// `text` or `json` log lines.
    pub log_format: LogFormat,
    pub amqp: AmqpSettings,
    pub database: DatabaseSettings,
    pub coordinator: CoordinatorSettings,
    pub worker: WorkerSettings,
    pub queues: QueueSettings,
    pub api: ApiSettings,
    /// Sizes and depths of received documents (`[limits]`).
    pub limits: Limits,
    pub retention: RetentionSettings,
}

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

/// The operator HTTP API (`sagaflow serve`).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSettings {
    /// Address the server binds; without tokens it must be a loopback address.
    pub listen: String,
    /// Bearer tokens accepted on `/api/*`, each with a name and a role; empty means
    /// unauthenticated, localhost only. See [`ApiToken`] for the accepted forms.
    #[serde(deserialize_with = "api_tokens::deserialize")]
    pub tokens: Vec<ApiToken>,
}

/// Tokens are secrets: `Debug` (and so any log of the settings) shows their names and
/// roles, never their secrets.
impl std::fmt::Debug for ApiSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiSettings")
            .field("listen", &self.listen)
            .field("tokens", &self.tokens)
            .finish()
    }
}

/// What an API token may do. Every route names the role it needs (the table in
/// `api::routes`); a role grants its own routes and those of the roles below it:
/// `operate` > `read` > `scaling`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiRole {
    /// `GET /api/scaling` only: what an autoscaler (KEDA) needs.
    Scaling,
    /// Every `GET` under `/api`: sagas, history, queues, dead letters, schedules, the
    /// scaling signal, the OpenAPI document; the dashboard's views.
    Read,
    /// Everything: starts, signals, cancels, operator actions, dead-letter replays and
    /// purges, schedule pause/resume/trigger, and all that `read` may.
    Operate,
}

impl ApiRole {
    pub const ALL: [ApiRole; 3] = [ApiRole::Scaling, ApiRole::Read, ApiRole::Operate];

    pub fn as_str(self) -> &'static str {
        match self {
            ApiRole::Scaling => "scaling",
            ApiRole::Read => "read",
            ApiRole::Operate => "operate",
        }
    }

    /// Whether a token of this role may call a route that needs `needed`.
    pub fn grants(self, needed: ApiRole) -> bool {
        match self {
            ApiRole::Operate => true,
            ApiRole::Read => needed != ApiRole::Operate,
            ApiRole::Scaling => needed == ApiRole::Scaling,
        }
    }
}

impl std::fmt::Display for ApiRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ApiRole {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ApiRole::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role `{s}`: expected read, operate or scaling"))
    }
}

/// One bearer token of the API. Its `name` is what the API records as the actor of
/// the operator actions sent with it (never the secret).
///
/// Accepted forms of each `api.tokens` entry:
/// - a table `{ name = "ops-ann", role = "operate", secret = "…" }` (TOML
///   `[[api.tokens]]`);
/// - a string `name:role:secret` (the environment form,
///   `SAGAFLOW__API__TOKENS=ops-ann:operate:s3cr3t,keda:scaling:…`; the secret may
///   contain `:`);
/// - deprecated: a plain secret without `:`, the old form: an `operate` token named
///   `token-<n>` (its position in the list, from 1).
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken {
    pub name: String,
    pub role: ApiRole,
    pub secret: String,
    /// Given as a plain secret (deprecated): `serve` warns about it.
    pub legacy: bool,
}

impl ApiToken {
    pub fn new(name: &str, role: ApiRole, secret: &str) -> Self {
        ApiToken {
            name: name.into(),
            role,
            secret: secret.into(),
            legacy: false,
        }
    }
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiToken")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("secret", &format_args!("<redacted>"))
            .finish()
    }
}

/// Reading `api.tokens` in each of its forms (see [`ApiToken`]).
mod api_tokens {
    use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
    use serde::Deserialize;

    use super::{ApiRole, ApiToken};

    /// A table entry.
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Table {
        name: String,
        role: ApiRole,
        secret: String,
    }

    enum Entry {
        Table(Table),
        Text(String),
    }

    impl<'de> Deserialize<'de> for Entry {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Entry;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a table {name, role, secret} or a string name:role:secret")
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<Entry, E> {
                    Ok(Entry::Text(v.to_string()))
                }
                // The environment source parses an all-digit secret as a number.
                fn visit_i64<E: de::Error>(self, v: i64) -> Result<Entry, E> {
                    Ok(Entry::Text(v.to_string()))
                }
                fn visit_u64<E: de::Error>(self, v: u64) -> Result<Entry, E> {
                    Ok(Entry::Text(v.to_string()))
                }
                fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<Entry, A::Error> {
                    Table::deserialize(de::value::MapAccessDeserializer::new(m)).map(Entry::Table)
                }
            }
            d.deserialize_any(V)
        }
    }

    /// Entry `n` (from 1) as a token.
    fn token(n: usize, e: Entry) -> Result<ApiToken, String> {
        let text = match e {
            Entry::Table(t) => return Ok(ApiToken::new(&t.name, t.role, &t.secret)),
            Entry::Text(text) => text,
        };
        if !text.contains(':') {
            return Ok(ApiToken {
                name: format!("token-{n}"),
                role: ApiRole::Operate,
                secret: text,
                legacy: true,
            });
        }
        let mut parts = text.splitn(3, ':');
        let (Some(name), Some(role), Some(secret)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!(
                "api.tokens entry {n}: expected `name:role:secret` (or a plain secret without `:`)"
            ));
        };
        let role = role
            .parse()
            .map_err(|e| format!("api.tokens entry {n} (`{name}`): {e}"))?;
        Ok(ApiToken::new(name, role, secret))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ApiToken>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Vec<ApiToken>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of tokens")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(e) = seq.next_element::<Entry>()? {
                    out.push(token(out.len() + 1, e).map_err(de::Error::custom)?);
                }
                Ok(out)
            }
        }
        d.deserialize_seq(V)
    }
}

/// A setting that is missing, mistyped or out of range.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration: {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
}

const DEFAULTS: &[(&str, &str)] = &[
    ("namespace", "sagaflow"),
    ("sagas_dir", "sagas"),
    ("log_format", "text"),
    ("amqp.url", "amqp://guest:guest@127.0.0.1:5672/%2f"),
    (
        "database.url",
        "postgres://postgres@127.0.0.1:5432/sagaflow",
    ),
    ("database.max_connections", "10"),
    ("database.connect_timeout_ms", "10000"),
    ("database.lock_timeout_ms", "5000"),
    ("database.statement_timeout_ms", "30000"),
    ("database.idle_in_transaction_session_timeout_ms", "10000"),
    ("coordinator.batch_size", "256"),
    ("coordinator.batch_linger_ms", "2"),
    ("coordinator.prefetch", "1024"),
    ("coordinator.outbox_lease_ms", "10000"),
    ("coordinator.sweep_interval_ms", "1000"),
    ("coordinator.timer_poll_ms", "200"),
    ("coordinator.wake_concurrency", "4"),
    ("coordinator.health_listen", ""),
    ("coordinator.reconcile_interval_ms", "60000"),
    ("coordinator.stuck_after_ms", "60000"),
    ("worker.health_listen", ""),
    ("worker.prefetch", "64"),
    ("worker.drain_grace_ms", "30000"),
    ("queues.delivery_limit", "5"),
    ("queues.dlq_max_length", "1000000"),
    ("queues.consumer_timeout_ms", "1800000"),
    ("api.listen", "127.0.0.1:8080"),
    ("limits.payload_bytes", "1048576"),
    ("limits.message_bytes", "2097152"),
    ("limits.json_depth", "32"),
    ("limits.id_bytes", "200"),
    ("retention.default", "30d"),
    ("retention.interval_ms", "10000"),
    ("retention.batch_size", "500"),
    ("retention.max_per_second", "2000"),
];

impl Settings {
    /// Loads settings; `file` defaults to `config/default.toml`, which may be absent.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        Settings::load_from(file, environment())
    }

    fn load_from(file: Option<&Path>, env: config::Environment) -> Result<Settings, ConfigError> {
        let mut builder = config::Config::builder();
        for (key, value) in DEFAULTS {
            builder = builder.set_default(*key, *value)?;
        }
        builder = builder.set_default("worker.activities", Vec::<String>::new())?;
        builder = builder.set_default("api.tokens", Vec::<String>::new())?;
        let path = file.unwrap_or(Path::new("config/default.toml"));
        builder = builder.add_source(config::File::from(path).required(file.is_some()));
        builder = builder.add_source(env);
        let settings: Settings = builder.build()?.try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| {
            Err(ConfigError::Invalid {
                key,
                reason: reason.to_string(),
            })
        };
        if !valid_name(&self.namespace) {
            return invalid(
                "namespace",
                "expected letters, digits, `_`, `-` or `.`, not empty",
            );
        }
        if self.coordinator.batch_size == 0 {
            return invalid("coordinator.batch_size", "expected at least 1");
        }
        if self.coordinator.prefetch == 0 || self.worker.prefetch == 0 {
            return invalid(
                "coordinator.prefetch / worker.prefetch",
                "expected at least 1",
            );
        }
        if self.queues.delivery_limit == 0 {
            return invalid("queues.delivery_limit", "expected at least 1");
        }
        if self.api.listen.parse::<std::net::SocketAddr>().is_err() {
            return invalid(
                "api.listen",
                "expected an IP address and port, e.g. 127.0.0.1:8080",
            );
        }
        if let Some(reason) = invalid_tokens(&self.api.tokens) {
            return invalid("api.tokens", &reason);
        }
        for (key, listen) in [
            ("coordinator.health_listen", &self.coordinator.health_listen),
            ("worker.health_listen", &self.worker.health_listen),
        ] {
            if !listen.is_empty() && listen.parse::<std::net::SocketAddr>().is_err() {
                return invalid(key, "expected empty (off) or an IP address and port");
            }
        }
        if crate::saga::definition::parse_duration(&self.retention.default).is_err() {
            return invalid(
                "retention.default",
                "expected a duration such as `30d` or `12h`, or `0` to keep sagas for ever",
            );
        }
        if self.retention.batch_size == 0 || self.retention.max_per_second == 0 {
            return invalid(
                "retention.batch_size / retention.max_per_second",
                "expected at least 1",
            );
        }
        if self.coordinator.outbox_lease_ms < 100 {
            return invalid("coordinator.outbox_lease_ms", "expected at least 100");
        }
        if self.database.connect_timeout_ms < 100 {
            return invalid("database.connect_timeout_ms", "expected at least 100");
        }
        if self.database.max_connections == 0 {
            return invalid("database.max_connections", "expected at least 1");
        }
        if let Some((key, reason)) = self.limits.invalid() {
            return invalid(key, &reason);
        }
        Ok(())
    }
}

/// The `SAGAFLOW__SECTION__KEY` variables; lists are comma-separated.
fn environment() -> config::Environment {
    config::Environment::with_prefix("SAGAFLOW")
        .prefix_separator("__")
        .separator("__")
        .list_separator(",")
        .with_list_parse_key("worker.activities")
        .with_list_parse_key("api.tokens")
        .try_parsing(true)
}

/// Why `tokens` cannot be used, if they cannot: a name that is not a plain word, an
/// empty secret, or two tokens sharing a name or a secret (a secret names one role).
fn invalid_tokens(tokens: &[ApiToken]) -> Option<String> {
    let mut names = std::collections::HashSet::new();
    for (i, t) in tokens.iter().enumerate() {
        if !valid_name(&t.name) || t.name.len() > 64 {
            return Some(format!(
                "token {}: name `{}`: expected 1 to 64 letters, digits, `_`, `-` or `.`",
                i + 1,
                t.name
            ));
        }
        if t.secret.trim().is_empty() {
            return Some(format!("token `{}`: the secret is empty", t.name));
        }
        if !names.insert(t.name.as_str()) {
            return Some(format!("two tokens are named `{}`", t.name));
        }
    }
    for (i, a) in tokens.iter().enumerate() {
        if let Some(b) = tokens[i + 1..].iter().find(|b| b.secret == a.secret) {
            return Some(format!(
                "tokens `{}` and `{}` have the same secret",
                a.name, b.name
            ));
        }
    }
    None
}

/// Names that end up inside AMQP exchange and queue names.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Every key the settings have: the built-in defaults name each one (loading from
    /// them alone succeeds, see below, and unknown keys are refused).
    fn code_keys() -> BTreeSet<String> {
        DEFAULTS
            .iter()
            .map(|(k, _)| k.to_string())
            .chain(["worker.activities".into(), "api.tokens".into()])
            .collect()
    }

    fn toml_keys(v: &toml::Value, prefix: &str, out: &mut BTreeSet<String>) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    toml_keys(v, &key, out);
                }
            }
            _ => {
                out.insert(prefix.to_string());
            }
        }
    }

    /// The first column of the key table of docs/configuration.md.
    fn documented_keys(md: &str) -> BTreeSet<String> {
        md.lines()
            .skip_while(|l| !l.starts_with("| key | env | default |"))
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .filter_map(|l| l.split('|').nth(1))
            .map(|cell| cell.trim().trim_matches('`').to_string())
            .collect()
    }

    #[test]
    fn every_key_is_in_default_toml_and_the_reference_and_nothing_else_is() {
        let code = code_keys();
        let file: toml::Value = include_str!("../config/default.toml").parse().unwrap();
        let mut in_file = BTreeSet::new();
        toml_keys(&file, "", &mut in_file);
        assert_eq!(
            in_file, code,
            "config/default.toml vs the keys in src/config.rs"
        );
        let documented = documented_keys(include_str!("../docs/configuration.md"));
        assert_eq!(
            documented, code,
            "docs/configuration.md vs the keys in src/config.rs"
        );
    }

    #[test]
    fn the_built_in_defaults_name_every_key() {
        let mut b = config::Config::builder();
        for (k, v) in DEFAULTS {
            b = b.set_default(*k, *v).unwrap();
        }
        b = b
            .set_default("worker.activities", Vec::<String>::new())
            .unwrap();
        b = b.set_default("api.tokens", Vec::<String>::new()).unwrap();
        let s: Result<Settings, _> = b.build().unwrap().try_deserialize();
        assert!(s.is_ok(), "{:?}", s.err());
    }

    #[test]
    fn an_unknown_key_in_a_file_is_refused_naming_it() {
        let dir = std::env::temp_dir().join(format!("sagaflow-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("typo.toml");
        std::fs::write(&file, "[coordinator]\nbatch_sise = 3\n").unwrap();
        let e = Settings::load(Some(&file)).unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(e.contains("batch_sise"), "{e}");
    }

    #[test]
    fn defaults_load_without_a_file() {
        let s = Settings::load(Some(Path::new("/nonexistent/none.toml")));
        assert!(s.is_err(), "an explicitly named file must exist");
        let s = Settings::load(None).unwrap();
        assert!(!s.namespace.is_empty());
        assert!(s.coordinator.batch_size >= 1);
        assert_eq!(s.worker.drain_grace_ms, 30_000);
        assert_eq!(s.limits, Limits::default());
        let db = DatabaseSettings::new(&s.database.url, s.database.max_connections);
        assert_eq!(
            (
                db.connect_timeout_ms,
                db.lock_timeout_ms,
                db.statement_timeout_ms,
                db.idle_in_transaction_session_timeout_ms
            ),
            (
                s.database.connect_timeout_ms,
                s.database.lock_timeout_ms,
                s.database.statement_timeout_ms,
                s.database.idle_in_transaction_session_timeout_ms
            ),
            "the built-in defaults and DatabaseSettings::new agree"
        );
    }

    #[test]
    fn limits_are_checked_at_load() {
        let mut s = Settings::load(None).unwrap();
        s.limits.json_depth = 500;
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("limits.json_depth"), "{err}");
        s.limits.json_depth = 32;
        s.limits.message_bytes = 10;
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("limits.message_bytes"), "{err}");
    }

    #[test]
    fn api_tokens_never_show_in_debug_output() {
        let api = ApiSettings {
            listen: "127.0.0.1:8080".into(),
            tokens: vec![ApiToken::new("ops-ann", ApiRole::Operate, "s3cret")],
        };
        let shown = format!("{api:?}");
        assert!(
            !shown.contains("s3cret") && shown.contains("ops-ann") && shown.contains("redacted"),
            "{shown}"
        );
    }

    fn tokens_from_toml(toml: &str) -> Result<Vec<ApiToken>, String> {
        #[derive(Deserialize)]
        struct Api {
            #[serde(deserialize_with = "api_tokens::deserialize")]
            tokens: Vec<ApiToken>,
        }
        #[derive(Deserialize)]
        struct Doc {
            api: Api,
        }
        let c = config::Config::builder()
            .add_source(config::File::from_str(toml, config::FileFormat::Toml))
            .build()
            .map_err(|e| e.to_string())?;
        c.try_deserialize::<Doc>()
            .map(|d| d.api.tokens)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn tokens_are_tables_name_role_secret_strings_or_plain_secrets() {
        let t = tokens_from_toml(
            r#"
            [[api.tokens]]
            name = "ops-ann"
            role = "operate"
            secret = "a"
            [[api.tokens]]
            name = "keda"
            role = "scaling"
            secret = "b"
            "#,
        )
        .unwrap();
        assert_eq!(
            t,
            vec![
                ApiToken::new("ops-ann", ApiRole::Operate, "a"),
                ApiToken::new("keda", ApiRole::Scaling, "b")
            ]
        );
        // The environment form and the deprecated plain form, mixed.
        let t = tokens_from_toml(r#"api = { tokens = ["dash:read:x:y", "0ld", "t3"] }"#).unwrap();
        assert_eq!(t[0], ApiToken::new("dash", ApiRole::Read, "x:y"));
        assert_eq!(
            (t[1].name.as_str(), t[1].role, t[1].legacy),
            ("token-2", ApiRole::Operate, true)
        );
        assert_eq!(
            (t[2].name.as_str(), t[2].secret.as_str()),
            ("token-3", "t3")
        );
        let e = tokens_from_toml(r#"api = { tokens = ["ann:admin:x"] }"#).unwrap_err();
        assert!(e.contains("unknown role `admin`"), "{e}");
        let e = tokens_from_toml(r#"api = { tokens = ["ann:read"] }"#).unwrap_err();
        assert!(e.contains("expected `name:role:secret`"), "{e}");
        let table = "[[api.tokens]]\nname = \"a\"\nrole = \"root\"\nsecret = \"x\"";
        let e = tokens_from_toml(table).unwrap_err();
        assert!(e.contains("root"), "{e}");
    }

    #[test]
    fn tokens_from_the_environment() {
        let vars = [(
            "SAGAFLOW__API__TOKENS".to_string(),
            "ops-ann:operate:s1,keda:scaling:s2,legacy".to_string(),
        )];
        let env = environment().source(Some(vars.into_iter().collect()));
        let s = Settings::load_from(None, env).unwrap();
        let t: Vec<(&str, ApiRole, bool)> = s
            .api
            .tokens
            .iter()
            .map(|t| (t.name.as_str(), t.role, t.legacy))
            .collect();
        assert_eq!(
            t,
            vec![
                ("ops-ann", ApiRole::Operate, false),
                ("keda", ApiRole::Scaling, false),
                ("token-3", ApiRole::Operate, true)
            ]
        );
        let vars = [(
            "SAGAFLOW__API__TOKENS".to_string(),
            "a:read:x,b:read:x".to_string(),
        )];
        let env = environment().source(Some(vars.into_iter().collect()));
        let e = Settings::load_from(None, env).unwrap_err().to_string();
        assert!(e.contains("api.tokens") && e.contains("same secret"), "{e}");
    }

    #[test]
    fn tokens_need_distinct_names_and_secrets() {
        let t = |n: &str, s: &str| ApiToken::new(n, ApiRole::Read, s);
        assert_eq!(invalid_tokens(&[t("a", "1"), t("b", "2")]), None);
        let e = invalid_tokens(&[t("a", "1"), t("a", "2")]).unwrap();
        assert!(e.contains("two tokens are named `a`"), "{e}");
        let e = invalid_tokens(&[t("a", "1"), t("b", "1")]).unwrap();
        assert!(e.contains("same secret"), "{e}");
        assert!(invalid_tokens(&[t("a b", "1")]).is_some());
        assert!(invalid_tokens(&[t("a", " ")]).is_some());
    }

    #[test]
    fn roles_grant_their_routes_and_those_below() {
        use ApiRole::*;
        assert!(Operate.grants(Operate) && Operate.grants(Read) && Operate.grants(Scaling));
        assert!(!Read.grants(Operate) && Read.grants(Read) && Read.grants(Scaling));
        assert!(!Scaling.grants(Operate) && !Scaling.grants(Read) && Scaling.grants(Scaling));
        for r in ApiRole::ALL {
            assert_eq!(r.as_str().parse::<ApiRole>(), Ok(r));
        }
    }

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

    #[test]
    fn names_allow_dots_but_not_spaces() {
        assert!(valid_name("sagaflow.test-1_a"));
        assert!(!valid_name(""));
        assert!(!valid_name("a b"));
        assert!(!valid_name("a/b"));
    }
}
