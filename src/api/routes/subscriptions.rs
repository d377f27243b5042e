//! Subscriptions: `/v1/subscriptions` and the operator's actions on one of them (pause,
//! resume, secret rotation, endpoint test, replay).
//!
//! A tenant key sees only its own tenant's subscriptions; every other id answers 404. A
//! subscription's signing secret is shown only when it is created or rotated.

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::api::auth::Auth;
use crate::api::error::{ApiResult, ErrorResponse};
use crate::api::extract::{self, ApiJson, ApiQuery};
use crate::api::router::AppState;
use crate::api::schema::{self, SCHEMAS};
use crate::domain::{
    EndpointTest, NewSubscription, ReplayReceipt, ReplayWindow, Subscription, SubscriptionPatch,
    TenantId,
};
use crate::engine::EngineHandle;
use crate::error::Error;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/subscriptions",
            post(create_subscription).get(list_subscriptions),
        )
        .route(
            "/v1/subscriptions/{id}",
            get(get_subscription)
                .patch(update_subscription)
                .delete(delete_subscription),
        )
        .route("/v1/subscriptions/{id}/pause", post(pause_subscription))
        .route("/v1/subscriptions/{id}/resume", post(resume_subscription))
        .route("/v1/subscriptions/{id}/secret/rotate", post(rotate_secret))
        .route("/v1/subscriptions/{id}/test", post(test_endpoint))
        .route("/v1/subscriptions/{id}/replay", post(replay))
}

#[utoipa::path(post, path = "/v1/subscriptions", tag = "subscriptions",
    request_body = NewSubscription,
    responses(
        (status = 201, description = "Created; `secret` is shown only here", body = Subscription),
        (status = 404, description = "No such tenant (or another tenant's)", body = ErrorResponse),
        (status = 422, description = "Refused by the engine's rules (e.g. an address the SSRF rules refuse)", body = ErrorResponse)))]
pub(in crate::api) async fn create_subscription(
    State(engine): State<EngineHandle>,
    auth: Auth,
    ApiJson(mut body): ApiJson<Value>,
) -> ApiResult<impl IntoResponse> {
    auth.fill_tenant(&mut body);
    schema::check(&SCHEMAS.subscription, &body)?;
    if auth.scope_body(&mut body)?.is_none() {
        return Err(Error::invalid("tenantId", "is required with the admin key").into());
    }
    let new: NewSubscription = schema::deserialize(body)?;
    let sub = engine.create_subscription(new).await?;
    Ok((StatusCode::CREATED, Json(sub)))
}

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub(in crate::api) struct ListSubscriptions {
    /// Only this tenant's (admin key); a tenant key always sees only its own.
    tenant_id: Option<String>,
}

/// A list of subscriptions.
#[derive(Serialize, ToSchema)]
struct SubscriptionList {
    items: Vec<Subscription>,
}

#[utoipa::path(get, path = "/v1/subscriptions", tag = "subscriptions",
    params(ListSubscriptions),
    responses((status = 200, body = SubscriptionList), (status = 404, body = ErrorResponse)))]
pub(in crate::api) async fn list_subscriptions(
    State(engine): State<EngineHandle>,
    auth: Auth,
    ApiQuery(q): ApiQuery<ListSubscriptions>,
) -> ApiResult<impl IntoResponse> {
    let tenant = auth.tenant_for(q.tenant_id.as_deref())?.map(TenantId::from);
    let items = engine.list_subscriptions(tenant.as_ref()).await?;
    Ok(Json(SubscriptionList { items }))
}

#[utoipa::path(get, path = "/v1/subscriptions/{id}", tag = "subscriptions",
    params(("id" = String, Path)),
    responses((status = 200, body = Subscription), (status = 404, body = ErrorResponse)))]
pub(in crate::api) async fn get_subscription(
    State(engine): State<EngineHandle>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(auth.subscription(&engine, &id).await?))
}

#[utoipa::path(patch, path = "/v1/subscriptions/{id}", tag = "subscriptions",
    params(("id" = String, Path)), request_body = SubscriptionPatch,
    responses((status = 200, body = Subscription), (status = 404, body = ErrorResponse),
        (status = 409, description = "The subscription is restarting; retry", body = ErrorResponse),
        (status = 422, description = "Refused by the engine's rules", body = ErrorResponse)))]
