//! The database as the command line reaches it: a pool (migrated on connect, as every
//! process does) and `sagaflow migrate`.

use anyhow::Context;

use crate::config::Settings;
use crate::store;

/// Connects to `database.url`, creating the database and applying the migrations;
/// errors name the URL without its password.
pub async fn pool(settings: &Settings) -> anyhow::Result<sqlx::PgPool> {
    store::connect_with(&settings.database)
        .await
        .with_context(|| format!("database {}", redact(&settings.database.url)))
}

/// `sagaflow migrate`: connecting applies the migrations.
pub async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    pool(settings).await?;
    println!("migrations applied to {}", redact(&settings.database.url));
    Ok(())
}

/// A URL without its password, for messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_are_hidden_and_the_rest_kept() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("not a url"), "not a url");
    }
}
