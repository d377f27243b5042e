//! The HTTP API: a thin axum layer over [`EngineHandle`].
//!
//! JSON in and out (camelCase). Every request but `GET /healthz` and `GET /v1/openapi.json`
//! carries `Authorization: Bearer <key>`: the admin key may do everything, a tenant key only its
//! own tenant's resources; another tenant's resource answers 404, exactly like a missing one, so
//! keys cannot probe for ids. Every refusal is a 4xx with `{"error": {"code", "message",
//! "field"?}}`; 5xx bodies are opaque (a generic message and the request id) and the cause is
//! logged under that request id.
//!
//! Input passes, in order: the connection limit and header read timeout (`server`), the body
//! size limit and body read timeout (`guard`), then content type, JSON nesting depth and syntax
//! (`extract`), the JSON Schema of the route (`schema`), then serde and the engine's own rules.
//! [`serve`] takes its listener and shutdown signal as arguments so tests and the binary drive
//! it the same way.
//!
//! ## Layout
//! | module | owns |
//! |---|---|
//! | `server` | the accept loop: connection limit, header read timeout, graceful shutdown, refused bodies drained after their answer |
//! | `router` | the shared state, the route table assembled from `routes`, the fallbacks |
//! | `guard` | the middleware around every request: request id, body read, opaque 5xx |
//! | `error` | [`ApiError`]: an engine error or a refusal to a status and a JSON body |
//! | `auth` | who the caller is and which tenant's resources it may see |
//! | `extract` | JSON bodies and query strings whose refusals are [`ApiError`]s |
//! | `schema` | the request JSON Schemas, checked before serde |
//! | `openapi` | the OpenAPI document, served and committed as `schemas/openapi.json` |
//! | `routes::*` | one file per resource: its routes and their handlers |
//! | [`ops`] | the operator routes and the [`StartGate`](ops::StartGate) |
//! | `fuzz` | the publish routes' checks on raw request parts, for the fuzz targets only |

mod auth;
mod error;
mod extract;
pub(crate) mod fuzz;
mod gate;
mod guard;
mod openapi;
mod router;
mod routes;
mod schema;
mod server;

use std::future::Future;
use std::time::Duration;

use crate::config::Limits;
use crate::engine::EngineHandle;

pub use error::ApiError;
pub use openapi::openapi;
pub use router::{router, router_with};
pub use routes::ops;

/// The body of `POST /v1/tenants/{id}/portal-link`, whose handler lives with the dashboard:
/// checked against `schemas/portal-link.schema.json` like every API body, then typed.
pub(crate) fn portal_link_body<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
) -> Result<T, ApiError> {
    schema::typed(&schema::SCHEMAS.portal_link, value)
}

/// Default largest request body (an event, a subscription, …): 1 MiB, the default of
/// `limits.maxEventBytes` (a unit test keeps the two equal).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The API's limits and timeouts. Every field has a production default: the server
/// configuration's [`Limits::default`], the one place they are written.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Largest request body on every route but the batch route; larger ones get 413 and are
    /// not read past the limit. Default 1 MiB.
    pub body_limit: usize,
    /// Largest body of `POST /v1/events/batch`. Default 16 MiB.
    pub batch_body_limit: usize,
    /// Most events in one batch; more get 413. Default 1000.
    pub batch_max_items: usize,
    /// Deepest JSON nesting accepted in a body (an event's own levels; a batch's array adds
    /// one). Default 64.
    pub json_max_depth: usize,
    /// Time a client has to send a request's headers; a connection that is slower is closed.
    /// The clock also runs while a keep-alive connection waits for its next request, so this
    /// is the idle timeout of keep-alive connections too. Default 10 s.
    pub header_read_timeout: Duration,
    /// Time a client has to send a request's body, once its headers are in; slower gets 408
    /// and the connection is closed. Default 30 s.
    pub body_read_timeout: Duration,
    /// Most connections open at once; one more is answered 503 and closed. Default 1024.
    pub max_connections: usize,
    /// Time spent reading and discarding the rest of a refused body (413, 401) after the
    /// answer is written, so that a client that sends its whole body before reading (urllib,
    /// many SDKs) reads the answer instead of a reset; at most [`REFUSED_BODY_DRAIN_FACTOR`]
    /// times the route's body limit is read. Default 5 s.
    pub refused_body_drain: Duration,
    /// The dashboard (`/ui`), served beside the API unless `ui.enabled` is false.
    pub ui: crate::ui::UiConfig,
}

/// A refused body is read and discarded up to this many times its route's limit (8 MiB for
/// an event), then the connection is closed (see [`ApiConfig::refused_body_drain`]).
pub const REFUSED_BODY_DRAIN_FACTOR: usize = 8;

impl ApiConfig {
    /// The API settings of a server configuration's `[limits]`.
    pub fn from_limits(l: &Limits) -> ApiConfig {
        ApiConfig {
            body_limit: l.max_event_bytes,
            batch_body_limit: l.max_batch_bytes,
            batch_max_items: l.max_batch_events,
            json_max_depth: l.max_json_depth,
            header_read_timeout: l.header_read_timeout.0,
            body_read_timeout: l.body_read_timeout.0,
            max_connections: l.max_connections,
            refused_body_drain: Duration::from_secs(5),
            ui: crate::ui::UiConfig::default(),
        }
    }
}

impl ApiConfig {
    /// The API settings of a server configuration: its `[limits]` and its `[ui]`.
    pub fn from_server(l: &Limits, ui: &crate::config::server::UiSettings) -> ApiConfig {
        ApiConfig {
            ui: crate::ui::UiConfig::from_settings(ui),
            ..ApiConfig::from_limits(l)
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig::from_limits(&Limits::default())
    }
}

/// Serves the API on `listener` with the default [`ApiConfig`] until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    engine: EngineHandle,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, engine, ApiConfig::default(), shutdown).await
}

/// Serves the API on `listener` until `shutdown` resolves, then stops accepting and lets
/// requests in progress finish. The engine itself is not shut down here.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    engine: EngineHandle,
    cfg: ApiConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router_with(engine, cfg.clone());
    server::run(listener, app, &cfg, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_come_from_the_server_limits() {
        let limits = Limits::default();
        let cfg = ApiConfig::default();
        assert_eq!(MAX_BODY_BYTES, limits.max_event_bytes);
        assert_eq!(cfg.body_limit, MAX_BODY_BYTES);
        assert_eq!(cfg.batch_body_limit, 16 * 1024 * 1024);
        assert_eq!(cfg.batch_max_items, 1000);
        assert_eq!(cfg.json_max_depth, 64);
        assert_eq!(cfg.header_read_timeout, Duration::from_secs(10));
        assert_eq!(cfg.body_read_timeout, Duration::from_secs(30));
        assert_eq!(cfg.max_connections, 1024);
        assert_eq!(cfg.refused_body_drain, Duration::from_secs(5));
    }
}
