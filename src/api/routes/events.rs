//! Publishing: `POST /v1/events` (one event) and `POST /v1/events/batch` (up to
//! `batch_max_items` in one durable commit). Finding: `GET /v1/events?transactionId=…` (or
//! `referenceId`, `eventId`): what happened to a tenant's events everywhere they went.
//!
//! An event passes, in order: the tenant filled in for a tenant key, the `Idempotency-Key` as
//! its id, its JSON Schema, the tenant check (404), serde, then the engine's own rules. A batch
//! must match the document as a whole (1 to `batch_max_items` envelopes, each valid under the
//! event schema: else 400 naming the item); then each item passes the other steps on its own,
//! and an item refused there is reported in its place without stopping the others. How refused and journaled items are put back in order is the
//! engine's ([`EngineHandle::publish_batch_items`]), written once for both callers.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::api::auth::Auth;
use crate::api::error::{ApiError, ApiResult, ErrorBody, ErrorResponse};
use crate::api::extract::ApiQuery;
use crate::api::extract::{self, ApiJson};
use crate::api::router::{AppState, BATCH_PATH};
use crate::api::schema::{self, SCHEMAS};
use crate::domain::{EventId, EventInput, EventKey, EventTrace, PublishReceipt, TenantId};
use crate::engine::EngineHandle;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/events", post(publish).get(find_events))
        .route(BATCH_PATH, post(publish_batch))
}

/// The `Idempotency-Key` header, checked as an event id.
fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = v.to_str().ok().filter(|k| {
        !k.is_empty()
            && k.len() <= 128
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b':'))
    });
    match key {
        Some(k) => Ok(Some(k.to_owned())),
        None => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            "Idempotency-Key must be 1 to 128 characters of ASCII letters, digits, '-', '_' and ':'",
        )
        .with_field("Idempotency-Key")),
    }
}

/// A `POST /v1/events` body (parsed JSON) and its headers to the engine's input type: the
/// `Idempotency-Key`, then [`prepare_event`]. What `publish` checks, shared with `api::fuzz`.
pub(in crate::api) fn single_event(
    auth: &Auth,
    headers: &HeaderMap,
    body: Value,
) -> ApiResult<EventInput> {
    let key = idempotency_key(headers)?;
    prepare_event(auth, body, key.as_deref())
}

/// A `POST /v1/events/batch` body to one engine input (or refusal) per item, in order. What
/// `publish_batch` checks, shared with `api::fuzz`.
pub(in crate::api) fn batch_events(
    auth: &Auth,
    bytes: &[u8],
    max_depth: usize,
    max_items: usize,
) -> ApiResult<Vec<ApiResult<EventInput>>> {
    let items = batch_items(bytes, max_depth, max_items)?;
    // The whole batch must match the document (an array of event envelopes): an item that
    // breaks the event schema refuses the batch, naming it. Items are refused one by one only
    // for what the document cannot say (another tenant, the engine's rules).
    let mut checked = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        checked.push(checked_event(auth, item, None).map_err(|e| e.in_item(index))?);
    }
    Ok(checked
        .into_iter()
        .map(|item| scoped_event(auth, item))
        .collect())
}

/// One event envelope from the wire to the engine's input type: [`checked_event`], then
/// [`scoped_event`].
fn prepare_event(auth: &Auth, body: Value, key: Option<&str>) -> ApiResult<EventInput> {
    scoped_event(auth, checked_event(auth, body, key)?)
}

/// The document's half: tenant filled for tenant keys, the idempotency key as its id, then the
/// event schema (400).
fn checked_event(auth: &Auth, mut body: Value, key: Option<&str>) -> ApiResult<Value> {
    auth.fill_tenant(&mut body);
    if let (Some(key), Value::Object(obj)) = (key, &mut body) {
        match obj.get("id") {
            // Only an absent id: `null` is not an id in the document, key or no key.
            None => {
                obj.insert("id".into(), Value::String(key.to_owned()));
            }
            Some(Value::Null) => {}
            Some(Value::String(id)) if id == key => {}
            Some(_) => {
                // Each matches the document alone: contradicting each other is 422.
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency_key_mismatch",
                    "the body's id and the Idempotency-Key header differ; send one, or both equal",
                )
                .with_field("/id"));
            }
        }
    }
    schema::check(&SCHEMAS.event, &body)?;
    Ok(body)
}

/// The caller's half: the tenant check (404), then serde.
fn scoped_event(auth: &Auth, mut body: Value) -> ApiResult<EventInput> {
    auth.scope_body(&mut body)?;
    schema::deserialize(body)
}

