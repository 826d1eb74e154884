//! The database as the command line reaches it: a pool (migrated on connect, as every
//! process does) and `sagaflow migrate`.

use anyhow::Context;

use crate::config::Settings;
use crate::redact;
use crate::store;

/// Connects to `database.url`, creating the database and applying the migrations;
/// errors name the URL without its password.
pub async fn pool(settings: &Settings) -> anyhow::Result<sqlx::PgPool> {
    store::connect_with(&settings.database)
        .await
        .with_context(|| format!("database {}", redact::url(&settings.database.url)))
}

/// `sagaflow migrate`: connecting applies the migrations.
pub async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    pool(settings).await?;
    println!(
        "migrations applied to {}",
        redact::url(&settings.database.url)
    );
    Ok(())
}
