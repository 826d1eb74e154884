//! The web dashboard at `/`: one static page, its script and its stylesheet,
//! embedded in the binary (no Node toolchain, no build step). The page calls the
//! JSON API under `/api` with `fetch`; the static files need no token (the page
//! asks for one when the API answers 401 and keeps it in `sessionStorage`).

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

const INDEX: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const STYLE: &str = include_str!("style.css");

/// `GET /`, `/app.js`, `/style.css`.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| asset("text/html; charset=utf-8", INDEX)))
        .route(
            "/app.js",
            get(|| asset("text/javascript; charset=utf-8", APP_JS)),
        )
        .route(
            "/style.css",
            get(|| asset("text/css; charset=utf-8", STYLE)),
        )
}

async fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, content_type), (CACHE_CONTROL, "no-cache")],
        body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_references_its_assets() {
        assert!(INDEX.contains("/app.js") && INDEX.contains("/style.css"));
        assert!(APP_JS.contains("Authorization"));
    }
}
