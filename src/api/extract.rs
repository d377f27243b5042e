//! Request bodies and query strings, with every refusal an [`ApiError`].
//!
//! A JSON body is checked in order: content type (415), nesting depth (400, counted before the
//! parser allocates anything), syntax (400), then serde (400 `invalid`). The body's bytes were
//! read by the `guard` under the route's size limit and timeout; the depth limit travels with
//! the request ([`DepthLimit`]) so extractors need no state.

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::ApiConfig;
use super::error::ApiError;

/// A JSON body whose every refusal is an [`ApiError`]: content type (415), nesting depth and
/// syntax (400), then serde's typed parse (400 `invalid`). Schemas are checked by the handlers
/// that take a [`Value`].
pub(super) struct ApiJson<T>(pub(super) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        require_json(req.headers())?;
        let depth = depth_limit(&req);
        let bytes = body_bytes(req, state).await?;
        let value = parse(&bytes, depth)?;
        serde_json::from_value(value)
            .map(ApiJson)
            .map_err(|e| ApiError::invalid(e.to_string()))
    }
}

/// Query parameters whose rejection is an [`ApiError`].
pub(super) struct ApiQuery<T>(pub(super) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|r: QueryRejection| ApiError::invalid(r.body_text()))
    }
}

/// The JSON nesting limit, handed from the `guard` to the extractors.
#[derive(Debug, Clone, Copy)]
pub(super) struct DepthLimit(pub(super) usize);

/// The nesting limit the `guard` set on `req` (the default when a request did not pass it).
pub(super) fn depth_limit(req: &Request) -> usize {
    req.extensions()
        .get::<DepthLimit>()
        .map_or_else(|| ApiConfig::default().json_max_depth, |d| d.0)
}

/// The bytes of a body the `guard` has already read.
pub(super) async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state)
        .await
        .map_err(|r| ApiError::new(r.status(), "bad_request", r.body_text()))
}

/// Refuses a body whose content type is not JSON (`application/json` or `application/*+json`).
pub(super) fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            let essence = v.split(';').next().unwrap_or_default().trim();
            let essence = essence.to_ascii_lowercase();
            essence == "application/json"
                || (essence.starts_with("application/") && essence.ends_with("+json"))
        })
        .unwrap_or(false);
    if is_json {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected content-type: application/json",
        ))
    }
}

/// Parses a JSON body: nesting depth first (cheap, and before any allocation by the parser),
/// then syntax.
pub(super) fn parse(bytes: &[u8], max_depth: usize) -> Result<Value, ApiError> {
    if let Some(depth) = exceeds_depth(bytes, max_depth) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "nesting_too_deep",
            format!("JSON nesting deeper than {max_depth} levels (found {depth})"),
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("malformed JSON: {e}"),
        )
    })
}

/// The depth reached when it first exceeds `max`, counting arrays and objects outside strings;
/// `None` when the text never nests deeper than `max`. Not a validator: malformed text is left
/// to the parser.
pub(super) fn exceeds_depth(bytes: &[u8], max: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Some(depth);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn depth_counts_outside_strings_only() {
        assert_eq!(exceeds_depth(br#"{"a":[1,{"b":2}]}"#, 3), None);
        assert_eq!(exceeds_depth(br#"{"a":[1,{"b":2}]}"#, 2), Some(3));
        assert_eq!(exceeds_depth(br#"{"a":"[[[[[[\"[[[["}"#, 1), None);
        let deep = "[".repeat(65) + &"]".repeat(65);
        assert_eq!(exceeds_depth(deep.as_bytes(), 64), Some(65));
        assert_eq!(exceeds_depth(deep.as_bytes(), 65), None);
    }

    #[test]
    fn json_content_types() {
        let with = |ct: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
            require_json(&h).is_ok()
        };
        assert!(with("application/json"));
        assert!(with("Application/JSON; charset=utf-8"));
        assert!(with("application/cloudevents+json"));
        assert!(!with("text/plain"));
        assert!(require_json(&HeaderMap::new()).is_err());
    }
}
