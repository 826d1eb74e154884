//! All SQL lives here: sagas and their history, the outbox, the idempotency ledger,
//! cron schedules.
//!
//! Writes are set-based (`UNNEST` of arrays) so one transaction carries a whole batch
//! of saga transitions; updates are fenced by `row_version`.
//!
//! Queries are checked at compile time: every static one uses `sqlx::query!`,
//! `query_as!` or `query_scalar!`, and the build reads their descriptions from the
//! committed `.sqlx/` (`SQLX_OFFLINE=true` in `.cargo/config.toml`), not from a
//! database. **After changing a query here (or a migration), run
//! `scripts/sqlx-prepare` and commit `.sqlx/`.** CI fails when `.sqlx/` is stale
//! (`scripts/sqlx-prepare --check`). Runtime `sqlx::query` is kept only for SQL
//! without a fixed text or schema to check: `CREATE`/`DROP DATABASE` (the name comes
//! from the URL), `VACUUM` of a named table (`bench`), and the [`SchemaLock`]
//! session statements. docs/development.md has the workflow and the rules.
//!
//! A stored value that does not decode is reported and never causes a panic. A JSON
//! column is selected as text and parsed here, so that an unreadable one becomes
//! [`StoreError::Unreadable`] naming the row, or a [`sagas::UnreadableSaga`], and
//! does not fail the whole query. Nullability is declared with `AS "col!"` or
//! `AS "col?"`, never an `unwrap`.

#[cfg(feature = "tools")]
pub mod bench;
pub mod counters;
#[cfg(feature = "tools")]
pub mod demo;
pub mod elements;
pub mod history;
pub mod ledger;
pub mod outbox;
pub mod overview;
pub mod purge;
pub mod sagas;
pub mod schedules;
pub mod stats;
pub mod stuck;
pub mod versions;

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};

use crate::config::DatabaseSettings;

/// A Postgres failure, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {context}: {source}")]
    Sql {
        context: &'static str,
        #[source]
        source: sqlx::Error,
    },
    /// Connecting failed: `what` the connection was for, `target` where it went
    /// (`host:port/database`, never the password).
    #[error("database {what}: cannot connect to {target}: {source}")]
    Connect {
        what: &'static str,
        target: String,
        #[source]
        source: sqlx::Error,
    },
    /// Connecting took longer than `database.connect_timeout_ms`.
    #[error("database {what}: connecting to {target} took longer than {after:?} (database.connect_timeout_ms)")]
    ConnectTimeout {
        what: &'static str,
        target: String,
        after: std::time::Duration,
    },
    /// A TLS file named in `database.url` (`sslrootcert`, `sslcert`, `sslkey`) cannot
    /// be read. Checked before connecting: sqlx reports it as a bare I/O error
    /// ("No such file or directory") that names neither the file nor the parameter.
    #[error("database url: cannot read {param}={path}: {source}")]
    TlsFile {
        param: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("saga {0} changed under us (row_version fence)")]
    Conflict(String),
    #[error("stored state of saga {id} is unreadable: {reason}")]
    Corrupt { id: String, reason: String },
    /// A stored row other than a saga's state that cannot be decoded; `what` names it
    /// (`outbox row 17`, `schedule nightly`).
    #[error("stored {what} is unreadable: {reason}")]
    Unreadable { what: String, reason: String },
}

/// What a failure means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Running the same work again can succeed at once: a deadlock, a serialisation
    /// failure, a `row_version` fence, a lock or statement timeout, a session the
    /// server ended for idling in a transaction.
    Retry,
    /// The database is unreachable or unusable for now (connection lost or refused,
    /// server shutting down or starting, failover, out of disk, memory or
    /// connections): retrying works once it is back, so back off rather than spin,
    /// and report it as "unavailable", not as a bug.
    Outage,
    /// Retrying changes nothing: bad SQL, a constraint violation, unreadable data.
    Permanent,
}

