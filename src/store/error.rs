//! What a store failure is and what it means for the caller. Apart from the queries
//! because every caller (coordinator, scheduler, API, CLI) decides on [`Class`] alone
//! whether to retry at once, back off as an outage or give up, and the SQLSTATE
//! table behind that decision is a unit test of its own.

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

/// Attaches what was being done to a sqlx error.
pub(crate) fn ctx(context: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Sql { context, source }
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
