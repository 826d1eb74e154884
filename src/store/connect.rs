//! Opening the pool: parsing `database.url` (TLS files checked first), creating the
//! database when it is missing, the per-session timeouts, then the migrations. Apart
//! from the queries because it is the only code that deals with connection options,
//! startup failures and their messages (which must name the server, never the
//! password); `drop_database` is here too, as the inverse tests use.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};

use super::schema::{SchemaLock, MIGRATOR};
use super::{ctx, StoreError};
use crate::config::DatabaseSettings;

/// Connects to `url` with the built-in `[database]` defaults (session timeouts
/// included); see [`connect_with`].
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, StoreError> {
    connect_with(&DatabaseSettings::new(url, max_connections)).await
}

/// Connects with `db`, creating the database first when it does not exist, and
/// applies the migrations (every process does this at start; it is idempotent, and
/// serialised across processes by [`SchemaLock`]).
///
/// Every pooled session gets `lock_timeout`, `statement_timeout` and
/// `idle_in_transaction_session_timeout` from `db`, so one stalled session (a process
/// frozen inside a transaction, a statement stuck behind a lock) cannot hold saga rows
/// and stall every coordinator behind it. Connecting is bounded by
/// `db.connect_timeout_ms`; errors name the server and database they were for.
///
/// TLS comes from the URL, as with libpq: `sslmode=require` (encrypted, the
/// certificate not checked), `verify-ca`, `verify-full` (checked against the CA in
/// `sslrootcert=<file>` plus the Mozilla roots of webpki-roots, and for
/// verify-full the host name), `sslcert=`/`sslkey=` for a client certificate
/// (docs/security.md).
///
/// A pooled connection is not pinged before each use (sqlx's `test_before_acquire`,
/// one extra round trip on every transaction of the hot path): a connection that
/// died meanwhile fails its first statement with a connection error, which every
/// caller already waits out and retries as an outage, and sqlx drops it.
pub async fn connect_with(db: &DatabaseSettings) -> Result<PgPool, StoreError> {
    let base = PgConnectOptions::from_str(&db.url).map_err(ctx("url"))?;
    check_tls_files(&db.url)?;
    let timeout = Duration::from_millis(db.connect_timeout_ms.max(1));
    create_database_if_missing(&base, timeout).await?;
    let pool = PgPoolOptions::new()
        .max_connections(db.max_connections)
        .acquire_timeout(timeout)
        .test_before_acquire(false)
        .connect_with(
            session_options(base.clone(), db).log_statements(tracing::log::LevelFilter::Trace),
        )
        .await
        .map_err(|source| StoreError::Connect {
            what: "connect",
            target: target(&base),
            source,
        })?;
    let mut lock = SchemaLock::acquire(&pool).await?;
    let migrated = MIGRATOR.run_direct(lock.conn()).await;
    lock.release().await?;
    migrated?;
    Ok(pool)
}

/// A second pool to where `pool` connects, with its session settings, whose
/// sessions plan each statement once (a generic plan) and only with index scans and
/// nested loops; it connects on first use (`pool` made the database and ran the
/// migrations).
///
/// Custom planning costs the server about 0.45 ms per coordinator batch statement,
/// a third of a small batch's commit, and a tenth of a millisecond per ledger
/// statement. A generic plan is unsafe in the main pool (see `session_options`:
/// chosen while a table is new, it is a sequential scan that stays cached as the
/// table grows); with sequential scans, hash and merge joins disabled it is an index
/// scan inside a nested loop whatever the statistics said, so it stays right as the
/// tables grow. It suits statements whose every plan is a lookup by key (the
/// worker's ledger) and the coordinator's small batches: the batch statement's
/// nested loops over the sagas a batch kept grow with the product of its sagas and
/// rows, and measured, a burst's 256-input batches took 75 ms instead of 15 this way.
pub fn planned_once(pool: &PgPool, max_connections: u32) -> PgPool {
    let options = (*pool.connect_options())
        .clone()
        .options(PLANNED_ONCE.iter().copied());
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(pool.options().get_acquire_timeout())
        .test_before_acquire(false)
        .connect_lazy_with(options)
}

/// The session settings of [`planned_once`] pools; later startup options override
/// earlier ones, so these replace the main pool's `plan_cache_mode`.
const PLANNED_ONCE: &[(&str, &str)] = &[
    ("plan_cache_mode", "force_generic_plan"),
    ("enable_seqscan", "off"),
    ("enable_hashjoin", "off"),
    ("enable_mergejoin", "off"),
];