/// Classifies a Postgres SQLSTATE (the five-character error code).
///
/// | code | meaning | class |
/// |---|---|---|
/// | `40P01`, `40001` | deadlock, serialisation failure | retry |
/// | `55P03` | lock not available (`lock_timeout`) | retry |
/// | `57014` | query cancelled (`statement_timeout`) | retry |
/// | `25P03` | idle-in-transaction session timeout | retry |
/// | `08xxx` | connection exception | outage |
/// | `57P0x` | operator intervention (`57P01` admin shutdown, `57P03` cannot connect now) | outage |
/// | `53xxx` | insufficient resources (disk, memory, too many connections) | outage |
/// | `25006` | read-only transaction (a failover's old primary) | outage |
/// | anything else | | permanent |
pub fn classify_sqlstate(code: &str) -> Class {
    match code {
        "40P01" | "40001" | "55P03" | "57014" | "25P03" => Class::Retry,
        "25006" => Class::Outage,
        c if c.starts_with("08") || c.starts_with("53") || c.starts_with("57P0") => Class::Outage,
        _ => Class::Permanent,
    }
}

/// Classifies a sqlx error: a database error by its SQLSTATE; a broken or refused
/// connection (`Io`, `Tls`, `Protocol`: the stream is out of step, a dead pool worker)
/// and a pool that could not hand out a connection in time (or is closed) as an
/// outage; everything else (decode, configuration, row not found …) as permanent.
pub fn classify_sqlx(e: &sqlx::Error) -> Class {
    match e {
        sqlx::Error::Database(d) => d
            .code()
            .as_deref()
            .map(classify_sqlstate)
            .unwrap_or(Class::Permanent),
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => Class::Outage,
        _ => Class::Permanent,
    }
}

impl StoreError {
    /// What this failure means; see [`Class`].
    pub fn class(&self) -> Class {
        match self {
            StoreError::Conflict(_) => Class::Retry,
            StoreError::Sql { source, .. } => classify_sqlx(source),
            StoreError::Connect { source, .. } => match source {
                // Wrong password, unknown role or database, bad TLS settings: no retry
                // fixes configuration. Everything else while connecting is an outage.
                sqlx::Error::Database(_) if classify_sqlx(source) == Class::Permanent => {
                    Class::Permanent
                }
                sqlx::Error::Configuration(_) => Class::Permanent,
                _ => Class::Outage,
            },
            StoreError::ConnectTimeout { .. } => Class::Outage,
            StoreError::Migrate(sqlx::migrate::MigrateError::Execute(e)) => classify_sqlx(e),
            StoreError::Migrate(_)
            | StoreError::Corrupt { .. }
            | StoreError::Unreadable { .. }
            | StoreError::TlsFile { .. } => Class::Permanent,
        }
    }

    /// Running the same work again may succeed ([`Class::Retry`] or [`Class::Outage`]).
    pub fn is_transient(&self) -> bool {
        self.class() != Class::Permanent
    }

    /// The database is unreachable or unusable, as opposed to a conflict a retry fixes
    /// at once: callers back off (and reconnect) instead of retrying in a tight loop,
    /// and the API answers 503.
    pub fn is_outage(&self) -> bool {
        self.class() == Class::Outage
    }
}

