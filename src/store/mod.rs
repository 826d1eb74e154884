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
//!
//! ## Relaxed commits
//!
//! Two writes commit without waiting for their WAL to reach the disk, because their
//! loss in a Postgres crash costs a repeat and never a saga's progress: an outbox
//! delete (the row is published again and the duplicate absorbed) and a ledger row
//! (the activity may run again, which at-least-once allows). A crash loses at most
//! the last few hundred milliseconds of them (three `wal_writer_delay`s); a later
//! synchronous commit flushes them with its own. Each is one statement that sets
//! `synchronous_commit = off` for its own implicit transaction, in a CTE it joins
//! (`WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true))`): one
//! round trip, where `BEGIN; SET LOCAL …; …; COMMIT` took four, and the session's
//! setting is untouched afterwards (`tests/store.rs` checks both).
//!
//! Layout: one file per table or concern (`sagas`, `history`, `outbox`, ...), plus
//! the plumbing they share, private and re-exported here: `error` ([`StoreError`],
//! its [`Class`]), `tx` ([`Tx`], [`begin`]), `connect` (the pool) and `schema`
//! (migrations, [`SchemaLock`]).

pub mod batch;
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

mod connect;
mod error;
mod schema;
mod tx;

pub use connect::{connect, connect_with, drop_database, ping, planned_once};
pub(crate) use error::ctx;
pub use error::{classify_sqlstate, classify_sqlx, Class, StoreError};
pub use schema::{SchemaLock, MIGRATOR};
pub use tx::{begin, Tx};
