//! Who may call the API, and what they may call.
//!
//! **With tokens** (`api.tokens`), `/api/*` needs `Authorization: Bearer <secret>`: no
//! or an unknown secret is a 401; a token whose role does not grant the route is a 403
//! naming the role the route needs (the table in [`super::routes`]). The token's name
//! is the request's [`Actor`].
//!
//! **Without tokens** the server only listens on loopback, so an unauthenticated API is
//! never exposed on a network by accident. A browser on the same machine could still
//! be made to call it by another site, so two more rules hold then:
//! - every request must name a loopback host (`Host: localhost`, `127.0.0.1` or
//!   `[::1]`, any port): a page of another site whose name was made to resolve to
//!   127.0.0.1 (DNS rebinding) sends its own name and is refused;
//! - a request that changes something (any method but `GET`, `HEAD`, `OPTIONS`) must
//!   carry [`REQUEST_HEADER`]: a cross-site form cannot set a header, and a cross-site
//!   script that sets one needs a CORS preflight, which this server never grants.

use std::net::SocketAddr;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::{AUTHORIZATION, HOST};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

use super::{ApiError, ApiState};
use crate::config::ApiToken;

/// The header a mutation needs without tokens (`X-Sagaflow-Request: 1`); the
/// dashboard sends it.
pub const REQUEST_HEADER: &str = "x-sagaflow-request";

/// The actor of requests to an API without tokens.
pub const LOOPBACK_ACTOR: &str = "api:loopback";

/// Who made a request: the name of its token, or [`LOOPBACK_ACTOR`]. Recorded in the
/// history of the sagas its operator actions touch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor(pub String);

/// The loopback rule: no tokens means loopback addresses only.
pub fn check_listen(addr: SocketAddr, tokens: &[ApiToken]) -> Result<(), ApiError> {
    if tokens.is_empty() && !addr.ip().is_loopback() {
        return Err(ApiError::Insecure(addr));
    }
    Ok(())
}

/// Middleware on every route: without tokens, refuses a request for a host that is
/// not a loopback name.
pub async fn loopback_host(
    State(state): State<ApiState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if state.tokens.is_empty() {
        let host = req
            .headers()
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .or_else(|| req.uri().authority().map(|a| a.to_string()))
            .unwrap_or_default();
        if !is_loopback_host(&host) {
            return Err(ApiError::HostNotAllowed(host));
        }
    }
    Ok(next.run(req).await)
}

/// Middleware on `/api/*`: who is calling ([`Actor`]), and whether they may call this
/// route.
pub async fn authorize(
    State(state): State<ApiState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if state.tokens.is_empty() {
        if is_mutation(req.method()) && !req.headers().contains_key(REQUEST_HEADER) {
            return Err(ApiError::RequestHeaderRequired);
        }
        req.extensions_mut().insert(Actor(LOOPBACK_ACTOR.into()));
        return Ok(next.run(req).await);
    }
    let given = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let token = given
        .and_then(|g| find(&state.tokens, g))
        .ok_or(ApiError::Unauthorized)?;
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| req.uri().path().to_string());
    let route = format!("{} {path}", req.method());
    let Some(needed) = super::routes::required_role(req.method(), &path) else {
        return Err(ApiError::NoRole(route));
    };
    if !token.role.grants(needed) {
        return Err(ApiError::Forbidden {
            token: token.name.clone(),
            role: token.role,
            needed,
            route,
        });
    }
    req.extensions_mut().insert(Actor(token.name.clone()));
    Ok(next.run(req).await)
}

/// The token whose secret is `given`. Every secret is compared, in time that depends
/// only on the lengths, so neither a secret nor which token matched can be learnt from
/// response times.
fn find<'a>(tokens: &'a [ApiToken], given: &str) -> Option<&'a ApiToken> {
    let mut found = None;
    for t in tokens {
        if ct_eq(t.secret.as_bytes(), given.as_bytes()) {
            found = Some(t);
        }
    }
    found
}

fn is_mutation(m: &Method) -> bool {
    !matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// `localhost`, `127.0.0.1` or `[::1]`, with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let (name, port, bracketed) = match host.strip_prefix('[') {
        Some(rest) => {
            let Some((ip, after)) = rest.split_once(']') else {
                return false;
            };
            match after.strip_prefix(':') {
                Some(port) => (ip, Some(port), true),
                None if after.is_empty() => (ip, None, true),
                None => return false,
            }
        }
        None => match host.split_once(':') {
            Some((name, port)) => (name, Some(port), false),
            None => (host, None, false),
        },
    };
    let port_ok = port.is_none_or(|p| {
        !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok()
    });
    let name_ok = if bracketed {
        name == "::1"
    } else {
        name.eq_ignore_ascii_case("localhost") || name == "127.0.0.1"
    };
    port_ok && name_ok
}

/// Comparison whose time does not depend on where the inputs differ (only on
/// their length), so a token cannot be guessed byte by byte from response times.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ApiRole;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn without_tokens_only_loopback_is_allowed() {
        assert!(check_listen(addr("127.0.0.1:8080"), &[]).is_ok());
        assert!(check_listen(addr("[::1]:8080"), &[]).is_ok());
        assert!(matches!(
            check_listen(addr("0.0.0.0:8080"), &[]),
            Err(ApiError::Insecure(_))
        ));
        assert!(check_listen(addr("10.0.0.5:80"), &[]).is_err());
        let t = ApiToken::new("ann", ApiRole::Read, "t");
        assert!(check_listen(addr("0.0.0.0:8080"), &[t]).is_ok());
    }

    #[test]
    fn loopback_hosts() {
        for ok in [
            "localhost",
            "localhost:8080",
            "LOCALHOST:1",
            "127.0.0.1",
            "127.0.0.1:8080",
            "[::1]",
            "[::1]:8080",
        ] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in [
            "",
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "127.0.0.2:8080",
            "[::2]:8080",
            "localhost:",
            "localhost:x",
            "[::1]x",
            "10.0.0.1",
        ] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }

    #[test]
    fn a_secret_finds_its_token() {
        let tokens = [
            ApiToken::new("ann", ApiRole::Operate, "s-ann"),
            ApiToken::new("keda", ApiRole::Scaling, "s-keda"),
        ];
        assert_eq!(
            find(&tokens, "s-keda").map(|t| t.name.as_str()),
            Some("keda")
        );
        assert!(find(&tokens, "s-kedb").is_none());
        assert!(find(&tokens, "").is_none());
    }

    #[test]
    fn token_comparison() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"abcd"));
    }
}