/// One database transaction, opened by [`begin`]. Callers outside `store` only pass
/// it to store functions and [`Tx::commit`] it; dropped without a commit, it rolls
/// back. This is how the coordinator and the scheduler make several store writes
/// atomic (a batch's states, history and outbox; a schedule tick and the saga it
/// starts) without handling sqlx themselves.
pub struct Tx(sqlx::Transaction<'static, sqlx::Postgres>);

/// Opens a transaction on a pooled connection.
pub async fn begin(pool: &PgPool) -> Result<Tx, StoreError> {
    pool.begin().await.map(Tx).map_err(ctx("begin"))
}

/// Opens a transaction whose commit does not wait for its WAL to reach the disk
/// (`SET LOCAL synchronous_commit = off`), for writes whose loss in a Postgres
/// crash costs a repeat and never a saga's progress: an outbox delete (the row is
/// published again and the duplicate absorbed) or a ledger row (the activity may run
/// again, which at-least-once allows). A crash loses at most the last few hundred
/// milliseconds of them (three `wal_writer_delay`s); a later synchronous commit
/// flushes them with its own. Runtime query: `SET` takes no parameters to check.
pub(crate) async fn begin_relaxed(pool: &PgPool) -> Result<Tx, StoreError> {
    let mut tx = begin(pool).await?;
    sqlx::query("SET LOCAL synchronous_commit = off")
        .execute(tx.conn())
        .await
        .map_err(ctx("relax commit"))?;
    Ok(tx)
}

impl Tx {
    /// Commits everything written through this transaction.
    pub async fn commit(self) -> Result<(), StoreError> {
        self.0.commit().await.map_err(ctx("commit"))
    }

    /// Undoes everything written through this transaction (dropping it does too; this
    /// says so where a reader should see it).
    pub async fn rollback(self) -> Result<(), StoreError> {
        self.0.rollback().await.map_err(ctx("rollback"))
    }

    /// The connection the store's queries run on.
    pub(crate) fn conn(&mut self) -> &mut PgConnection {
        &mut self.0
    }
}

/// Attaches what was being done to a sqlx error.
pub(crate) fn ctx(context: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Sql { context, source }
}

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

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

/// Serialises schema setup (migrations, the demo table) across processes: a Postgres
/// session-level advisory lock on one connection taken out of the pool.
///
/// `CREATE TABLE IF NOT EXISTS` is not safe against a twin running at the same
/// instant: both see no table, and the second fails on `pg_type`'s unique index
/// (`duplicate key value violates unique constraint "pg_type_typname_nsp_index"`).
/// Replicas started together therefore take turns. The session has no lock or
/// statement timeout (waiting for the lock and a long migration are both fine); it
/// is closed, never returned to the pool, so its settings and the lock cannot leak
/// into other work. If it is dropped without [`SchemaLock::release`] (an error on the
/// way), closing the connection releases the lock.
pub struct SchemaLock {
    // Dropping it closes the socket, and the server releases the session's lock.
    conn: PgConnection,
}

/// The advisory lock key of schema setup (any constant; advisory locks are per
/// database, so deployments in other databases do not contend).
const SCHEMA_LOCK_KEY: i64 = 0x5a6a_f10e_5c4e_3a00;

impl SchemaLock {
    /// Waits until no other process is setting up the schema of this database.
    pub async fn acquire(pool: &PgPool) -> Result<SchemaLock, StoreError> {
        let conn = pool
            .acquire()
            .await
            .map_err(ctx("acquire a connection for schema setup"))?;
        let mut conn = conn.detach();
        for sql in ["SET lock_timeout = 0", "SET statement_timeout = 0"] {
            sqlx::query(sql)
                .execute(&mut conn)
                .await
                .map_err(ctx("schema setup session"))?;
        }
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(SCHEMA_LOCK_KEY)
            .execute(&mut conn)
            .await
            .map_err(ctx("take the schema setup lock"))?;
        Ok(SchemaLock { conn })
    }

    /// The locked session, to run schema statements on.
    pub fn conn(&mut self) -> &mut PgConnection {
        &mut self.conn
    }

    /// Releases the lock and closes the session.
    pub async fn release(mut self) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(SCHEMA_LOCK_KEY)
            .execute(&mut self.conn)
            .await
            .map_err(ctx("release the schema setup lock"))?;
        self.conn.close().await.map_err(ctx("close"))?;
        Ok(())
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;
    use std::io;

    /// A database error with a given SQLSTATE, as the driver would report it.
    #[derive(Debug)]
    struct Pg(&'static str);

    impl std::fmt::Display for Pg {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "error {}", self.0)
        }
    }

    impl std::error::Error for Pg {}

    impl sqlx::error::DatabaseError for Pg {
        fn message(&self) -> &str {
            "test"
        }
        fn code(&self) -> Option<Cow<'_, str>> {
            Some(Cow::Borrowed(self.0))
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    fn db(code: &'static str) -> sqlx::Error {
        sqlx::Error::Database(Box::new(Pg(code)))
    }

    fn sql(source: sqlx::Error) -> StoreError {
        StoreError::Sql {
            context: "test",
            source,
        }
    }

    #[test]
    fn sqlstates_are_classified_by_class() {
        let table = [
            ("40P01", Class::Retry),
            ("40001", Class::Retry),
            ("55P03", Class::Retry),
            ("57014", Class::Retry),
            ("25P03", Class::Retry),
            ("08000", Class::Outage),
            ("08003", Class::Outage),
            ("08006", Class::Outage),
            ("08P01", Class::Outage),
            ("57P01", Class::Outage),
            ("57P02", Class::Outage),
            ("57P03", Class::Outage),
            ("53100", Class::Outage),
            ("53200", Class::Outage),
            ("53300", Class::Outage),
            ("25006", Class::Outage),
            ("23505", Class::Permanent),
            ("23503", Class::Permanent),
            ("42601", Class::Permanent),
            ("42P01", Class::Permanent),
            ("22P02", Class::Permanent),
            ("25001", Class::Permanent),
            ("57000", Class::Permanent),
            ("XX000", Class::Permanent),
            ("", Class::Permanent),
        ];
        for (code, class) in table {
            assert_eq!(classify_sqlstate(code), class, "{code}");
            assert_eq!(sql(db(code)).class(), class, "{code}");
        }
    }

    #[test]
    fn driver_errors_are_classified() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        let table: Vec<(sqlx::Error, Class)> = vec![
            (sqlx::Error::Io(refused), Class::Outage),
            (
                sqlx::Error::Io(io::Error::from(io::ErrorKind::UnexpectedEof)),
                Class::Outage,
            ),
            (sqlx::Error::Tls("handshake".into()), Class::Outage),
            (
                sqlx::Error::Protocol("unexpected message".into()),
                Class::Outage,
            ),
            (sqlx::Error::PoolTimedOut, Class::Outage),
            (sqlx::Error::PoolClosed, Class::Outage),
            (sqlx::Error::WorkerCrashed, Class::Outage),
            (sqlx::Error::RowNotFound, Class::Permanent),
            (sqlx::Error::ColumnNotFound("x".into()), Class::Permanent),
            (sqlx::Error::Decode("bad".into()), Class::Permanent),
            (
                sqlx::Error::Configuration("bad url".into()),
                Class::Permanent,
            ),
        ];
        for (e, class) in table {
            let shown = e.to_string();
            assert_eq!(sql(e).class(), class, "{shown}");
        }
    }

    #[test]
    fn transient_and_outage_follow_the_class() {
        assert!(sql(db("40P01")).is_transient());
        assert!(!sql(db("40P01")).is_outage());
        assert!(sql(db("57P01")).is_transient() && sql(db("57P01")).is_outage());
        assert!(!sql(db("23505")).is_transient());
        let conflict = StoreError::Conflict("s".into());
        assert!(conflict.is_transient() && !conflict.is_outage());
        let corrupt = StoreError::Corrupt {
            id: "s".into(),
            reason: "missing field".into(),
        };
        assert!(!corrupt.is_transient());
        let timeout = StoreError::ConnectTimeout {
            what: "connect",
            target: "db:5432/x".into(),
            after: std::time::Duration::from_secs(1),
        };
        assert!(timeout.is_outage());
    }

    #[test]
    fn connecting_is_an_outage_unless_it_is_configuration() {
        let connect = |source| StoreError::Connect {
            what: "connect",
            target: "127.0.0.1:5432/x".into(),
            source,
        };
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(connect(sqlx::Error::Io(refused)).class(), Class::Outage);
        assert_eq!(connect(db("57P03")).class(), Class::Outage);
        assert_eq!(connect(db("53300")).class(), Class::Outage);
        // Wrong password, unknown database: no retry fixes them.
        assert_eq!(connect(db("28P01")).class(), Class::Permanent);
        assert_eq!(connect(db("3D000")).class(), Class::Permanent);
        assert_eq!(
            connect(sqlx::Error::Configuration("bad".into())).class(),
            Class::Permanent
        );
        let shown = connect(sqlx::Error::PoolTimedOut).to_string();
        assert!(
            shown.contains("cannot connect to 127.0.0.1:5432/x"),
            "{shown}"
        );
    }

    #[test]
    fn a_failed_migration_statement_is_classified_by_its_cause() {
        let m = StoreError::Migrate(sqlx::migrate::MigrateError::Execute(db("57P01")));
        assert!(m.is_outage());
        let m = StoreError::Migrate(sqlx::migrate::MigrateError::VersionMissing(3));
        assert!(!m.is_transient());
    }
}
