//! Where settings come from and in which order: the built-in defaults (`DEFAULTS`,
//! which name every key), then a TOML file, then `SAGAFLOW__*` variables. Loading
//! ends with validation, so a `Settings` value that exists is a valid one.
//!
//! The tests here keep the three lists of keys in step: `DEFAULTS`,
//! `config/default.toml` and the key table of docs/configuration.md.

use std::path::Path;

use super::{ConfigError, Settings};

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
    ("coordinator.state_cache_sagas", "10000"),
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
    ("retention.max_per_second", "1000"),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ApiRole, DatabaseSettings, Limits};
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
        let file: toml::Value = include_str!("../../config/default.toml").parse().unwrap();
        let mut in_file = BTreeSet::new();
        toml_keys(&file, "", &mut in_file);
        assert_eq!(
            in_file, code,
            "config/default.toml vs the keys in src/config/load.rs"
        );
        let documented = documented_keys(include_str!("../../docs/configuration.md"));
        assert_eq!(
            documented, code,
            "docs/configuration.md vs the keys in src/config/load.rs"
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
}