#[utoipa::path(post, path = "/v1/events", tag = "events", request_body = EventInput,
    params(("Idempotency-Key" = Option<String>, Header, pattern = "^[A-Za-z0-9_:-]{1,128}$",
        description = "Used as the event id when the body has none; must equal it otherwise")),
    responses(
        (status = 202, description = "Journaled with its deliveries (or a duplicate of an earlier one)", body = PublishReceipt),
        (status = 404, description = "No such tenant (or another tenant's)", body = ErrorResponse),
        (status = 422, description = "Refused by the engine's rules, or an Idempotency-Key that differs from the body's id", body = ErrorResponse)))]
pub(in crate::api) async fn publish(
    State(engine): State<EngineHandle>,
    auth: Auth,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<impl IntoResponse> {
    let event = single_event(&auth, &headers, body)?;
    let receipt = engine.publish(event).await?;
    Ok((StatusCode::ACCEPTED, Json(receipt)))
}

/// The outcome of one batch item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(in crate::api) enum ItemStatus {
    /// Journaled with its deliveries.
    Accepted,
    /// Its (tenant, id) was published before; nothing new was created.
    Duplicate,
    /// Refused; see `error`. Nothing of it was written.
    Rejected,
}

/// One item's result, in the order of the request.
#[derive(Debug, Serialize, ToSchema)]
pub(in crate::api) struct BatchItem {
    /// The item's position in the request array, from 0.
    index: usize,
    status: ItemStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<EventId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deliveries: Option<u32>,
    /// Why a rejected item was refused; `field` is a JSON pointer inside the item.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorBody>,
}

impl BatchItem {
    fn new(index: usize, outcome: ApiResult<PublishReceipt>) -> Self {
        match outcome {
            Ok(r) => BatchItem {
                index,
                status: if r.duplicate {
                    ItemStatus::Duplicate
                } else {
                    ItemStatus::Accepted
                },
                id: Some(r.id),
                seq: Some(r.seq),
                deliveries: Some(r.deliveries),
                error: None,
            },
            Err(e) => BatchItem {
                index,
                status: ItemStatus::Rejected,
                id: None,
                seq: None,
                deliveries: None,
                error: Some(e.body()),
            },
        }
    }
}

/// The answer to a batch: counts (`accepted` includes duplicates) and one result per item.
#[derive(Debug, Serialize, ToSchema)]
pub(in crate::api) struct BatchResponse {
    accepted: usize,
    rejected: usize,
    results: Vec<BatchItem>,
}

impl BatchResponse {
    fn new(outcomes: Vec<ApiResult<PublishReceipt>>) -> Self {
        let results: Vec<BatchItem> = outcomes
            .into_iter()
            .enumerate()
            .map(|(index, outcome)| BatchItem::new(index, outcome))
            .collect();
        let rejected = results
            .iter()
            .filter(|r| r.status == ItemStatus::Rejected)
            .count();
        BatchResponse {
            accepted: results.len() - rejected,
            rejected,
            results,
        }
    }
}

/// A batch body: a JSON array of 1 to `max` items, each still to be checked on its own.
fn batch_items(bytes: &[u8], max_depth: usize, max: usize) -> ApiResult<Vec<Value>> {
    // The array is one level more than its events.
    let Value::Array(items) = extract::parse(bytes, max_depth + 1)? else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "schema_violation",
            "body: must be a JSON array of event envelopes",
        )
        .with_field(""));
    };
    if items.is_empty() || items.len() > max {
        let status = if items.is_empty() {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::PAYLOAD_TOO_LARGE
        };
        return Err(ApiError::new(
            status,
            "batch_size",
            format!(
                "a batch holds 1 to {max} events; this one has {}",
                items.len()
            ),
        ));
    }
    Ok(items)
}

#[utoipa::path(post, path = "/v1/events/batch", tag = "events",
    request_body(content = Vec<EventInput>, description = "1 to 1000 event envelopes"),
    responses(
        (status = 200, description = "Every valid item journaled in one commit; per-item results", body = BatchResponse),
        (status = 400, description = "Not an array of 1 to 1000 event envelopes (`field` names the item); nothing accepted", body = ErrorResponse),
        (status = 413, description = "Over 1000 items or over the batch body limit; nothing accepted", body = ErrorResponse)))]