pub(in crate::api) async fn update_subscription(
    State(engine): State<EngineHandle>,
    auth: Auth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<impl IntoResponse> {
    let sub = auth.subscription(&engine, &id).await?;
    let patch: SubscriptionPatch = schema::typed(&SCHEMAS.subscription_patch, body)?;
    Ok(Json(engine.update_subscription(&sub.id, patch).await?))
}

#[utoipa::path(delete, path = "/v1/subscriptions/{id}", tag = "subscriptions",
    params(("id" = String, Path)),
    responses((status = 204, description = "Deleted with its deliveries"),
        (status = 404, body = ErrorResponse),
        (status = 409, description = "The subscription is restarting; retry", body = ErrorResponse)))]
pub(in crate::api) async fn delete_subscription(
    State(engine): State<EngineHandle>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let sub = auth.subscription(&engine, &id).await?;
    engine.delete_subscription(&sub.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/subscriptions/{id}/pause", tag = "subscriptions",
    params(("id" = String, Path)),
    responses((status = 200, body = Subscription), (status = 404, body = ErrorResponse),
        (status = 409, description = "The subscription is restarting; retry", body = ErrorResponse)))]
pub(in crate::api) async fn pause_subscription(
    State(engine): State<EngineHandle>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let sub = auth.subscription(&engine, &id).await?;
    Ok(Json(engine.pause_subscription(&sub.id).await?))
}

#[utoipa::path(post, path = "/v1/subscriptions/{id}/resume", tag = "subscriptions",
    params(("id" = String, Path)),
    responses((status = 200, body = Subscription), (status = 404, body = ErrorResponse),
        (status = 409, description = "The subscription is restarting; retry", body = ErrorResponse)))]
pub(in crate::api) async fn resume_subscription(
    State(engine): State<EngineHandle>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let sub = auth.subscription(&engine, &id).await?;
    Ok(Json(engine.resume_subscription(&sub.id).await?))
}

#[utoipa::path(post, path = "/v1/subscriptions/{id}/test", tag = "subscriptions",
    params(("id" = String, Path)),
    responses((status = 200, body = EndpointTest), (status = 404, body = ErrorResponse)))]
pub(in crate::api) async fn test_endpoint(
    State(engine): State<EngineHandle>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let sub = auth.subscription(&engine, &id).await?;
    Ok(Json(engine.test_endpoint(&sub.id).await?))
}

/// A secret rotation; the body is optional.
#[derive(Deserialize, Default, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RotateBody {
    /// The new secret (`whsec_…`); generated when absent.
    secret: Option<String>,
    /// How long the old secret keeps signing too (default 24 h, at most 7 days).
    grace_seconds: Option<u64>,
}

#[utoipa::path(post, path = "/v1/subscriptions/{id}/secret/rotate", tag = "subscriptions",
    params(("id" = String, Path)), request_body(content = Option<RotateBody>),
    responses((status = 200, description = "`secret` is shown only here", body = Subscription),
        (status = 404, body = ErrorResponse),
        (status = 409, description = "The subscription is restarting; retry", body = ErrorResponse),
        (status = 422, description = "Refused by the engine's rules (e.g. a secret that does not decode)", body = ErrorResponse)))]
pub(in crate::api) async fn rotate_secret(
    State(engine): State<EngineHandle>,
    auth: Auth,
    Path(id): Path<String>,
    body: Request,
) -> ApiResult<impl IntoResponse> {
    let sub = auth.subscription(&engine, &id).await?;
    let depth = extract::depth_limit(&body);
    // The body is optional (an empty one rotates to a generated secret with the default
    // grace), hence no `ApiJson` and no content-type check.
    let bytes = extract::body_bytes(body, &()).await?;
    let body: RotateBody = if bytes.is_empty() {
        RotateBody::default()
    } else {
        schema::typed(&SCHEMAS.secret_rotation, extract::parse(&bytes, depth)?)?
    };
    let grace = body.grace_seconds.map(std::time::Duration::from_secs);
    Ok(Json(
        engine.rotate_secret(&sub.id, body.secret, grace).await?,
    ))
}

#[utoipa::path(post, path = "/v1/subscriptions/{id}/replay", tag = "subscriptions",
    params(("id" = String, Path)),
    request_body = ReplayWindow,
    responses((status = 200, body = ReplayReceipt), (status = 404, body = ErrorResponse),
        (status = 409, description = "The subscription is restarting; retry", body = ErrorResponse),
        (status = 422, description = "Refused by the engine's rules (e.g. `until` before `since`)", body = ErrorResponse)))]
pub(in crate::api) async fn replay(
    State(engine): State<EngineHandle>,
    auth: Auth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<impl IntoResponse> {
    let sub = auth.subscription(&engine, &id).await?;
    let window: ReplayWindow = schema::typed(&SCHEMAS.replay, body)?;
    Ok(Json(engine.replay(&sub.id, window).await?))
}
