//! The checks serde cannot express: non-zero sizes, parseable addresses and
//! durations, names safe inside AMQP exchange and queue names, distinct token names
//! and secrets. Run once by `Settings::load`, so every key is reported by its
//! dotted name (`ConfigError::Invalid`) at start, not when first used.

use super::{ApiToken, ConfigError, Settings};

impl Settings {
    /// The first setting that is out of range, by its dotted key.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| {
            Err(ConfigError::Invalid {
                key,
                reason: reason.to_string(),
            })
        };
        if !valid_name(&self.namespace) {
            return invalid(
                "namespace",
                "expected letters, digits, `_`, `-` or `.`, not empty",
            );
        }
        if self.coordinator.batch_size == 0 {
            return invalid("coordinator.batch_size", "expected at least 1");
        }
        if self.coordinator.prefetch == 0 || self.worker.prefetch == 0 {
            return invalid(
                "coordinator.prefetch / worker.prefetch",
                "expected at least 1",
            );
        }
        if self.queues.delivery_limit == 0 {
            return invalid("queues.delivery_limit", "expected at least 1");
        }
        if self.api.listen.parse::<std::net::SocketAddr>().is_err() {
            return invalid(
                "api.listen",
                "expected an IP address and port, e.g. 127.0.0.1:8080",
            );
        }
        if let Some(reason) = invalid_tokens(&self.api.tokens) {
            return invalid("api.tokens", &reason);
        }
        for (key, listen) in [
            ("coordinator.health_listen", &self.coordinator.health_listen),
            ("worker.health_listen", &self.worker.health_listen),
        ] {
            if !listen.is_empty() && listen.parse::<std::net::SocketAddr>().is_err() {
                return invalid(key, "expected empty (off) or an IP address and port");
            }
        }
        if crate::saga::definition::parse_duration(&self.retention.default).is_err() {
            return invalid(
                "retention.default",
                "expected a duration such as `30d` or `12h`, or `0` to keep sagas for ever",
            );
        }
        if self.retention.batch_size == 0 || self.retention.max_per_second == 0 {
            return invalid(
                "retention.batch_size / retention.max_per_second",
                "expected at least 1",
            );
        }
        if self.coordinator.outbox_lease_ms < 100 {
            return invalid("coordinator.outbox_lease_ms", "expected at least 100");
        }
        if self.database.connect_timeout_ms < 100 {
            return invalid("database.connect_timeout_ms", "expected at least 100");
        }
        if self.database.max_connections == 0 {
            return invalid("database.max_connections", "expected at least 1");
        }
        if let Some((key, reason)) = self.limits.invalid() {
            return invalid(key, &reason);
        }
        Ok(())
    }
}

/// Why `tokens` cannot be used, if they cannot: a name that is not a plain word, an
/// empty secret, or two tokens sharing a name or a secret (a secret names one role).
fn invalid_tokens(tokens: &[ApiToken]) -> Option<String> {
    let mut names = std::collections::HashSet::new();
    for (i, t) in tokens.iter().enumerate() {
        if !valid_name(&t.name) || t.name.len() > 64 {
            return Some(format!(
                "token {}: name `{}`: expected 1 to 64 letters, digits, `_`, `-` or `.`",
                i + 1,
                t.name
            ));
        }
        if t.secret.trim().is_empty() {
            return Some(format!("token `{}`: the secret is empty", t.name));
        }
        if !names.insert(t.name.as_str()) {
            return Some(format!("two tokens are named `{}`", t.name));
        }
    }
    for (i, a) in tokens.iter().enumerate() {
        if let Some(b) = tokens[i + 1..].iter().find(|b| b.secret == a.secret) {
            return Some(format!(
                "tokens `{}` and `{}` have the same secret",
                a.name, b.name
            ));
        }
    }
    None
}

/// Names that end up inside AMQP exchange and queue names.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ApiRole;

    #[test]
    fn limits_are_checked_at_load() {
        let mut s = Settings::load(None).unwrap();
        s.limits.json_depth = 500;
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("limits.json_depth"), "{err}");
        s.limits.json_depth = 32;
        s.limits.message_bytes = 10;
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("limits.message_bytes"), "{err}");
    }

    #[test]
    fn tokens_need_distinct_names_and_secrets() {
        let t = |n: &str, s: &str| ApiToken::new(n, ApiRole::Read, s);
        assert_eq!(invalid_tokens(&[t("a", "1"), t("b", "2")]), None);
        let e = invalid_tokens(&[t("a", "1"), t("a", "2")]).unwrap();
        assert!(e.contains("two tokens are named `a`"), "{e}");
        let e = invalid_tokens(&[t("a", "1"), t("b", "1")]).unwrap();
        assert!(e.contains("same secret"), "{e}");
        assert!(invalid_tokens(&[t("a b", "1")]).is_some());
        assert!(invalid_tokens(&[t("a", " ")]).is_some());
    }

    #[test]
    fn names_allow_dots_but_not_spaces() {
        assert!(valid_name("sagaflow.test-1_a"));
        assert!(!valid_name(""));
        assert!(!valid_name("a b"));
        assert!(!valid_name("a/b"));
    }
}
