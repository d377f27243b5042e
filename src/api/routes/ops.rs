//! Operator routes and the start-up gate.
//!
//! - `GET /healthz`: a pure liveness check, 200 whenever the process answers.
//! - `GET /readyz`: 200 `{"status":"ready"}` once the engine runs (journal recovery is over),
//!   503 while it starts ([`StartGate`]), once it is shutting down, and while the journal cannot
//!   write (`{"status":"journal_unwritable","reason":"disk_full"}`).
//! - `GET /metrics`: the engine's metrics (OpenMetrics text, which Prometheus reads). It needs
//!   the admin key unless the engine's metrics settings open it (`metrics.auth = "none"`).
//!
//! A subscription's replay (`POST /v1/subscriptions/{id}/replay`), an operator's action too,
//! lives with the other subscription routes.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::api::auth::Auth;
use crate::api::error::{ApiResult, ErrorResponse};
use crate::api::router::AppState;
use crate::engine::EngineHandle;

pub use crate::api::gate::StartGate;

/// The content type of the metrics exposition.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `/healthz` and `/readyz` answer `{"status": …}`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // only its schema is used: the handlers write the JSON directly
pub(in crate::api) struct Readiness {
    /// `ok` (healthz); `ready`, `starting`, `shutting_down` or `journal_unwritable` (readyz).
    #[schema(pattern = "^(ok|ready|starting|shutting_down|journal_unwritable)$")]
    status: String,
    /// With `journal_unwritable`: why its last commit failed (`disk_full`, `io_error`,
    /// `read_only`). Publishing resumes by itself once it writes again.
    #[schema(nullable = false)]
    reason: Option<String>,
}

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

#[utoipa::path(get, path = "/healthz", security(()), tag = "ops",
    responses((status = 200, description = "The process is up", body = Readiness)))]
pub(in crate::api) async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

#[utoipa::path(get, path = "/readyz", tag = "ops", security(()),
    responses((status = 200, description = "Recovery finished: the engine takes work", body = Readiness),
        (status = 503, description = "Starting (journal recovery), stopping, or the journal cannot write (disk full: `reason` says why; it clears by itself)", body = Readiness)))]
pub(in crate::api) async fn readyz(State(engine): State<EngineHandle>) -> Response {
    match engine.not_ready() {
        None => Json(json!({"status": "ready"})).into_response(),
        Some((status, reason)) => {
            let mut body = json!({ "status": status });
            if let Some(r) = reason {
                body["reason"] = r.into();
            }
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
    }
}

#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses((status = 200, description = "The metrics, OpenMetrics text (Prometheus reads it)",
            content_type = "application/openmetrics-text", body = String),
        (status = 403, description = "A tenant key (the metrics need the admin key)", body = ErrorResponse)))]
pub(in crate::api) async fn metrics(
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
