//! One file per resource: its routes and their handlers.
//!
//! Handlers stay short: extract, check what the caller may see (`auth`), call the engine,
//! answer. Rules about the data itself belong to the engine and the domain types, not here.
//! Handlers carry `#[utoipa::path]` and no doc comment (see `openapi`).

use axum::Router;

use super::openapi::openapi_json;
use super::router::AppState;

pub(super) mod cluster;
pub(super) mod deliveries;
pub(super) mod events;
pub(super) mod notifications;
pub mod ops;
pub(super) mod subscriptions;
pub(super) mod tenants;
pub(super) mod transforms;

#[cfg(test)]
mod tests;

/// Every route of the API.
pub(super) fn all() -> Router<AppState> {
    Router::new()
        .route("/v1/openapi.json", axum::routing::get(openapi_json))
        .merge(ops::routes())
        .merge(tenants::routes())
        .merge(notifications::routes())
        .merge(subscriptions::routes())
        .merge(events::routes())
        .merge(deliveries::routes())
        .merge(transforms::routes())
        .merge(cluster::routes())
}