pub(in crate::api) async fn publish_batch(
    State(state): State<AppState>,
    auth: Auth,
    req: Request,
) -> ApiResult<Json<BatchResponse>> {
    extract::require_json(req.headers())?;
    let bytes = extract::body_bytes(req, &()).await?;
    let prepared = batch_events(
        &auth,
        &bytes,
        state.cfg.json_max_depth,
        state.cfg.batch_max_items,
    )?;
    let outcomes = if prepared.iter().any(Result::is_ok) {
        state.engine.publish_batch_items(prepared).await?
    } else {
        // Every item was refused here: the engine is not asked, and nothing is committed.
        prepared
            .into_iter()
            .filter_map(Result::err)
            .map(Err)
            .collect()
    };
    Ok(Json(BatchResponse::new(outcomes)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Principal;

    #[test]
    fn idempotency_keys_are_event_ids() {
        let with = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert("idempotency-key", axum::http::HeaderValue::from_static(v));
            idempotency_key(&h)
        };
        assert_eq!(
            with("order-42:1").ok().flatten().as_deref(),
            Some("order-42:1")
        );
        assert!(with("no spaces").is_err());
        assert!(idempotency_key(&HeaderMap::new()).is_ok_and(|k| k.is_none()));
    }

    #[test]
    fn batch_bodies_are_arrays_of_bounded_length() {
        let body = |s: &str| s.as_bytes().to_vec();
        assert_eq!(
            batch_items(&body("[{}, {}]"), 64, 2).map(|v| v.len()).ok(),
            Some(2)
        );
        let over = batch_items(&body("[{}, {}, {}]"), 64, 2).unwrap_err();
        assert_eq!(over.body().code, "batch_size");
        let empty = batch_items(&body("[]"), 64, 2).unwrap_err();
        assert_eq!(empty.body().code, "batch_size");
        let object = batch_items(&body("{}"), 64, 2).unwrap_err();
        assert_eq!(object.body().code, "schema_violation");
    }

    #[test]
    fn a_mismatched_idempotency_key_is_refused() {
        let auth_admin = Auth::of(Principal::Admin);
        let body = serde_json::json!({"id": "a", "tenantId": "acme"});
        let e = prepare_event(&auth_admin, body, Some("b")).unwrap_err();
        assert_eq!(e.body().code, "idempotency_key_mismatch");
        assert_eq!(e.body().field.as_deref(), Some("/id"));
    }

    #[test]
    fn results_keep_the_request_order_and_count_duplicates_as_accepted() {
        let receipt = |dup| PublishReceipt {
            id: EventId::from("e1"),
            seq: 1,
            deliveries: 2,
            duplicate: dup,
        };
        let refused = ApiError::new(StatusCode::BAD_REQUEST, "invalid", "no");
        let r = BatchResponse::new(vec![Ok(receipt(false)), Err(refused), Ok(receipt(true))]);
        assert_eq!((r.accepted, r.rejected), (2, 1));
        let statuses: Vec<_> = r.results.iter().map(|i| (i.index, i.status)).collect();
        assert_eq!(
            statuses,
            [
                (0, ItemStatus::Accepted),
                (1, ItemStatus::Rejected),
                (2, ItemStatus::Duplicate)
            ]
        );
    }
}

/// Which events `GET /v1/events` looks for: one of `transactionId`, `referenceId`, `eventId`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(in crate::api) struct FindEvents {
    /// The envelope's `transactionId`.
    #[param(min_length = 1, max_length = 256)]
    transaction_id: Option<String>,
    /// The envelope's `referenceId`.
    #[param(min_length = 1, max_length = 256)]
    reference_id: Option<String>,
    /// The event's id.
    #[param(min_length = 1, max_length = 256)]
    event_id: Option<String>,
    /// The tenant (required with the admin key; a tenant key's own by default).
    tenant_id: Option<String>,
    /// At most this many events, newest first (1 to 100, default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
}

/// Events with their deliveries.
#[derive(Serialize, ToSchema)]
struct EventTraces {
    items: Vec<EventTrace>,
}

#[utoipa::path(get, path = "/v1/events", tag = "events",
    params(FindEvents),
    responses((status = 200, body = EventTraces),
        (status = 404, description = "No such tenant, or another tenant's", body = ErrorResponse),
        (status = 422, description = "Not exactly one of transactionId, referenceId, eventId; no tenantId with the admin key; a limit out of 1 to 100", body = ErrorResponse)))]
pub(in crate::api) async fn find_events(
    State(engine): State<EngineHandle>,
    auth: Auth,
    ApiQuery(q): ApiQuery<FindEvents>,
) -> ApiResult<impl IntoResponse> {
    let tenant = auth
        .tenant_for(q.tenant_id.as_deref())?
        .map(TenantId::from)
        .ok_or_else(|| {
            ApiError::unprocessable("tenantId: required with the admin key").with_field("tenantId")
        })?;
    let key = EventKey::from_parts(q.transaction_id, q.reference_id, q.event_id)?;
    let items = engine
        .find_events(&tenant, &key, q.limit.unwrap_or(20))
        .await?;
    Ok(Json(EventTraces { items }))
}
