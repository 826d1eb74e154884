//! The web dashboard at `/`: one static page, its script and its stylesheet,
//! embedded in the binary (no Node toolchain, no build step). The page calls the
//! JSON API under `/api` with `fetch`; the static files need no token (the page
//! asks for one when the API answers 401 and keeps it in `sessionStorage`).
//!
//! Every asset is sent with a Content-Security-Policy that allows only this origin's
//! script, stylesheet and API (no inline script, no `eval`, no other origin) and
//! forbids framing (`frame-ancestors 'none'`, and `X-Frame-Options: DENY` for older
//! browsers), so the page's buttons cannot be clickjacked from another site.

use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

const INDEX: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const HISTORY_JS: &str = include_str!("history.js");
const TIMELINE_JS: &str = include_str!("timeline.js");
const OVERVIEW_JS: &str = include_str!("overview.js");
const STYLE: &str = include_str!("style.css");

/// `GET /`, `/app.js`, `/history.js` (a saga's history, paged), `/timeline.js` (a
/// saga's Gantt chart), `/overview.js` (the home page), `/style.css`.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| asset("text/html; charset=utf-8", INDEX)))
        .route(
            "/app.js",
            get(|| asset("text/javascript; charset=utf-8", APP_JS)),
        )
        .route(
            "/history.js",
            get(|| asset("text/javascript; charset=utf-8", HISTORY_JS)),
        )
        .route(
            "/timeline.js",
            get(|| asset("text/javascript; charset=utf-8", TIMELINE_JS)),
        )
        .route(
            "/overview.js",
            get(|| asset("text/javascript; charset=utf-8", OVERVIEW_JS)),
        )
        .route(
            "/style.css",
            get(|| asset("text/css; charset=utf-8", STYLE)),
        )
}

/// The dashboard's Content-Security-Policy.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; \
    frame-ancestors 'none'";

async fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (CONTENT_TYPE, content_type),
            (CACHE_CONTROL, "no-cache"),
            (CONTENT_SECURITY_POLICY, CSP),
            (X_FRAME_OPTIONS, "DENY"),
            (X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_references_its_assets() {
        assert!(INDEX.contains("/app.js") && INDEX.contains("/style.css"));
        // The others first: app.js calls them as soon as it runs.
        let app = INDEX.find("/app.js");
        for script in ["/history.js", "/timeline.js", "/overview.js"] {
            let at = INDEX.find(script);
            assert!(at.is_some() && at < app, "{script} before app.js");
        }
        assert!(APP_JS.contains("Authorization"));
        assert!(APP_JS.contains("\"X-Sagaflow-Request\": \"1\""));
    }

    /// The policy allows no inline script or style: the page has none.
    #[test]
    fn the_page_needs_nothing_the_policy_forbids() {
        assert!(!INDEX.contains("<script>") && !INDEX.contains("style="));
        assert_eq!(
            INDEX.matches("<script").count(),
            4,
            "only /history.js, /timeline.js, /overview.js and /app.js"
        );
        assert!(!INDEX.contains("<style"));
        for forbidden in [
            "eval(",
            "new Function",
            ".innerHTML",
            "style=",
            "http://",
            "https://",
        ] {
            for (name, js) in [
                ("app.js", APP_JS),
                ("history.js", HISTORY_JS),
                ("timeline.js", TIMELINE_JS),
                ("overview.js", OVERVIEW_JS),
            ] {
                // The SVG namespace is a name, not something loaded.
                let js = js.replace("\"http://www.w3.org/2000/svg\"", "");
                assert!(!js.contains(forbidden), "{name} uses {forbidden}");
            }
        }
        assert!(!STYLE.contains("url("), "style.css loads {STYLE}");
        assert!(CSP.contains("frame-ancestors 'none'") && !CSP.contains("unsafe"));
    }
}
