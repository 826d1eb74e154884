//! [`Tx`]: the one transaction type callers outside `store` see. Its own file so the
//! rule is visible in one place: callers make several store writes atomic by passing
//! a `Tx` around, never by touching sqlx.

use sqlx::{PgConnection, PgPool};

use super::{ctx, StoreError};

/// One database transaction, opened by [`begin`]. Callers outside `store` only pass
/// it to store functions and [`Tx::commit`] it; dropped without a commit, it rolls
/// back. This is how the coordinator and the scheduler make several store writes
/// atomic (a batch's states, history and outbox; a schedule tick and the saga it
/// starts) without handling sqlx themselves.
pub struct Tx(sqlx::Transaction<'static, sqlx::Postgres>);

/// Opens a transaction on a pooled connection, safe to cancel.
///
/// sqlx 0.8.6 counts a transaction only once its `BEGIN` has answered, so a
/// `pool.begin()` dropped while it waits (a task aborted when its loop stops, a
/// `select!` on shutdown, a client that hung up) queues no `ROLLBACK`, and the pool
/// hands the session on still inside that transaction: every later autocommit write
/// on it (a batch without a lock, a ledger row, an outbox delete) is acknowledged
/// but never committed, and lost when the session ends (transact-rs/sqlx#4393). The
/// `BEGIN` therefore runs in a task of its own, which finishes it whatever happens
/// to the caller: a caller that went away drops a counted transaction, which rolls
/// back before its session is reused.
#[allow(clippy::disallowed_methods)] // the one place sqlx's begin runs (clippy.toml)
pub async fn begin(pool: &PgPool) -> Result<Tx, StoreError> {
    let pool = pool.clone();
    match tokio::spawn(async move { pool.begin().await }).await {
        Ok(begun) => begun.map(Tx).map_err(ctx("begin")),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Only a runtime shutting down cancels the task: no transaction to be had.
        Err(_) => Err(ctx("begin")(sqlx::Error::PoolClosed)),
    }
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
