//! The OpenAPI document, generated from the handlers' annotations and types so it
//! cannot drift from the code.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{dead_letters, error, metrics, operator, probes, queues, sagas, schedules};

#[derive(OpenApi)]
#[openapi(
    info(title = "sagaflow operator API", description = "Sagas, queues, dead letters and the scaling signal. `/api/*` needs `Authorization: Bearer <token>` when `api.tokens` is set."),
    paths(
        sagas::start, sagas::list, sagas::show, sagas::history, sagas::signal, sagas::cancel,
        operator::saga_action, operator::bulk_action,
        dead_letters::dead_letters, dead_letters::replay, dead_letters::purge,
        schedules::list_schedules, schedules::schedule_op,
        probes::healthz, probes::readyz, queues::queues, queues::scaling,
        metrics::serve, serve
    ),
    components(schemas(error::ErrorBody, error::ErrorDetail)),
    modifiers(&Bearer),
    security(("bearer" = []))
)]
pub struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let scheme =
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build());
        doc.components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", scheme);
    }
}

#[utoipa::path(get, path = "/api/openapi.json", responses((status = 200, description = "This document")))]
pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_every_route_and_leaves_probes_open() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for p in [
            "/healthz",
            "/readyz",
            "/metrics",
            "/api/sagas",
            "/api/sagas/{id}",
            "/api/sagas/{id}/history",
            "/api/sagas/{id}/signal",
            "/api/sagas/{id}/cancel",
            "/api/sagas/{id}/actions",
            "/api/sagas/actions",
            "/api/dead-letters/{queue}/replay",
            "/api/dead-letters/{queue}/purge",
            "/api/schedules",
            "/api/schedules/{name}/{op}",
            "/api/queues",
            "/api/dead-letters",
            "/api/scaling",
            "/api/openapi.json",
        ] {
            assert!(paths.contains_key(p), "{p} missing");
        }
        assert_eq!(
            paths["/healthz"]["get"]["security"],
            serde_json::json!([{}])
        );
        assert!(paths["/api/sagas"]["get"].get("security").is_none());
    }
}
