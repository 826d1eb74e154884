//! Every route of the API, and the OpenAPI paths generated from them.
//!
//! A documented route is registered only through `routes!`, which reads the method
//! and the path from the handler's `#[utoipa::path]` and adds both the axum route and
//! the OpenAPI operation: a route cannot be served without its entry in
//! `/api/openapi.json`, nor an entry exist without its route. Handlers under `/api`
//! write their path relative to it (`path = "/sagas"`). The only routes outside the
//! document are the dashboard's static files, merged below as a plain router.

use axum::http::Method;
use axum::Router;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{auth, dashboard, dead_letters, metrics, openapi, operator, probes, purge, queues};
use super::{overview, sagas, schedules, versions, ApiState};
use crate::config::ApiRole::{self, Operate, Read, Scaling};

/// Who may call what: the role each `/api` route needs, in one place. A token's role
/// grants its own routes and those of the roles below it (`operate` > `read` >
/// `scaling`; [`ApiRole::grants`]). `HEAD` is `GET`. A route missing here is refused
/// to every token (a unit test checks that each documented route has exactly one
/// entry). Without tokens every route is open on loopback ([`auth`]).
const ROLES: &[(&str, ApiRole)] = &[
    ("GET /api/sagas", Read),
    ("POST /api/sagas", Operate),
    ("GET /api/sagas/{id}", Read),
    ("GET /api/sagas/{id}/history", Read),
    ("POST /api/sagas/{id}/signal", Operate),
    ("POST /api/sagas/{id}/cancel", Operate),
    ("POST /api/sagas/{id}/actions", Operate),
    ("POST /api/sagas/actions", Operate),
    ("POST /api/sagas/purge", Operate),
    ("GET /api/dead-letters", Read),
    ("POST /api/dead-letters/{queue}/replay", Operate),
    ("POST /api/dead-letters/{queue}/purge", Operate),
    ("GET /api/schedules", Read),
    ("POST /api/schedules/{name}/{op}", Operate),
    ("GET /api/queues", Read),
    ("GET /api/scaling", Scaling),
    ("GET /api/versions", Read),
    ("GET /api/overview", Read),
    ("GET /api/openapi.json", Read),
];

/// The role `method` on the route `path` (as routed: `/api/sagas/{id}`) needs.
pub fn required_role(method: &Method, path: &str) -> Option<ApiRole> {
    let method = if method == Method::HEAD {
        &Method::GET
    } else {
        method
    };
    let route = format!("{method} {path}");
    ROLES
        .iter()
        .find(|(r, _)| *r == route)
        .map(|(_, role)| *role)
}

/// The documented routes, with `secure` applied to the `/api` ones only.
fn documented(
    secure: impl FnOnce(OpenApiRouter<ApiState>) -> OpenApiRouter<ApiState>,
) -> OpenApiRouter<ApiState> {
    let api = OpenApiRouter::default()
        .routes(routes!(sagas::start, sagas::list))
        .routes(routes!(sagas::show))
        .routes(routes!(sagas::history))
        .routes(routes!(sagas::signal))
        .routes(routes!(sagas::cancel))
        .routes(routes!(operator::saga_action))
        .routes(routes!(operator::bulk_action))
        .routes(routes!(purge::purge_sagas))
        .routes(routes!(dead_letters::dead_letters))
        .routes(routes!(dead_letters::replay))
        .routes(routes!(dead_letters::purge))
        .routes(routes!(schedules::list_schedules))
        .routes(routes!(schedules::schedule_op))
        .routes(routes!(queues::queues))
        .routes(routes!(queues::scaling))
        .routes(routes!(versions::versions))
        .routes(routes!(overview::overview))
        .routes(routes!(openapi::serve));
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(probes::healthz))
        .routes(routes!(probes::readyz))
        .routes(routes!(metrics::serve))
        .nest("/api", secure(api))
}

/// The OpenAPI document of [`router`]: the same routes, without the layers. Each
/// `/api` operation says the role it needs (`x-sagaflow-role`, and in its description).
pub(super) fn document() -> utoipa::openapi::OpenApi {
    let mut doc = documented(|api| api).into_openapi();
    for (path, item) in doc.paths.paths.iter_mut() {
        let ops = [
            (Method::GET, item.get.as_mut()),
            (Method::POST, item.post.as_mut()),
        ];
        for (method, op) in ops {
            let (Some(op), Some(role)) = (op, required_role(&method, path)) else {
                continue;
            };
            op.extensions
                .get_or_insert_with(Default::default)
                .insert("x-sagaflow-role".into(), role.as_str().into());
            let needs =
                format!("Needs a token of role `{role}` (or above) when `api.tokens` is set.");
            op.description = Some(match op.description.take() {
                Some(d) if !d.is_empty() => format!("{d}\n\n{needs}"),
                _ => needs,
            });
        }
    }
    doc
}

