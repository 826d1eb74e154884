//! The demo activities' own tables (`sagaflow worker --demo`): `demo_effects`, one row
//! per effect a downstream system would apply (so tests can count effects), and
//! `demo_switches`, named switches a test flips to make an activity fail while one is
//! on. Not part of the engine's schema (the migrations do not create them, so these
//! queries are checked at run time); compiled with the `tools` feature only.

use sqlx::PgPool;

use super::{ctx, SchemaLock, StoreError};

/// Creates both tables (idempotent), under the schema setup lock so replicas starting
/// at the same instant do not race in `CREATE TABLE IF NOT EXISTS`.
pub async fn prepare(pool: &PgPool) -> Result<(), StoreError> {
    let mut lock = SchemaLock::acquire(pool).await?;
    let mut created = Ok(());
    for (what, sql) in [
        (
            "create table demo_effects",
            "CREATE TABLE IF NOT EXISTS demo_effects (
                idempotency_key text PRIMARY KEY,
                saga_id text NOT NULL,
                activity text NOT NULL,
                calls integer NOT NULL DEFAULT 1,
                created_at timestamptz NOT NULL DEFAULT now())",
        ),
        (
            "create table demo_switches",
            "CREATE TABLE IF NOT EXISTS demo_switches (name text PRIMARY KEY)",
        ),
    ] {
        created = sqlx::query(sql)
            .execute(&mut *lock.conn())
            .await
            .map(|_| ())
            .map_err(ctx(what));
        if created.is_err() {
            break;
        }
    }
    lock.release().await?;
    created
}

/// Turns the switch `name` on or off.
pub async fn set_switch(pool: &PgPool, name: &str, on: bool) -> Result<(), StoreError> {
    let sql = if on {
        "INSERT INTO demo_switches (name) VALUES ($1) ON CONFLICT DO NOTHING"
    } else {
        "DELETE FROM demo_switches WHERE name = $1"
    };
    sqlx::query(sql)
        .bind(name)
        .execute(pool)
        .await
        .map_err(ctx("set a demo switch"))?;
    Ok(())
}

/// Whether the switch `name` is on.
pub async fn switch_on(pool: &PgPool, name: &str) -> Result<bool, StoreError> {
    sqlx::query_scalar("SELECT exists(SELECT 1 FROM demo_switches WHERE name = $1)")
        .bind(name)
        .fetch_one(pool)
        .await
        .map_err(ctx("read a demo switch"))
}

/// Records one effect under `key`; a second record of the same key counts a call.
pub async fn record_effect(
    pool: &PgPool,
    key: &str,
    saga_id: &str,
    activity: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO demo_effects (idempotency_key, saga_id, activity) VALUES ($1, $2, $3)
         ON CONFLICT (idempotency_key) DO UPDATE SET calls = demo_effects.calls + 1",
    )
    .bind(key)
    .bind(saga_id)
    .bind(activity)
    .execute(pool)
    .await
    .map_err(ctx("record a demo effect"))?;
    Ok(())
}
