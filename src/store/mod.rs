//! All SQL lives here: sagas and their history, the outbox, the idempotency ledger,
//! cron schedules.
//!
//! Writes are set-based (`UNNEST` of arrays) so one transaction carries a whole batch
//! of saga transitions; updates are fenced by `row_version`.

pub mod counters;
pub mod ledger;
pub mod outbox;
pub mod sagas;
pub mod schedules;
pub mod stats;

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};

/// A Postgres failure, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {context}: {source}")]
    Sql {
        context: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("saga {0} changed under us (row_version fence)")]
    Conflict(String),
    #[error("stored state of saga {id} is unreadable: {reason}")]
    Corrupt { id: String, reason: String },
}

impl StoreError {
    /// Deadlocks and serialisation failures: the transaction can simply be run again.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Conflict(_) => true,
            StoreError::Sql { source, .. } => match source {
                sqlx::Error::Database(e) => matches!(e.code().as_deref(), Some("40P01" | "40001")),
                sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
                _ => false,
            },
            _ => false,
        }
    }
}

/// Attaches what was being done to a sqlx error.
pub(crate) fn ctx(context: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Sql { context, source }
}

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Connects to `url`, creating the database first when it does not exist, and
/// applies the migrations (every process does this at start; it is idempotent).
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, StoreError> {
    let options = PgConnectOptions::from_str(url).map_err(ctx("url"))?;
    create_database_if_missing(&options).await?;
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options.log_statements(tracing::log::LevelFilter::Trace))
        .await
        .map_err(ctx("connect"))?;
    MIGRATOR.run(&pool).await?;
    Ok(pool)
}

async fn create_database_if_missing(options: &PgConnectOptions) -> Result<(), StoreError> {
    let Some(name) = options.get_database().map(str::to_string) else {
        return Ok(());
    };
    if options.clone().connect().await.is_ok() {
        return Ok(());
    }
    let mut admin = options
        .clone()
        .database("postgres")
        .connect()
        .await
        .map_err(ctx("connect to create the database"))?;
    let sql = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
    match sqlx::query(&sql).execute(&mut admin).await {
        Ok(_) => {}
        // Another process created it first.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
        Err(e) => return Err(ctx("create database")(e)),
    }
    admin.close().await.map_err(ctx("close"))?;
    Ok(())
}

/// Drops a database (tests use one database each).
pub async fn drop_database(url: &str) -> Result<(), StoreError> {
    let options = PgConnectOptions::from_str(url).map_err(ctx("url"))?;
    let Some(name) = options.get_database().map(str::to_string) else {
        return Ok(());
    };
    let mut admin = options
        .database("postgres")
        .connect()
        .await
        .map_err(ctx("connect"))?;
    let sql = format!(
        "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
        name.replace('"', "\"\"")
    );
    sqlx::query(&sql)
        .execute(&mut admin)
        .await
        .map_err(ctx("drop database"))?;
    Ok(())
}