/// All routes: `/api/*` behind the token and role check ([`ROLES`]) and the body
/// limit; probes, metrics and the dashboard's static files outside it. Without tokens,
/// every route answers loopback host names only ([`auth`]).
pub fn router(state: ApiState) -> Router {
    let limit = state.limits.message_bytes;
    let secure = |api: OpenApiRouter<ApiState>| {
        api.route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authorize,
        ))
        // Request bodies are read up to `limits.message_bytes` (not axum's 2 MB).
        .layer(axum::extract::DefaultBodyLimit::max(limit))
    };
    let (routes, _) = documented(secure).split_for_parts();
    routes
        .merge(dashboard::routes())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::loopback_host,
        ))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;
    use std::time::Duration;

    use serde_json::{json, Value};

    use super::*;
    use crate::api::BrokerLink;
    use crate::broker::Names;
    use crate::config::Limits;
    use crate::saga::definition::Catalog;

    fn doc() -> Value {
        serde_json::to_value(document()).unwrap()
    }

    /// `(method, path)` of every documented operation.
    fn operations(doc: &Value) -> Vec<(String, String)> {
        let mut out = vec![];
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                out.push((method.clone(), path.clone()));
            }
        }
        out
    }

    /// A state whose Postgres and RabbitMQ refuse at once: every handler that needs
    /// them answers 503 quickly, which still shows the route is there.
    fn unconnected_state() -> ApiState {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .acquire_timeout(Duration::from_millis(100))
            .connect_lazy("postgres://postgres@127.0.0.1:1/none")
            .unwrap();
        ApiState {
            pool,
            catalog: Arc::new(Catalog::new()),
            names: Names::new("routes-test"),
            tokens: Arc::new(vec![]),
            broker: Arc::new(BrokerLink::new("amqp://127.0.0.1:1/%2f", "routes-test")),
            limits: Limits::default(),
        }
    }

    #[test]
    fn probes_are_open_and_the_api_needs_the_token() {
        let doc = doc();
        let paths = &doc["paths"];
        for probe in ["/healthz", "/readyz", "/metrics"] {
            assert_eq!(paths[probe]["get"]["security"], json!([{}]), "{probe}");
        }
        assert_eq!(doc["security"], json!([{"bearer": []}]));
        for (method, path) in operations(&doc)
            .iter()
            .filter(|(_, p)| p.starts_with("/api/"))
        {
            assert!(
                paths[path][method].get("security").is_none(),
                "{method} {path} must not override the bearer requirement"
            );
        }
    }

    /// Every documented `/api` operation has exactly one role in [`ROLES`], and every
    /// entry of the table is a documented operation (none is stale).
    #[test]
    fn every_api_route_has_a_role() {
        let doc = doc();
        let api: Vec<String> = operations(&doc)
            .into_iter()
            .filter(|(_, p)| p.starts_with("/api/"))
            .map(|(m, p)| format!("{} {p}", m.to_uppercase()))
            .collect();
        assert!(api.len() >= 16, "{api:?}");
        for route in &api {
            let n = ROLES.iter().filter(|(r, _)| r == route).count();
            assert_eq!(n, 1, "{route}: {n} entries in ROLES (expected one)");
            let (m, p) = route.split_once(' ').unwrap();
            let role = required_role(&m.parse().unwrap(), p).unwrap();
            assert_eq!(
                doc["paths"][p][m.to_lowercase()]["x-sagaflow-role"],
                role.as_str(),
                "{route}"
            );
        }
        for (route, _) in ROLES {
            assert!(
                api.contains(&route.to_string()),
                "{route} in ROLES is not a route"
            );
        }
        // Reads are `read` (the scaling signal `scaling`), changes `operate`.
        for (route, role) in ROLES {
            let expected = match *route {
                "GET /api/scaling" => Scaling,
                r if r.starts_with("GET ") => Read,
                _ => Operate,
            };
            assert_eq!(*role, expected, "{route}");
        }
        assert_eq!(required_role(&Method::HEAD, "/api/sagas"), Some(Read));
        assert_eq!(required_role(&Method::DELETE, "/api/sagas"), None);
    }

    #[test]
    fn the_document_covers_the_api_and_names_each_operation_once() {
        let doc = doc();
        let ops = operations(&doc);
        // The generated document is not empty by accident (one per handler module).
        for p in [
            "/api/sagas",
            "/api/sagas/{id}/actions",
            "/api/dead-letters",
            "/api/schedules",
            "/api/queues",
            "/api/openapi.json",
        ] {
            assert!(doc["paths"].get(p).is_some(), "{p} missing");
        }
        let ids: Vec<&str> = ops
            .iter()
            .map(|(m, p)| doc["paths"][p][m]["operationId"].as_str().unwrap())
            .collect();
        let unique: HashSet<&str> = ids.iter().copied().collect();
        assert_eq!(unique.len(), ids.len(), "duplicate operationId in {ids:?}");
    }

    /// The other direction: nothing in `src/api` registers a route behind the
    /// document's back (axum's `.route`, `.route_service`, `.nest_service`), except the
    /// dashboard's static files.
    #[test]
    fn no_route_is_added_outside_the_document() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api");
        let plain = [".route", ".nest_service", ".route_service"].map(|m| format!("{m}("));
        let mut files = vec![dir.clone()];
        while let Some(path) = files.pop() {
            if path.is_dir() {
                files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") || path.ends_with("dashboard/mod.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for call in &plain {
                assert!(
                    !text.contains(call.as_str()),
                    "{} calls `{call}`: register the handler with `routes!` in routes.rs",
                    path.display()
                );
            }
        }
    }

    #[tokio::test]
    async fn every_documented_operation_is_routed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = router(unconnected_state());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let http = reqwest::Client::new();
        for (method, path) in operations(&doc()) {
            // `{id}` and friends: any value reaches the handler.
            let concrete: Vec<&str> = path
                .split('/')
                .map(|s| if s.starts_with('{') { "x" } else { s })
                .collect();
            let url = format!("{base}{}", concrete.join("/"));
            let request = match method.as_str() {
                "get" => http.get(url),
                "post" => http
                    .post(url)
                    .header(auth::REQUEST_HEADER, "1")
                    .json(&json!({})),
                other => panic!("{other} {path}: no request for this method yet"),
            };
            let answer = request.send().await.unwrap();
            let status = answer.status().as_u16();
            let body = answer.text().await.unwrap();
            // axum's own "no such route" is an empty 404 and "no such method" a 405;
            // a handler's 404 (`saga_not_found`) has a JSON body.
            assert!(
                status != 405 && !(status == 404 && body.is_empty()),
                "{method} {path} is documented but not routed ({status})"
            );
        }
    }
}
