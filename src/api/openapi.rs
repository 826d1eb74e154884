//! The OpenAPI document, generated from the handlers' annotations and types so it
//! cannot drift from the code.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{error, metrics, ops, sagas};

#[derive(OpenApi)]
#[openapi(
    info(title = "sagaflow operator API", description = "Sagas, queues, dead letters and the scaling signal. `/api/*` needs `Authorization: Bearer <token>` when `api.tokens` is set."),
    paths(
        sagas::start, sagas::list, sagas::show, sagas::history, sagas::signal, sagas::cancel,
        ops::healthz, ops::readyz, ops::queues, ops::dead_letters, ops::scaling,
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
