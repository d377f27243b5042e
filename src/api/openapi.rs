//! The OpenAPI document of this API, served at `GET /v1/openapi.json` and committed as
//! `schemas/openapi.json` (a test keeps the two equal).
//!
//! Each handler carries its own `#[utoipa::path]`; a new route is one more line in `paths(...)`
//! here. Handlers have no doc comments on purpose: utoipa would turn them into summaries and
//! change the document.

use axum::Json;
use utoipa::OpenApi;

use super::error::{ErrorBody, ErrorResponse};
use super::routes::{deliveries, events, ops, subscriptions, tenants, transforms};

/// The OpenAPI document of this API (also served at `GET /v1/openapi.json` and committed as
/// `schemas/openapi.json`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

#[utoipa::path(get, path = "/v1/openapi.json", security(()), tag = "ops",
    responses((status = 200, description = "This document", body = Object)))]
pub(crate) async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi())
}

/// The OpenAPI document. The order of `paths(...)` is the order of the route table as it was
/// first written; the document itself is sorted by path.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "hookline",
        description = "Durable, strictly ordered webhook delivery. Every route but /healthz and \
                       /v1/openapi.json needs `Authorization: Bearer <key>`."
    ),
    paths(
        ops::healthz,
        openapi_json,
        tenants::create_tenant,
        tenants::get_tenant,
        tenants::update_tenant,
        subscriptions::create_subscription,
        subscriptions::list_subscriptions,
        subscriptions::get_subscription,
        subscriptions::update_subscription,
        subscriptions::delete_subscription,
        subscriptions::pause_subscription,
        subscriptions::resume_subscription,
        subscriptions::rotate_secret,
        subscriptions::test_endpoint,
        deliveries::list_deliveries,
        events::publish,
        events::publish_batch,
        deliveries::get_delivery,
        deliveries::resubmit,
        deliveries::skip,
        transforms::list,
        transforms::upload,
        transforms::show,
        transforms::remove,
        transforms::test,
        ops::readyz,
        ops::metrics,
        subscriptions::replay,
    ),
    components(schemas(ErrorResponse, ErrorBody)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The admin key or a tenant's API key"))
                    .build(),
            ),
        );
    }
}
