//! The middleware around every request.
//!
//! It gives the request an id and a span, authenticates a request that has a body before
//! reading it, reads the body whole under the route's size limit and the body timeout, and
//! makes every 5xx body opaque, logging the real cause with the request id.
//!
//! Invariants: a body over its route's limit is never read past the limit; an anonymous client
//! never makes the server buffer a body (it is drained and discarded); a refused body closes
//! the connection; every response carries `x-request-id`.

use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Limited};
use tracing::Instrument;

use super::auth::{Authenticated, authenticate};
use super::error::{ApiError, ApiResult, ErrorBody, ErrorResponse, Opaque};
use super::extract::DepthLimit;
use super::router::{AppState, BATCH_PATH, PUBLIC_PATHS};
use super::routes::transforms;

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request id of a request: the caller's `x-request-id` when it is a sane token, else a
/// fresh UUIDv7. Echoed in the response header and in 5xx bodies, and on every log line.
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 128
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().simple().to_string())
}

/// Around every request (see the module docs).
pub(super) async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let id = request_id(req.headers());
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path());
    async move {
        let (mut parts, body) = req.into_parts();
        let mut resp = match read(&state, &mut parts, body).await {
            Ok(bytes) => {
                parts
                    .extensions
                    .insert(DepthLimit(state.cfg.json_max_depth));
                next.run(Request::from_parts(parts, Body::from(bytes)))
                    .await
            }
            Err(e) => {
                let mut r = e.into_response();
                // The rest of the body is not read: the connection cannot be reused.
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                r
            }
        };
        if let Some(opaque) = resp.extensions_mut().remove::<Opaque>() {
            resp = make_opaque(resp, opaque, &id);
        }
        if let Ok(v) = HeaderValue::from_str(&id) {
            resp.headers_mut().insert(X_REQUEST_ID.clone(), v);
        }
        resp
    }
    .instrument(span)
    .await
}

/// The largest body the request's route takes.
fn body_limit(state: &AppState, parts: &Parts) -> usize {
    if parts.uri.path() == BATCH_PATH {
        state.cfg.batch_body_limit
    } else if transforms::is_upload(&parts.method, parts.uri.path()) {
        state.engine.transform_limits().module_bytes
    } else {
        state.cfg.body_limit
    }
}

/// Reads the request's body; on a route that needs a key, only for a caller with a valid one
/// (remembered in the request's extensions for [`Auth`](super::auth::Auth)).
async fn read(state: &AppState, parts: &mut Parts, body: Body) -> ApiResult<Bytes> {
    let limit = body_limit(state, parts);
    let timeout = state.cfg.body_read_timeout;
    // A body is read only for a caller with a valid key, so that anonymous clients cannot
    // make the server buffer up to `limit` per connection.
    let body_to_read = parts.headers.contains_key(header::TRANSFER_ENCODING)
        || parts
            .headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v != "0");
    if !body_to_read || PUBLIC_PATHS.contains(&parts.uri.path()) {
        return read_body(parts, body, limit, timeout).await;
    }
    match authenticate(&parts.headers, &state.engine).await {
        Ok(p) => {
            parts.extensions.insert(Authenticated(p));
            read_body(parts, body, limit, timeout).await
        }
        Err(e) => {
            // Discarded, not kept: a client's body left unread in the socket would turn the
            // close into a reset that can destroy the 401 before the client reads it.
            drain(body, limit, timeout).await;
            Err(e)
        }
    }
}

/// Reads and discards up to `limit` bytes of `body`, for at most `timeout`.
async fn drain(body: Body, limit: usize, timeout: Duration) {
    let mut body = Limited::new(body, limit);
    let _ = tokio::time::timeout(timeout, async {
        while let Some(Ok(_)) = body.frame().await {}
    })
    .await;
}

async fn read_body(parts: &Parts, body: Body, limit: usize, timeout: Duration) -> ApiResult<Bytes> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body exceeds this route's limit of {limit} bytes"),
        )
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(e)) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("could not read the body: {e}"),
        )),
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!("the body did not arrive within {} s", timeout.as_secs_f64()),
        )),
    }
}

/// Logs a 5xx's cause under the request id and answers with its code, generic message and the
/// request id only, keeping the response's other headers (`Retry-After`, …).
fn make_opaque(resp: Response, opaque: Opaque, id: &str) -> Response {
    tracing::error!(status = resp.status().as_u16(), cause = %opaque.cause, "request failed");
    let status = resp.status();
    let (mut parts, _) = resp.into_parts();
    let body = ErrorResponse {
        error: ErrorBody {
            code: opaque.code.into(),
            message: opaque.message,
            field: None,
            request_id: Some(id.to_owned()),
        },
    };
    let mut out = (status, Json(body)).into_response();
    for (name, value) in &std::mem::take(&mut parts.headers) {
        if name != header::CONTENT_LENGTH && name != header::CONTENT_TYPE {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_kept_when_sane() {
        let mut h = HeaderMap::new();
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("abc-123_x.y:z"));
        assert_eq!(request_id(&h), "abc-123_x.y:z");
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("no spaces allowed"));
        let fresh = request_id(&h);
        assert_eq!(fresh.len(), 32, "a fresh UUIDv7, simple form: {fresh}");
        assert!(!request_id(&HeaderMap::new()).is_empty());
    }

    #[test]
    fn an_opaque_answer_keeps_headers_but_not_the_cause() {
        let mut resp = ApiError::from(crate::error::Error::ShuttingDown).into_response();
        let opaque = resp.extensions_mut().remove::<Opaque>().expect("5xx");
        let out = make_opaque(resp, opaque, "req-1");
        assert_eq!(out.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(out.headers()[header::RETRY_AFTER], "1");
        assert_eq!(out.headers()[header::CONTENT_TYPE], "application/json");
    }
}
