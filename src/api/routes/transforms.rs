//! Transform routes, all tenant-scoped: `/v1/tenants/{tenantId}/transforms…`.
//!
//! Uploads are raw WebAssembly (`Content-Type: application/wasm`) up to the sandbox's module
//! limit (32 MiB by default), a larger limit than the JSON routes'; everything else is JSON.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::Value;

use crate::api::auth::Auth;
use crate::api::error::{ApiError, ApiResult, ErrorResponse};
use crate::api::extract::ApiJson;
use crate::api::router::AppState;
use crate::api::schema::{self, SCHEMAS};
use crate::domain::{EventInput, TransformInfo, TransformTest, TransformVersion};
use crate::engine::EngineHandle;
use crate::error::Error;

/// Whether a request is a module upload, whose body limit is the sandbox's module limit (the
/// `guard` reads bodies) rather than the JSON routes' 1 MiB.
pub(in crate::api) fn is_upload(method: &axum::http::Method, path: &str) -> bool {
    method == axum::http::Method::PUT
        && path
            .strip_prefix("/v1/tenants/")
            .and_then(|rest| rest.split_once("/transforms/"))
            .is_some_and(|(tenant, name)| !tenant.contains('/') && !name.contains('/'))
}

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/tenants/{tenant}/transforms", get(list))
        .route(
            "/v1/tenants/{tenant}/transforms/{name}",
            put(upload).get(show).delete(remove),
        )
        .route(
            "/v1/tenants/{tenant}/transforms/{name}/versions/{version}/test",
            post(test),
        )
}

/// Refuses an upload whose content type is not `application/wasm` (415).
fn require_wasm(headers: &HeaderMap) -> ApiResult<()> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/wasm"))
    {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "upload the component with content-type: application/wasm",
    ))
}

#[utoipa::path(put, path = "/v1/tenants/{tenant}/transforms/{name}", tag = "transforms",
    operation_id = "upload_transform",
    params(("tenant" = String, Path, pattern = "^[A-Za-z0-9_.:-]{1,128}$"),
        ("name" = String, Path, pattern = "^[a-z0-9][a-z0-9_.-]{0,63}$")),
    request_body(content = Vec<u8>, content_type = "application/wasm",
        description = "A WebAssembly component of the world in transforms/wit/transform.wit"),
    responses(
        (status = 201, description = "A new version", body = TransformVersion),
        (status = 200, description = "The same bytes were uploaded before: that version",
            body = TransformVersion),
        (status = 404, body = ErrorResponse),
        (status = 422, description = "Not a component of the transform world, or a name the rules refuse",
            body = ErrorResponse)))]
pub(in crate::api) async fn upload(
    State(engine): State<EngineHandle>,
    auth: Auth,
    Path((tenant_id, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<impl IntoResponse> {
    let tenant = auth.tenant(tenant_id)?;
    require_wasm(&headers)?;
    let body = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!(
                    "the module is larger than the {} bytes a transform may have",
                    engine.transform_limits().module_bytes
                ),
            )
        } else {
            ApiError::new(r.status(), "bad_request", r.body_text())
        }
    })?;
    let (version, created) = engine
        .upload_transform(&tenant, &name, body.to_vec())
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(version)))
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}/transforms", tag = "transforms",
    operation_id = "list_transforms",
    params(("tenant" = String, Path, pattern = "^[A-Za-z0-9_.:-]{1,128}$")),
    responses((status = 200, body = Vec<TransformInfo>), (status = 404, body = ErrorResponse)))]
pub(in crate::api) async fn list(
    State(engine): State<EngineHandle>,
    auth: Auth,
    Path(tenant_id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let tenant = auth.tenant(tenant_id)?;
    Ok(Json(engine.list_transforms(&tenant).await?))
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}/transforms/{name}", tag = "transforms",
    operation_id = "get_transform",
    params(("tenant" = String, Path, pattern = "^[A-Za-z0-9_.:-]{1,128}$"),
        ("name" = String, Path, pattern = "^[a-z0-9][a-z0-9_.-]{0,63}$")),
    responses((status = 200, body = TransformInfo), (status = 404, body = ErrorResponse)))]
pub(in crate::api) async fn show(
    State(engine): State<EngineHandle>,
    auth: Auth,
    Path((tenant_id, name)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let tenant = auth.tenant(tenant_id)?;
    Ok(Json(engine.get_transform(&tenant, &name).await?))
}

#[utoipa::path(delete, path = "/v1/tenants/{tenant}/transforms/{name}", tag = "transforms",
    operation_id = "delete_transform",
    params(("tenant" = String, Path, pattern = "^[A-Za-z0-9_.:-]{1,128}$"),
        ("name" = String, Path, pattern = "^[a-z0-9][a-z0-9_.-]{0,63}$")),
    responses((status = 204, description = "Every version deleted"),
        (status = 404, body = ErrorResponse),
        (status = 409, description = "A subscription is bound to it", body = ErrorResponse)))]
pub(in crate::api) async fn remove(
    State(engine): State<EngineHandle>,
    auth: Auth,
    Path((tenant_id, name)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let tenant = auth.tenant(tenant_id)?;
    engine.delete_transform(&tenant, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/tenants/{tenant}/transforms/{name}/versions/{version}/test",
    tag = "transforms", operation_id = "test_transform",
    params(("tenant" = String, Path, pattern = "^[A-Za-z0-9_.:-]{1,128}$"),
        ("name" = String, Path, pattern = "^[a-z0-9][a-z0-9_.-]{0,63}$"),
        ("version" = u64, Path, minimum = 1, maximum = 4294967295.0)),
    request_body = EventInput,
    responses((status = 200, description = "What the transform decided; nothing was sent",
            body = TransformTest),
        (status = 404, body = ErrorResponse),
        (status = 422, description = "A version number or an event the engine refuses", body = ErrorResponse)))]
pub(in crate::api) async fn test(
    State(engine): State<EngineHandle>,
    auth: Auth,
    Path((tenant_id, name, version)): Path<(String, String, String)>,
    ApiJson(mut body): ApiJson<Value>,
) -> ApiResult<impl IntoResponse> {
    let tenant = auth.tenant(tenant_id)?;
    let version: u32 = version
        .parse()
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| Error::invalid("version", "must be a version number (1, 2, …)"))?;
    // The event is the tenant's own whatever tenantId the body names (the document's
    // `TransformTestEvent`: the event schema with `tenantId` optional and ignored).
    if let Some(obj) = body.as_object_mut() {
        obj.insert("tenantId".into(), Value::String(tenant.to_string()));
    }
    let event: EventInput = schema::typed(&SCHEMAS.event, body)?;
    Ok(Json(
        engine
            .test_transform(&tenant, &name, version, event)
            .await?,
    ))
}
