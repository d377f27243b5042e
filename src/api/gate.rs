//! The start-up gate: the server listens before the engine exists.
//!
//! Orchestrators see a live process (`/healthz` 200) that is not ready (`/readyz` 503) while the
//! journal recovers; every other route answers 503 `unavailable` with `Retry-After: 1`. Once
//! the gate opens, every request goes to the API's router. The accept loop is the API's own,
//! so its connection limit and header read timeout apply while the gate is closed too, and a
//! body sent to a closed gate is drained after the 503 like any refused body (`guard`).

use std::future::Future;
use std::sync::{Arc, OnceLock};

use axum::body::HttpBody as _;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::json;
use tower_service::Service;

use super::error::ApiError;
use super::guard::{drain_after_answer, waits_for_continue};
use super::{ApiConfig, REFUSED_BODY_DRAIN_FACTOR, router_with, server};
use crate::engine::EngineHandle;

/// Lets the server listen before the engine exists, so orchestrators see a live process
/// (`/healthz` 200) that is not ready (`/readyz` 503) while the journal recovers; every other
/// route answers 503 `unavailable` with `Retry-After: 1` until [`open`](StartGate::open).
#[derive(Debug, Clone, Default)]
pub struct StartGate {
    api: Arc<OnceLock<Router>>,
    cfg: ApiConfig,
}

impl StartGate {
    /// A gate serving the API with `cfg`'s limits and timeouts.
    pub fn new(cfg: ApiConfig) -> StartGate {
        StartGate {
            api: Arc::default(),
            cfg,
        }
    }

    /// From now on every request goes to the API of `engine`.
    pub fn open(&self, engine: EngineHandle) {
        let _ = self.api.set(router_with(engine, self.cfg.clone()));
    }

    /// The service to serve: the gate until it opens, the API after.
    pub fn router(&self) -> Router {
        let api = self.api.clone();
        let cfg = self.cfg.clone();
        Router::new().fallback(move |req: Request| {
            let api = api.get().cloned();
            let cfg = cfg.clone();
            async move {
                match api {
                    Some(mut router) => match router.call(req).await {
                        Ok(r) => r,
                        Err(never) => match never {},
                    },
                    None => {
                        let (parts, body) = req.into_parts();
                        let mut r = starting(parts.uri.path());
                        if !body.is_end_stream() && !waits_for_continue(&parts.headers) {
                            r.headers_mut()
                                .insert(header::CONNECTION, HeaderValue::from_static("close"));
                            let budget = REFUSED_BODY_DRAIN_FACTOR * cfg.body_limit;
                            drain_after_answer(
                                &parts.extensions,
                                body,
                                budget,
                                cfg.refused_body_drain,
                            )
                            .await;
                        }
                        r
                    }
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
        server::run(listener, self.router(), &self.cfg, shutdown).await
    }
}

/// The answer of a closed gate.
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    async fn status_of(gate: &StartGate, path: &str) -> (StatusCode, Option<String>) {
        let req = Request::builder()
            .uri(path)
            .body(Body::empty())
            .expect("request");
        let resp = gate.router().call(req).await.expect("infallible");
        let retry = resp
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        (resp.status(), retry)
    }

    #[tokio::test]
    async fn a_closed_gate_is_live_but_not_ready() {
        let gate = StartGate::default();
        assert_eq!(status_of(&gate, "/healthz").await.0, StatusCode::OK);
        assert_eq!(
            status_of(&gate, "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status_of(&gate, "/v1/subscriptions").await,
            (StatusCode::SERVICE_UNAVAILABLE, Some("1".into()))
        );
    }
}
