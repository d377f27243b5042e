//! Tenants: `POST /v1/tenants` and `GET`/`PATCH /v1/tenants/{id}`.
//!
//! Creating and changing a tenant needs the admin key; a tenant key may read its own tenant.
//! The tenant's API key is shown once, in the answer to its creation.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::Value;

use crate::api::auth::Auth;
use crate::api::error::{ApiResult, ErrorResponse};
use crate::api::extract::ApiJson;
use crate::api::router::AppState;
use crate::api::schema::{self, SCHEMAS};
use crate::domain::{CreatedTenant, NewTenant, Tenant, TenantId, TenantPatch};
use crate::engine::EngineHandle;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/tenants", post(create_tenant))
        .route("/v1/tenants/{id}", get(get_tenant).patch(update_tenant))
}

#[utoipa::path(post, path = "/v1/tenants", tag = "tenants", request_body = NewTenant,
    responses(
        (status = 201, description = "Created; `apiKey` is shown only here", body = CreatedTenant),
        (status = 403, description = "Needs the admin key", body = ErrorResponse),
        (status = 409, description = "A tenant with this id exists", body = ErrorResponse),
        (status = 422, description = "Refused by the engine's rules", body = ErrorResponse)))]
pub(crate) async fn create_tenant(
    State(engine): State<EngineHandle>,
    auth: Auth,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<impl IntoResponse> {
    auth.require_admin()?;
    let body: NewTenant = schema::typed(&SCHEMAS.tenant, body)?;
    let created = engine.create_tenant(body).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

#[utoipa::path(get, path = "/v1/tenants/{id}", tag = "tenants", params(("id" = String, Path, pattern = "^[A-Za-z0-9_.:-]{1,128}$")),
    responses((status = 200, body = Tenant), (status = 404, body = ErrorResponse)))]
pub(crate) async fn get_tenant(
    State(engine): State<EngineHandle>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let id = auth.tenant(id)?;
    Ok(Json(engine.get_tenant(&id).await?))
}

#[utoipa::path(patch, path = "/v1/tenants/{id}", tag = "tenants", params(("id" = String, Path, pattern = "^[A-Za-z0-9_.:-]{1,128}$")),
    request_body = TenantPatch,
    responses((status = 200, body = Tenant),
        (status = 403, description = "Needs the admin key", body = ErrorResponse),
        (status = 404, body = ErrorResponse),
        (status = 422, description = "Refused by the engine's rules", body = ErrorResponse)))]
pub(crate) async fn update_tenant(
    State(engine): State<EngineHandle>,
    auth: Auth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<impl IntoResponse> {
    auth.require_admin()?;
    let patch: TenantPatch = schema::typed(&SCHEMAS.tenant_patch, body)?;
    Ok(Json(
        engine.update_tenant(&TenantId::from(id), patch).await?,
    ))
}
