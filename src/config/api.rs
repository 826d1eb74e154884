//! `[api]`: the operator HTTP API's address and its bearer tokens. Its own file
//! because tokens are the one secret-bearing, multi-form setting: roles, the three
//! accepted forms of an entry (table, `name:role:secret`, deprecated plain secret)
//! and a `Debug` that never shows a secret.

use serde::Deserialize;

/// The operator HTTP API (`sagaflow serve`).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSettings {
    /// Address the server binds; without tokens it must be a loopback address.
    pub listen: String,
    /// Bearer tokens accepted on `/api/*`, each with a name and a role; empty means
    /// unauthenticated, localhost only. See [`ApiToken`] for the accepted forms.
    #[serde(deserialize_with = "api_tokens::deserialize")]
    pub tokens: Vec<ApiToken>,
}

/// Tokens are secrets: `Debug` (and so any log of the settings) shows their names and
/// roles, never their secrets.
impl std::fmt::Debug for ApiSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiSettings")
            .field("listen", &self.listen)
            .field("tokens", &self.tokens)
            .finish()
    }
}

/// What an API token may do. Every route names the role it needs (the table in
/// `api::routes`); a role grants its own routes and those of the roles below it:
/// `operate` > `read` > `scaling`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiRole {
    /// `GET /api/scaling` only: what an autoscaler (KEDA) needs.
    Scaling,
    /// Every `GET` under `/api`: sagas, history, queues, dead letters, schedules, the
    /// scaling signal, the OpenAPI document; the dashboard's views.
    Read,
    /// Everything: starts, signals, cancels, operator actions, dead-letter replays and
    /// purges, schedule pause/resume/trigger, and all that `read` may.
    Operate,
}

impl ApiRole {
    pub const ALL: [ApiRole; 3] = [ApiRole::Scaling, ApiRole::Read, ApiRole::Operate];

    pub fn as_str(self) -> &'static str {
        match self {
            ApiRole::Scaling => "scaling",
            ApiRole::Read => "read",
            ApiRole::Operate => "operate",
        }
    }

    /// Whether a token of this role may call a route that needs `needed`.
    pub fn grants(self, needed: ApiRole) -> bool {
        match self {
            ApiRole::Operate => true,
            ApiRole::Read => needed != ApiRole::Operate,
            ApiRole::Scaling => needed == ApiRole::Scaling,
        }
    }
}

impl std::fmt::Display for ApiRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ApiRole {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ApiRole::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role `{s}`: expected read, operate or scaling"))
    }
}

/// One bearer token of the API. Its `name` is what the API records as the actor of
/// the operator actions sent with it (never the secret).
///
/// Accepted forms of each `api.tokens` entry:
/// - a table `{ name = "ops-ann", role = "operate", secret = "…" }` (TOML
///   `[[api.tokens]]`);
/// - a string `name:role:secret` (the environment form,
///   `SAGAFLOW__API__TOKENS=ops-ann:operate:s3cr3t,keda:scaling:…`; the secret may
///   contain `:`);
/// - deprecated: a plain secret without `:`, the old form: an `operate` token named
///   `token-<n>` (its position in the list, from 1).
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken {
    pub name: String,
    pub role: ApiRole,
    pub secret: String,
    /// Given as a plain secret (deprecated): `serve` warns about it.
    pub legacy: bool,
}

impl ApiToken {
    pub fn new(name: &str, role: ApiRole, secret: &str) -> Self {
        ApiToken {
            name: name.into(),
            role,
            secret: secret.into(),
            legacy: false,
        }
    }
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiToken")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("secret", &format_args!("<redacted>"))
            .finish()
    }
}

/// Reading `api.tokens` in each of its forms (see [`ApiToken`]).
mod api_tokens {
    use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
    use serde::Deserialize;

    use super::{ApiRole, ApiToken};

    /// A table entry.
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Table {
        name: String,
        role: ApiRole,
        secret: String,
    }

    enum Entry {
        Table(Table),
        Text(String),
    }

