//! The schema: the embedded migrations of `migrations/` and the advisory lock that
//! makes replicas started together apply them one at a time. Apart from connecting
//! because other schema setup (the demo's table) takes the same lock.

use sqlx::{Connection, PgConnection, PgPool};

use super::{ctx, StoreError};

/// The migrations of `migrations/`, embedded at build time; run by
/// [`connect_with`](super::connect_with) under the [`SchemaLock`].
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

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
