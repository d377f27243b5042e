//! Operator routes and the start-up gate.
//!
//! - `GET /readyz`: 200 `{"status":"ready"}` once the engine runs (journal recovery is over),
//!   503 while it starts ([`StartGate`]) and once it is shutting down. `GET /healthz` stays a
//!   pure liveness check: 200 whenever the process answers.
//! - `GET /metrics`: the engine's metrics (OpenMetrics text, which Prometheus reads). It needs
//!   the admin key unless the engine's metrics settings open it (`metrics.auth = "none"`).
//! - `POST /v1/subscriptions/{id}/replay {since, until?}`: see [`EngineHandle::replay`].

use std::future::Future;
use std::sync::{Arc, OnceLock};

use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tower_service::Service;

use super::{ApiError, ApiJson, ApiResult, Auth, visible_subscription};
use crate::domain::ReplayWindow;
use crate::engine::EngineHandle;

/// The content type of the metrics exposition.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub(super) fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    EngineHandle: axum::extract::FromRef<S>,
{
    Router::new()
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/subscriptions/{id}/replay", post(replay))
}

#[utoipa::path(get, path = "/readyz", tag = "operations", security(()),
    responses((status = 200, description = "Recovery finished: the engine takes work"),
        (status = 503, description = "Starting (journal recovery) or stopping")))]
pub(super) async fn readyz(State(engine): State<EngineHandle>) -> Response {
    if engine.is_ready() {
        Json(json!({"status": "ready"})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "shutting_down"})),
        )
            .into_response()
    }
}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain"),
        (status = 401, body = super::ErrorResponse)))]
pub(super) async fn metrics(
    State(engine): State<EngineHandle>,
    req: Request,
) -> ApiResult<Response> {
    if engine.config().metrics.require_admin {
        let (mut parts, _) = req.into_parts();
        Auth::from_request_parts(&mut parts, &engine)
            .await?
            .require_admin()?;
    }
    let text = engine.metrics_text().await?;
    Ok(([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], text).into_response())
}

#[utoipa::path(post, path = "/v1/subscriptions/{id}/replay", tag = "subscriptions",
    params(("id" = String, Path)),
    request_body = ReplayWindow,
    responses((status = 200, body = crate::domain::ReplayReceipt),
        (status = 400, body = super::ErrorResponse), (status = 404, body = super::ErrorResponse)))]
pub(super) async fn replay(
    State(engine): State<EngineHandle>,
    auth: Auth,
    Path(id): Path<String>,
    ApiJson(window): ApiJson<ReplayWindow>,
) -> ApiResult<impl IntoResponse> {
    let sub = visible_subscription(&engine, &auth, &id).await?;
    Ok(Json(engine.replay(&sub.id, window).await?))
}

/// Lets the server listen before the engine exists, so orchestrators see a live process
/// (`/healthz` 200) that is not ready (`/readyz` 503) while the journal recovers; every other
/// route answers 503 `unavailable` with `Retry-After: 1` until [`open`](StartGate::open).
#[derive(Debug, Clone, Default)]
pub struct StartGate {
    api: Arc<OnceLock<Router>>,
    cfg: super::ApiConfig,
}

impl StartGate {
    /// A gate serving the API with `cfg`'s limits and timeouts.
    pub fn new(cfg: super::ApiConfig) -> StartGate {
        StartGate {
            api: Arc::default(),
            cfg,
        }
    }

    /// From now on every request goes to the API of `engine`.
    pub fn open(&self, engine: EngineHandle) {
        let _ = self.api.set(super::router_with(engine, self.cfg.clone()));
    }

    /// The service to serve: the gate until it opens, the API after.
    pub fn router(&self) -> Router {
        let api = self.api.clone();
        Router::new().fallback(move |req: Request| {
            let api = api.get().cloned();
            async move {
                match api {
                    Some(mut router) => match router.call(req).await {
                        Ok(r) => r,
                        Err(never) => match never {},
                    },
                    None => starting(req.uri().path()),
                }
            }
        })
    }

    /// Serves the gate on `listener` until `shutdown` resolves (like [`super::serve`]).
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        // The same accept loop as the API alone: connection limit and header read timeout
        // apply while the gate is closed too.
        super::server::run(listener, self.router(), &self.cfg, shutdown).await
    }
}

fn starting(path: &str) -> Response {
    match path {
        "/healthz" => Json(json!({"status": "ok"})).into_response(),
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "starting"})),
        )
            .into_response(),
        _ => {
            let mut r = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "hookline is starting (journal recovery in progress); retry shortly",
            )
            .into_response();
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            r
        }
    }
}
