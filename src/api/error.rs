//! What a refusal looks like on the wire: [`ApiError`] and the JSON body every error answers.
//!
//! A request that does not match the OpenAPI document is refused with 400; one that matches it
//! but that the engine's rules refuse, with 422 (`invalid`).
//!
//! Invariants: every 4xx carries `{"error": {"code", "message", "field"?}}` with a stable
//! machine `code`; a 5xx carries the same shape with a generic message, and its real cause
//! travels to the `guard` in the response's extensions ([`Opaque`]) to be logged under the
//! request id, never sent. 429 and 503 answers carry `Retry-After`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::Error;

/// The body of every refusal.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorResponse {
    pub(super) error: ErrorBody,
}

/// What went wrong: a stable machine code, a message for people, and the field at fault as a
/// JSON pointer or a name when one is. 5xx bodies carry only a generic message and the
/// request id that the real cause is logged under.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ErrorBody {
    pub(super) code: String,
    pub(super) message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) request_id: Option<String>,
}

/// An API refusal: status, machine code, message and optionally the field at fault.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
    /// Seconds a client should wait before retrying (429, 503).
    retry_after: Option<u32>,
    /// For a 5xx: the real cause, logged but never sent.
    cause: Option<String>,
}

/// A 5xx's code, message and cause, for the `guard` to log with the request id and answer with
/// an opaque body.
#[derive(Debug, Clone)]
pub(super) struct Opaque {
    pub(super) code: &'static str,
    pub(super) message: String,
    pub(super) cause: String,
}

/// What every handler returns.
pub(super) type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub(super) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
            cause: None,
        }
    }

    pub(super) fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub(super) fn unauthorized(message: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 400 `invalid`: a request that does not match the OpenAPI document where no schema
    /// check caught it (a query string or a header that does not parse, a body that passed its
    /// schema but not serde).
    pub(super) fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid", message)
    }

    /// 422 `invalid`: a request that matches the document, refused by the engine's own rules
    /// (an address the SSRF rules refuse, a PEM that does not parse, …). A request that passes
    /// the document's schemas never gets 400.
    pub(super) fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
    }

    /// This refusal of one item of a batch, as a refusal of the batch: its field (a JSON
    /// pointer) is prefixed with the item's index.
    pub(super) fn in_item(mut self, index: usize) -> Self {
        let field = format!("/{index}{}", self.field.as_deref().unwrap_or(""));
        self.message = format!("item {index}: {}", self.message);
        self.field = Some(field);
        self
    }

    /// The body this refusal answers with (a batch item carries it too).
    pub(super) fn body(&self) -> ErrorBody {
        ErrorBody {
            code: self.code.into(),
            message: self.message.clone(),
            field: self.field.clone(),
            request_id: None,
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::Invalid { field, message } => {
                ApiError::unprocessable(format!("{field}: {message}")).with_field(field)
            }
            Error::NotFound { kind, id } => ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("{kind} {id} not found"),
            ),
            Error::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            Error::Overloaded => ApiError {
                retry_after: Some(1),
                ..ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "overloaded",
                    "hookline is at capacity; nothing was accepted, retry after the Retry-After delay",
                )
            },
            Error::ShuttingDown => ApiError {
                retry_after: Some(1),
                cause: Some("the engine is shutting down".into()),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "shutting_down",
                    "hookline is shutting down; retry against another instance or later",
                )
            },
            e @ Error::Unavailable { .. } => ApiError {
                retry_after: Some(5),
                cause: Some(crate::error::error_chain(&e)),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the journal is unavailable; nothing was accepted, retry later",
                )
            },
            other => ApiError {
                cause: Some(crate::error::error_chain(&other)),
                ..ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error",
                )
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, Json(ErrorResponse { error: self.body() })).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status.is_server_error() {
            resp.extensions_mut().insert(Opaque {
                code: self.code,
                message: self.message,
                cause: self.cause.unwrap_or_else(|| "(no cause recorded)".into()),
            });
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_errors_map_to_statuses() {
        let cases = [
            (Error::invalid("url", "bad"), 422, "invalid"),
            (Error::not_found("subscription", "sub_x"), 404, "not_found"),
            (Error::Conflict("busy".into()), 409, "conflict"),
            (Error::Overloaded, 429, "overloaded"),
            (Error::ShuttingDown, 503, "shutting_down"),
            (Error::Internal("boom".into()), 500, "internal"),
        ];
        for (e, status, code) in cases {
            let api = ApiError::from(e);
            assert_eq!(api.status.as_u16(), status);
            assert_eq!(api.code, code);
        }
    }

    #[test]
    fn invalid_names_its_field_and_busy_answers_say_when_to_retry() {
        let api = ApiError::from(Error::invalid("url", "must be https"));
        let body = api.body();
        assert_eq!(body.field.as_deref(), Some("url"));
        assert_eq!(body.message, "url: must be https");
        let resp = ApiError::from(Error::Overloaded).into_response();
        assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
        assert!(
            resp.extensions().get::<Opaque>().is_none(),
            "a 4xx is not opaque"
        );
    }

    #[test]
    fn a_5xx_hands_its_cause_to_the_guard() {
        let resp = ApiError::from(Error::Internal("disk on fire".into())).into_response();
        let opaque = resp.extensions().get::<Opaque>().expect("5xx is opaque");
        assert!(opaque.cause.contains("disk on fire"), "{}", opaque.cause);
        assert_eq!(opaque.message, "internal error");
    }
}