/// Fails when a TLS file the URL names cannot be read (see [`StoreError::TlsFile`]).
fn check_tls_files(url: &str) -> Result<(), StoreError> {
    let Ok(parsed) = url::Url::parse(url) else {
        return Ok(()); // sqlx has parsed it already; nothing else to check here
    };
    const FILES: [&str; 7] = [
        "sslrootcert",
        "ssl-root-cert",
        "ssl-ca",
        "sslcert",
        "ssl-cert",
        "sslkey",
        "ssl-key",
    ];
    for (param, path) in parsed.query_pairs() {
        if FILES.contains(&param.as_ref()) {
            if let Err(source) = std::fs::File::open(path.as_ref()) {
                return Err(StoreError::TlsFile {
                    param: param.into_owned(),
                    path: path.into_owned(),
                    source,
                });
            }
        }
    }
    Ok(())
}

/// Whether Postgres answers a trivial query on `pool`: the readiness probe's check.
pub async fn ping(pool: &PgPool) -> Result<(), StoreError> {
    sqlx::query("SELECT 1")
        .execute(pool)
        .await
        .map_err(ctx("ping"))?;
    Ok(())
}

/// The session settings of every pooled connection (sent as startup `options`, so
/// they hold from the first statement and survive `DISCARD ALL`).
///
/// `plan_cache_mode = force_custom_plan`: sagaflow's statements are prepared once per
/// connection and take arrays (`key = ANY($1)`) whose size and selectivity vary. A
/// generic plan chosen while a table is new and small (a fresh deployment, a new
/// namespace) is a sequential scan, and it stays cached as the table grows until
/// autovacuum first analyzes it: measured, the workers' ledger lookup read 4.5
/// million rows in 14 s of a fan-out and took half of Postgres's CPU (BENCHMARKS.md,
/// "Fan-out"). Planning each statement with its parameters costs tens of
/// microseconds and never picks that scan.
fn session_options(options: PgConnectOptions, db: &DatabaseSettings) -> PgConnectOptions {
    let ms = |n: u64| format!("{n}ms");
    options.options([
        ("plan_cache_mode", "force_custom_plan".to_string()),
        ("lock_timeout", ms(db.lock_timeout_ms)),
        ("statement_timeout", ms(db.statement_timeout_ms)),
        (
            "idle_in_transaction_session_timeout",
            ms(db.idle_in_transaction_session_timeout_ms),
        ),
    ])
}

/// Where `options` connect, for messages: `host:port/database` (never the password).
fn target(options: &PgConnectOptions) -> String {
    let at = match options.get_socket() {
        Some(socket) => socket.display().to_string(),
        None => format!("{}:{}", options.get_host(), options.get_port()),
    };
    format!("{at}/{}", options.get_database().unwrap_or_default())
}

/// One connection outside the pool, bounded by `timeout`.
async fn connect_once(
    what: &'static str,
    options: &PgConnectOptions,
    timeout: Duration,
) -> Result<PgConnection, StoreError> {
    match tokio::time::timeout(timeout, options.connect()).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(source)) => Err(StoreError::Connect {
            what,
            target: target(options),
            source,
        }),
        Err(_) => Err(StoreError::ConnectTimeout {
            what,
            target: target(options),
            after: timeout,
        }),
    }
}

fn sqlstate(e: &StoreError) -> Option<String> {
    match e {
        StoreError::Sql { source, .. } | StoreError::Connect { source, .. } => match source {
            sqlx::Error::Database(d) => d.code().map(|c| c.into_owned()),
            _ => None,
        },
        _ => None,
    }
}

async fn create_database_if_missing(
    options: &PgConnectOptions,
    timeout: Duration,
) -> Result<(), StoreError> {
    let Some(name) = options.get_database().map(str::to_string) else {
        return Ok(());
    };
    match connect_once("connect", options, timeout).await {
        Ok(conn) => {
            let _ = conn.close().await;
            return Ok(());
        }
        // 3D000 invalid_catalog_name: the database does not exist (yet).
        Err(e) if sqlstate(&e).as_deref() == Some("3D000") => {}
        Err(e) => return Err(e),
    }
    let admin_options = options.clone().database("postgres");
    let mut admin = connect_once("connect to create the database", &admin_options, timeout).await?;
    let sql = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
    match sqlx::query(&sql).execute(&mut admin).await {
        Ok(_) => {}
        // Another process created it first: 42P04 duplicate_database, or 23505 when
        // both inserted into pg_database at once and the unique index caught the second.
        Err(sqlx::Error::Database(e)) if matches!(e.code().as_deref(), Some("42P04" | "23505")) => {
        }
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
    let admin_options = options.database("postgres");
    let mut admin = connect_once(
        "connect to drop the database",
        &admin_options,
        Duration::from_secs(10),
    )
    .await?;
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
