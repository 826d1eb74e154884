//! Typed settings: built-in defaults, then `config/default.toml` (or the file named by
//! `--config`), then `SAGAFLOW__SECTION__KEY` environment variables. Validated once.
//!
//! Split by what each part owns, so a new key touches the files that name it and
//! nothing else:
//! - this file: [`Settings`] (the whole document) and [`ConfigError`];
//! - `sections`: one struct per `[section]` with its doc comments (the reference for
//!   what each key means) and its redacting `Debug`;
//! - `api`: `[api]`, whose tokens are secrets with roles and three accepted forms;
//! - `load`: the built-in defaults, the file and the environment, merged;
//! - `validate`: the checks serde cannot express (ranges, addresses, names);
//! - `limits`: `[limits]`, also used on its own by the parsers it bounds.
//!
//! Callers use the re-exports below (`crate::config::Settings`, ...), never the
//! submodules.

use std::path::PathBuf;

use serde::Deserialize;

mod api;
pub mod limits;
mod load;
mod sections;
mod validate;

pub use api::{ApiRole, ApiSettings, ApiToken};
pub use limits::{LimitError, Limits};
pub use sections::{
    AmqpSettings, CoordinatorSettings, DatabaseSettings, LogFormat, QueueSettings,
    RetentionSettings, WorkerSettings,
};
pub use validate::valid_name;

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

/// A setting that is missing, mistyped or out of range.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration: {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
}
