//! Deliveries: a subscription's page of them, one with its attempt log, and the operator's
//! resubmit and skip.
//!
//! A delivery is visible to the tenant of its subscription (and the admin); any other caller
//! gets 404, as for a missing id.

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::api::auth::Auth;
use crate::api::error::{ApiError, ApiResult, ErrorResponse};
use crate::api::extract::ApiQuery;
use crate::api::router::AppState;
use crate::domain::{Delivery, DeliveryDetail, DeliveryId, DeliveryPage, DeliveryQuery};
use crate::engine::EngineHandle;
use crate::error::Error;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/subscriptions/{id}/deliveries", get(list_deliveries))
        .route("/v1/deliveries/{id}", get(get_delivery))
        .route("/v1/deliveries/{id}/resubmit", post(resubmit))
        .route("/v1/deliveries/{id}/skip", post(skip))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(in crate::api) struct ListDeliveries {
    /// Only this status: pending, in_flight, delivered, failed, skipped, dropped.
    #[param(value_type = Option<crate::domain::DeliveryStatus>)]
    status: Option<String>,
    /// At most this many (1 to 1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// The cursor of the next page (a previous page's `next`).
    after: Option<String>,
}

#[utoipa::path(get, path = "/v1/subscriptions/{id}/deliveries", tag = "deliveries",
    params(("id" = String, Path), ListDeliveries),
    responses((status = 200, body = DeliveryPage), (status = 404, body = ErrorResponse),
        (status = 422, description = "A cursor or limit the engine refuses", body = ErrorResponse)))]
pub(in crate::api) async fn list_deliveries(
    State(engine): State<EngineHandle>,
    auth: Auth,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<ListDeliveries>,
) -> ApiResult<impl IntoResponse> {
    let sub = auth.subscription(&engine, &id).await?;
    // `status` and `limit` are declared in the document (an enum, a range): a value outside
    // them does not match it (400), unlike a cursor the engine does not know (422).
    let status = q
        .status
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(|e: Error| ApiError::invalid(e.to_string()).with_field("status"))?;
    if q.limit.is_some_and(|l| !(1..=1000).contains(&l)) {
        return Err(ApiError::invalid("limit: must be between 1 and 1000").with_field("limit"));
    }
    let query = DeliveryQuery {
        status,
        limit: q.limit,
        after: q.after,
    };
    Ok(Json(engine.list_deliveries(&sub.id, query).await?))
}

/// Loads a delivery the caller may see, or 404.
async fn visible_delivery(
    engine: &EngineHandle,
    auth: &Auth,
    id: &str,
) -> ApiResult<DeliveryDetail> {
    let id = id.parse::<DeliveryId>()?;
    let detail = engine.get_delivery(id).await?;
    if !auth.can_access(&detail.delivery.tenant_id) {
        return Err(Error::not_found("delivery", id).into());
    }
    Ok(detail)
}

/// A delivery as `GET /v1/deliveries/{id}` shows it: its attempt count renamed `attemptCount`
/// to make room for the attempt log as `attempts`.
fn with_attempt_log(detail: &DeliveryDetail) -> ApiResult<serde_json::Value> {
    let internal = |e: serde_json::Error| ApiError::from(Error::Internal(e.to_string()));
    let mut v = serde_json::to_value(&detail.delivery).map_err(internal)?;
    v["attemptCount"] = v["attempts"].clone();
    v["attempts"] = serde_json::to_value(&detail.attempt_log).map_err(internal)?;
    Ok(v)
}

#[utoipa::path(get, path = "/v1/deliveries/{id}", tag = "deliveries",
    params(("id" = String, Path, description = "A delivery id, `dlv_<n>`", pattern = "^dlv_[0-9]+$")),
    responses((status = 200, description = "The delivery with `attemptCount` and its attempt log as `attempts`", body = Object),
        (status = 404, body = ErrorResponse),
        (status = 422, description = "Not a delivery id", body = ErrorResponse)))]
pub(in crate::api) async fn get_delivery(
    State(engine): State<EngineHandle>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let detail = visible_delivery(&engine, &auth, &id).await?;
    Ok(Json(with_attempt_log(&detail)?))
}

#[utoipa::path(post, path = "/v1/deliveries/{id}/resubmit", tag = "deliveries",
    params(("id" = String, Path, description = "A delivery id, `dlv_<n>`", pattern = "^dlv_[0-9]+$")),
    responses((status = 200, body = Delivery), (status = 404, body = ErrorResponse),
        (status = 409, description = "Not in a state this action applies to", body = ErrorResponse),
        (status = 422, description = "Not a delivery id", body = ErrorResponse)))]
pub(in crate::api) async fn resubmit(
    State(engine): State<EngineHandle>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let detail = visible_delivery(&engine, &auth, &id).await?;
    Ok(Json(engine.resubmit(detail.delivery.id).await?))
}

#[utoipa::path(post, path = "/v1/deliveries/{id}/skip", tag = "deliveries",
    params(("id" = String, Path, description = "A delivery id, `dlv_<n>`", pattern = "^dlv_[0-9]+$")),
    responses((status = 200, body = Delivery), (status = 404, body = ErrorResponse),
        (status = 409, description = "Not in a state this action applies to", body = ErrorResponse),
        (status = 422, description = "Not a delivery id", body = ErrorResponse)))]
pub(in crate::api) async fn skip(
    State(engine): State<EngineHandle>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let detail = visible_delivery(&engine, &auth, &id).await?;
    Ok(Json(engine.skip(detail.delivery.id).await?))
}
