//! The OpenAPI document: its header here (title, bearer security), its paths generated
//! from the routes themselves ([`super::routes`]), so it cannot drift from the code.

use std::sync::OnceLock;

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::error;

/// The document's header. Paths are not listed here: [`super::routes`] adds each with
/// its route.
#[derive(OpenApi)]
#[openapi(
    info(title = "sagaflow operator API", description = "Sagas, queues, dead letters and the scaling signal. `/api/*` needs `Authorization: Bearer <secret>` of a token whose role grants the operation when `api.tokens` is set; each operation names its role (`x-sagaflow-role`: `read`, `operate` or `scaling`; `operate` > `read` > `scaling`)."),
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

/// The whole document, built once from the routes.
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOC: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOC.get_or_init(super::routes::document)
}

#[utoipa::path(get, path = "/openapi.json", operation_id = "openapi", responses((status = 200, description = "This document")))]
pub async fn serve() -> Json<&'static utoipa::openapi::OpenApi> {
    Json(document())
}
