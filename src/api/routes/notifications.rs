//! A tenant's receivers of operational notifications (see `notify`):
//! `GET`/`POST /v1/tenants/{id}/notifications` and `DELETE /v1/tenants/{id}/notifications/{sub}`.
//!
//! The admin key or the tenant's own key. A receiver is a subscription of the system tenant
//! that gets the notifications about this tenant's subscriptions only; its signing secret is
//! shown once, in the answer to its creation.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde_json::Value;

use crate::api::auth::Auth;
use crate::api::error::{ApiResult, ErrorResponse};
use crate::api::extract::ApiJson;
use crate::api::router::AppState;
use crate::api::schema::{self, SCHEMAS};
use crate::domain::{Subscription, SubscriptionId};
use crate::engine::EngineHandle;
use crate::notify::NotificationEndpoint;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/tenants/{id}/notifications",
            get(list_receivers).post(add_receiver),
        )
        .route(
            "/v1/tenants/{id}/notifications/{sub}",
            delete(remove_receiver),
        )
}

#[utoipa::path(get, path = "/v1/tenants/{id}/notifications", tag = "tenants",
    params(("id" = String, Path, pattern = "^[A-Za-z0-9_.:-]{1,128}$")),
    responses((status = 200, description = "The tenant's notification receivers (subscriptions of the system tenant)", body = [Subscription]),
        (status = 404, description = "No such tenant (or another tenant's)", body = ErrorResponse)))]
pub(crate) async fn list_receivers(
    State(engine): State<EngineHandle>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let tenant = auth.tenant(id)?;
    Ok(Json(engine.notification_endpoints(&tenant).await?))
}

#[utoipa::path(post, path = "/v1/tenants/{id}/notifications", tag = "tenants",
    params(("id" = String, Path, pattern = "^[A-Za-z0-9_.:-]{1,128}$")),
    request_body = NotificationEndpoint,
    responses(
        (status = 201, description = "Added; `secret` is shown only here", body = Subscription),
        (status = 404, description = "No such tenant (or another tenant's)", body = ErrorResponse),
        (status = 422, description = "Refused by the engine's rules (e.g. an address the SSRF rules refuse)", body = ErrorResponse)))]
pub(crate) async fn add_receiver(
    State(engine): State<EngineHandle>,
    auth: Auth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<impl IntoResponse> {
    let tenant = auth.tenant(id)?;
    let endpoint: NotificationEndpoint = schema::typed(&SCHEMAS.notification_endpoint, body)?;
    let sub = engine.add_notification_endpoint(&tenant, endpoint).await?;
    Ok((StatusCode::CREATED, Json(sub)))
}

#[utoipa::path(delete, path = "/v1/tenants/{id}/notifications/{sub}", tag = "tenants",
    params(("id" = String, Path, pattern = "^[A-Za-z0-9_.:-]{1,128}$"), ("sub" = String, Path)),
    responses((status = 204, description = "Removed with its pending notifications"),
        (status = 404, description = "Not one of this tenant's receivers", body = ErrorResponse)))]
pub(crate) async fn remove_receiver(
    State(engine): State<EngineHandle>,
    auth: Auth,
    Path((id, sub)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let tenant = auth.tenant(id)?;
    engine
        .remove_notification_endpoint(&tenant, &SubscriptionId::from(sub))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