    impl<'de> Deserialize<'de> for Entry {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Entry;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a table {name, role, secret} or a string name:role:secret")
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<Entry, E> {
                    Ok(Entry::Text(v.to_string()))
                }
                // The environment source parses an all-digit secret as a number.
                fn visit_i64<E: de::Error>(self, v: i64) -> Result<Entry, E> {
                    Ok(Entry::Text(v.to_string()))
                }
                fn visit_u64<E: de::Error>(self, v: u64) -> Result<Entry, E> {
                    Ok(Entry::Text(v.to_string()))
                }
                fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<Entry, A::Error> {
                    Table::deserialize(de::value::MapAccessDeserializer::new(m)).map(Entry::Table)
                }
            }
            d.deserialize_any(V)
        }
    }

    /// Entry `n` (from 1) as a token.
    fn token(n: usize, e: Entry) -> Result<ApiToken, String> {
        let text = match e {
            Entry::Table(t) => return Ok(ApiToken::new(&t.name, t.role, &t.secret)),
            Entry::Text(text) => text,
        };
        if !text.contains(':') {
            return Ok(ApiToken {
                name: format!("token-{n}"),
                role: ApiRole::Operate,
                secret: text,
                legacy: true,
            });
        }
        let mut parts = text.splitn(3, ':');
        let (Some(name), Some(role), Some(secret)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!(
                "api.tokens entry {n}: expected `name:role:secret` (or a plain secret without `:`)"
            ));
        };
        let role = role
            .parse()
            .map_err(|e| format!("api.tokens entry {n} (`{name}`): {e}"))?;
        Ok(ApiToken::new(name, role, secret))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ApiToken>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Vec<ApiToken>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of tokens")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(e) = seq.next_element::<Entry>()? {
                    out.push(token(out.len() + 1, e).map_err(de::Error::custom)?);
                }
                Ok(out)
            }
        }
        d.deserialize_seq(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_tokens_never_show_in_debug_output() {
        let api = ApiSettings {
            listen: "127.0.0.1:8080".into(),
            tokens: vec![ApiToken::new("ops-ann", ApiRole::Operate, "s3cret")],
        };
        let shown = format!("{api:?}");
        assert!(
            !shown.contains("s3cret") && shown.contains("ops-ann") && shown.contains("redacted"),
            "{shown}"
        );
    }

    fn tokens_from_toml(toml: &str) -> Result<Vec<ApiToken>, String> {
        #[derive(Deserialize)]
        struct Api {
            #[serde(deserialize_with = "api_tokens::deserialize")]
            tokens: Vec<ApiToken>,
        }
        #[derive(Deserialize)]
        struct Doc {
            api: Api,
        }
        let c = config::Config::builder()
            .add_source(config::File::from_str(toml, config::FileFormat::Toml))
            .build()
            .map_err(|e| e.to_string())?;
        c.try_deserialize::<Doc>()
            .map(|d| d.api.tokens)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn tokens_are_tables_name_role_secret_strings_or_plain_secrets() {
        let t = tokens_from_toml(
            r#"
            [[api.tokens]]
            name = "ops-ann"
            role = "operate"
            secret = "a"
            [[api.tokens]]
            name = "keda"
            role = "scaling"
            secret = "b"
            "#,
        )
        .unwrap();
        assert_eq!(
            t,
            vec![
                ApiToken::new("ops-ann", ApiRole::Operate, "a"),
                ApiToken::new("keda", ApiRole::Scaling, "b")
            ]
        );
        // The environment form and the deprecated plain form, mixed.
        let t = tokens_from_toml(r#"api = { tokens = ["dash:read:x:y", "0ld", "t3"] }"#).unwrap();
        assert_eq!(t[0], ApiToken::new("dash", ApiRole::Read, "x:y"));
        assert_eq!(
            (t[1].name.as_str(), t[1].role, t[1].legacy),
            ("token-2", ApiRole::Operate, true)
        );
        assert_eq!(
            (t[2].name.as_str(), t[2].secret.as_str()),
            ("token-3", "t3")
        );
        let e = tokens_from_toml(r#"api = { tokens = ["ann:admin:x"] }"#).unwrap_err();
        assert!(e.contains("unknown role `admin`"), "{e}");
        let e = tokens_from_toml(r#"api = { tokens = ["ann:read"] }"#).unwrap_err();
        assert!(e.contains("expected `name:role:secret`"), "{e}");
        let table = "[[api.tokens]]\nname = \"a\"\nrole = \"root\"\nsecret = \"x\"";
        let e = tokens_from_toml(table).unwrap_err();
        assert!(e.contains("root"), "{e}");
    }

    #[test]
    fn roles_grant_their_routes_and_those_below() {
        use ApiRole::*;
        assert!(Operate.grants(Operate) && Operate.grants(Read) && Operate.grants(Scaling));
        assert!(!Read.grants(Operate) && Read.grants(Read) && Read.grants(Scaling));
        assert!(!Scaling.grants(Operate) && !Scaling.grants(Read) && Scaling.grants(Scaling));
        for r in ApiRole::ALL {
            assert_eq!(r.as_str().parse::<ApiRole>(), Ok(r));
        }
    }
}
