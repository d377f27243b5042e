//! The router: every resource's routes, the fallbacks, and the layers around them.
//!
//! Each file of `routes` declares its own routes beside its handlers; this module merges them
//! and wraps them in the `guard`. Unknown paths and methods answer with the API's JSON error
//! body, like every other refusal.

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef};
use axum::http::StatusCode;
use axum::middleware;

use super::ApiConfig;
use super::error::ApiError;
use super::guard::guard;
use super::routes;
use super::schema::SCHEMAS;
use crate::engine::EngineHandle;

/// What every handler can reach: the engine and the API's settings.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(super) engine: EngineHandle,
    pub(super) cfg: Arc<ApiConfig>,
}

impl FromRef<AppState> for EngineHandle {
    fn from_ref(s: &AppState) -> EngineHandle {
        s.engine.clone()
    }
}

/// The path of the batch route, whose body limit differs.
pub(super) const BATCH_PATH: &str = "/v1/events/batch";

/// The routes that need no key.
pub(super) const PUBLIC_PATHS: [&str; 2] = ["/healthz", "/v1/openapi.json"];

/// The API's router with the default [`ApiConfig`].
pub fn router(engine: EngineHandle) -> Router {
    router_with(engine, ApiConfig::default())
}

/// The API's router, ready to serve.
pub fn router_with(engine: EngineHandle, cfg: ApiConfig) -> Router {
    std::sync::LazyLock::force(&SCHEMAS);
    let state = AppState {
        engine,
        cfg: Arc::new(cfg),
    };
    let api = routes::all()
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // `guard` reads every body under its route's limit and timeout, once; the extractors
        // then work on the bytes it read.
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state.clone());
    // The dashboard (`/ui`) answers with pages, not JSON: it is merged after the guard.
    if state.cfg.ui.enabled {
        api.merge(crate::ui::router_with(state.engine, state.cfg.ui.clone()))
    } else {
        api
    }
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}
