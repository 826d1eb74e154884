//! Who may call the API. With tokens configured, `/api/*` needs
//! `Authorization: Bearer <token>`; without tokens the server only listens on
//! loopback, so an unauthenticated API is never exposed on a network by accident.

use std::net::SocketAddr;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;

use super::{ApiError, ApiState};

/// The loopback rule: no tokens means loopback addresses only.
pub fn check_listen(addr: SocketAddr, tokens: &[String]) -> Result<(), ApiError> {
    if tokens.is_empty() && !addr.ip().is_loopback() {
        return Err(ApiError::Insecure(addr));
    }
    Ok(())
}

/// Middleware on `/api/*`: passes when no tokens are configured or the bearer
/// token matches one of them.
pub async fn require_token(
    State(state): State<ApiState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if state.tokens.is_empty() {
        return Ok(next.run(req).await);
    }
    let given = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(t)
            if state
                .tokens
                .iter()
                .any(|k| ct_eq(k.as_bytes(), t.as_bytes())) =>
        {
            Ok(next.run(req).await)
        }
        _ => Err(ApiError::Unauthorized),
    }
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
        assert!(check_listen(addr("0.0.0.0:8080"), &["t".into()]).is_ok());
    }

    #[test]
    fn token_comparison() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"abcd"));
    }
}
