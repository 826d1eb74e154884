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

/// Opens a transaction on a pooled connection.
pub async fn begin(pool: &PgPool) -> Result<Tx, StoreError> {
    pool.begin().await.map(Tx).map_err(ctx("begin"))
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
