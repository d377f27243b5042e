//! The publish routes' checks on raw request parts, for the fuzz targets under `fuzz/` (the
//! crate root's hidden fuzz doors call these): not used by the server.
//!
//! Each function runs what its handler runs before the journal, through the same functions:
//! the `ApiJson` extractor's steps (content type, nesting depth, syntax), then the handler's
//! own ([`single_event`], [`batch_events`]), then the engine's validation
//! ([`EventInput::validate`](crate::domain::EventInput), the first step of
//! `EngineHandle::publish` and `publish_batch_items`). Only the journal is left out.

use axum::http::HeaderMap;
use axum::response::IntoResponse;

use super::ApiConfig;
use super::auth::Auth;
use super::error::ApiError;
use super::extract;
use super::routes::events::{batch_events, single_event};
use crate::domain::{Event, Principal};

/// A refusal as the client would read it: the status and the error body's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) status: u16,
    pub(crate) code: String,
    pub(crate) message: String,
    pub(crate) field: Option<String>,
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Refusal {
        let body = e.body();
        Refusal {
            status: e.into_response().status().as_u16(),
            code: body.code,
            message: body.message,
            field: body.field,
        }
    }
}

/// `POST /v1/events` by `caller` with `headers` and `body`, up to the journal.
pub(crate) fn publish(
    caller: Principal,
    headers: &HeaderMap,
    body: &[u8],
    cfg: &ApiConfig,
) -> Result<Event, Refusal> {
    let auth = Auth::of(caller);
    let checked = extract::require_json(headers)
        .and_then(|()| extract::parse(body, cfg.json_max_depth))
        .and_then(|value| single_event(&auth, headers, value))?;
    checked.validate().map_err(|e| ApiError::from(e).into())
}

/// `POST /v1/events/batch` by `caller`, up to the journal: the whole batch's refusal, or one
/// result per item in request order.
pub(crate) fn publish_batch(
    caller: Principal,
    headers: &HeaderMap,
    body: &[u8],
    cfg: &ApiConfig,
) -> Result<Vec<Result<Event, Refusal>>, Refusal> {
    let auth = Auth::of(caller);
    extract::require_json(headers)?;
    let items = batch_events(&auth, body, cfg.json_max_depth, cfg.batch_max_items)?;
    Ok(items
        .into_iter()
        .map(|item| {
            item.and_then(|e| e.validate().map_err(ApiError::from))
                .map_err(Refusal::from)
        })
        .collect())
}
