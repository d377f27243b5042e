//! The middleware around every request.
//!
//! It gives the request an id and a span, authenticates a request that has a body before
//! reading it, reads the body whole under the route's size limit and the body timeout, and
//! makes every 5xx body opaque, logging the real cause with the request id.
//!
//! Invariants: a body over its route's limit is never buffered past the limit; an anonymous
//! client never makes the server buffer a body; every response carries `x-request-id`. A
//! refused body (413, 401) is answered at once with `Connection: close`, then the rest of it
//! is read and discarded ([`drain_after_answer`]) within a bound: [`REFUSED_BODY_DRAIN_FACTOR`]
//! times the route's limit and [`ApiConfig::refused_body_drain`] of time. Closing with a body
//! unread would make the kernel reset the connection, and a client that writes its whole
//! body before it reads (urllib, many SDKs) would get a broken pipe instead of the answer. A
//! client that waits for `100 Continue` is never asked to send, so nothing is drained; nor is
//! a body that stalled (408) or broke (400).
//!
//! [`ApiConfig::refused_body_drain`]: super::ApiConfig::refused_body_drain

use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{Extensions, HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use tracing::Instrument;

use super::REFUSED_BODY_DRAIN_FACTOR;
use super::auth::{Authenticated, authenticate};
use super::error::{ApiError, ErrorBody, ErrorResponse, Opaque};
use super::extract::DepthLimit;
use super::router::{AppState, BATCH_PATH, PUBLIC_PATHS};
use super::routes::transforms;
use super::server::AfterAnswer;

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
            Err(refusal) => {
                let mut r = refusal.error.into_response();
                // The body is not read to its end: the connection cannot be reused.
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                if let Some(rest) = refusal.rest {
                    let budget = (REFUSED_BODY_DRAIN_FACTOR * body_limit(&state, &parts))
                        .saturating_sub(refusal.read);
                    drain_after_answer(
                        &parts.extensions,
                        rest,
                        budget,
                        state.cfg.refused_body_drain,
                    )
                    .await;
                }
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

/// A body refused before it was read whole: the answer, and what to drain after it.
struct Refusal {
    error: ApiError,
    /// The unread rest of the body, when it should be drained.
    rest: Option<Body>,
    /// Bytes of it read already.
    read: usize,
}

impl Refusal {
    /// A refusal before any of the body was read. A client that sent `Expect: 100-continue`
    /// was never told to send its body, so there is nothing to drain.
    fn unread(error: ApiError, parts: &Parts, body: Body) -> Refusal {
        Refusal {
            error,
            rest: (!waits_for_continue(&parts.headers)).then_some(body),
            read: 0,
        }
    }

    /// A refusal after which nothing more is read.
    fn closing(error: ApiError) -> Refusal {
        Refusal {
            error,
            rest: None,
            read: 0,
        }
    }
}

/// Whether the client sent `Expect: 100-continue`: it sends its body only once told to, which
/// hyper does when the body is first read.
pub(super) fn waits_for_continue(headers: &HeaderMap) -> bool {
    headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// Reads the request's body; on a route that needs a key, only for a caller with a valid one
/// (remembered in the request's extensions for [`Auth`](super::auth::Auth)).
async fn read(state: &AppState, parts: &mut Parts, body: Body) -> Result<Bytes, Refusal> {
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
        Err(e) => Err(Refusal::unread(e, parts, body)),
    }
}

async fn read_body(
    parts: &Parts,
    mut body: Body,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, Refusal> {
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
        return Err(Refusal::unread(too_large(), parts, body));
    }
    // At most `limit`: the declared length is the client's word.
    let mut buf = Vec::with_capacity(declared.map_or(0, |n| n as usize).min(limit));
    let collect = async {
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame?.into_data() else {
                continue; // trailers
            };
            if buf.len() + data.len() > limit {
                return Ok(false);
            }
            buf.extend_from_slice(&data);
        }
        Ok::<bool, axum::Error>(true)
    };
    match tokio::time::timeout(timeout, collect).await {
        Ok(Ok(true)) => Ok(Bytes::from(buf)),
        Ok(Ok(false)) => Err(Refusal {
            error: too_large(),
            read: buf.len(),
            rest: Some(body),
        }),
        Ok(Err(e)) => Err(Refusal::closing(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("could not read the body: {e}"),
        ))),
        Err(_) => Err(Refusal::closing(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!("the body did not arrive within {} s", timeout.as_secs_f64()),
        ))),
    }
}

/// Reads and discards up to `budget` more bytes of a refused `body`, for at most `within`.
/// Under our own server ([`AfterAnswer`] in the request's extensions) this happens after the
/// answer is handed to hyper, which writes it while the body is still coming; elsewhere (a
/// router called directly) it happens before the answer, which is still better than a reset.
pub(super) async fn drain_after_answer(
    extensions: &Extensions,
    body: Body,
    budget: usize,
    within: Duration,
) {
    let work = Box::pin(drain(body, budget, within).instrument(tracing::Span::current()));
    let left = match extensions.get::<AfterAnswer>() {
        Some(after) => after.hand_over(work).err(),
        None => Some(work as super::server::Work),
    };
    if let Some(work) = left {
        work.await;
    }
}

async fn drain(mut body: Body, budget: usize, within: Duration) {
    let mut drained = 0usize;
    let read = async {
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                return "the body broke off";
            };
            drained += frame.data_ref().map_or(0, Bytes::len);
            if drained > budget {
                return "over the drain bound";
            }
        }
        "read to its end"
    };
    let outcome = tokio::time::timeout(within, read)
        .await
        .unwrap_or("out of drain time");
    tracing::debug!(drained, outcome, "refused body drained");
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
