//! The HTTP API: a thin axum layer over [`EngineHandle`].
//!
//! JSON in and out (camelCase). Every request but `GET /healthz` carries
//! `Authorization: Bearer <key>`: the admin key may do everything, a tenant key only its own
//! tenant's resources; another tenant's resource answers 404, exactly like a missing one, so keys
//! cannot probe for ids. Every refusal is a 4xx with `{"error": {"code", "message", "field"?}}`;
//! 5xx bodies are opaque and the cause is logged. [`serve`] takes its listener and shutdown
//! signal as arguments so tests and the binary drive it the same way.

mod transforms;

use std::future::Future;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::engine::EngineHandle;
use crate::error::Error;
use crate::id::{DeliveryId, SubscriptionId, TenantId};
use crate::model::{
    DeliveryQuery, DeliveryStatus, EventInput, NewSubscription, NewTenant, Principal, Subscription,
    SubscriptionPatch, TenantPatch,
};

/// Largest request body accepted (an event envelope or a subscription), 1 MiB.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The API's router, ready to serve.
pub fn router(engine: EngineHandle) -> Router {
    let module_limit = engine.transform_limits().module_bytes;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/tenants", post(create_tenant))
        .route("/v1/tenants/{id}", get(get_tenant).patch(update_tenant))
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
        .route("/v1/subscriptions/{id}/deliveries", get(list_deliveries))
        .route("/v1/events", post(publish))
        .route("/v1/deliveries/{id}", get(get_delivery))
        .route("/v1/deliveries/{id}/resubmit", post(resubmit))
        .route("/v1/deliveries/{id}/skip", post(skip))
        .merge(transforms::routes(module_limit))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(engine)
}

/// Serves the API on `listener` until `shutdown` resolves, then stops accepting and lets
/// requests in progress finish. The engine itself is not shut down here.
pub async fn serve(
    listener: tokio::net::TcpListener,
    engine: EngineHandle,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(engine))
        .with_graceful_shutdown(shutdown)
        .await
}

// ---- errors --------------------------------------------------------------------------------

/// An API refusal: status, machine code, message and optionally the field at fault.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    fn unauthorized(message: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::Invalid { field, message } => ApiError {
                status: StatusCode::BAD_REQUEST,
                code: "invalid",
                message: format!("{field}: {message}"),
                field: Some(field),
            },
            Error::NotFound { kind, id } => ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("{kind} {id} not found"),
            ),
            Error::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            Error::ShuttingDown => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "hookline is shutting down; retry against another instance or later",
            ),
            e @ Error::Unavailable { .. } => {
                tracing::error!(error = ?e, "journal unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the journal is unavailable; nothing was accepted, retry later",
                )
            }
            other => {
                tracing::error!(error = ?other, "internal error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut err = json!({"code": self.code, "message": self.message});
        if let Some(f) = self.field {
            err["field"] = Value::String(f);
        }
        (self.status, Json(json!({ "error": err }))).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}

// ---- extractors ----------------------------------------------------------------------------

/// A JSON body whose every rejection is an [`ApiError`] with our error format.
struct ApiJson<T>(T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(r: JsonRejection) -> ApiError {
    // Type errors, missing and unknown fields are refusals of the body (400), whatever status
    // axum proposes for them (422).
    if let JsonRejection::JsonDataError(e) = &r {
        return ApiError::new(StatusCode::BAD_REQUEST, "invalid", e.body_text());
    }
    let (code, message) = match &r {
        JsonRejection::MissingJsonContentType(_) => (
            "unsupported_media_type",
            "expected content-type: application/json".to_string(),
        ),
        JsonRejection::JsonSyntaxError(e) => (
            "malformed_json",
            format!("malformed JSON: {}", e.body_text()),
        ),
        _ if r.status() == StatusCode::PAYLOAD_TOO_LARGE => (
            "payload_too_large",
            format!("body exceeds {MAX_BODY_BYTES} bytes"),
        ),
        _ => ("bad_request", r.body_text()),
    };
    ApiError::new(r.status(), code, message)
}

/// Query parameters whose rejection is an [`ApiError`].
struct ApiQuery<T>(T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|r: QueryRejection| {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid", r.body_text())
            })
    }
}

/// The authenticated caller.
struct Auth(Principal);

impl FromRequestParts<EngineHandle> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        engine: &EngineHandle,
    ) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <key>"))?;
        let key = header
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or_else(|| ApiError::unauthorized("Authorization must be: Bearer <key>"))?;
        match engine.authenticate(key).await? {
            Some(p) => Ok(Auth(p)),
            None => Err(ApiError::unauthorized("unknown API key")),
        }
    }
}

impl Auth {
    fn require_admin(&self) -> ApiResult<()> {
        match self.0 {
            Principal::Admin => Ok(()),
            Principal::Tenant(_) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this operation needs the admin key",
            )),
        }
    }

    /// The tenant a request acts for: a tenant key's own tenant (fills `requested` when absent),
    /// or whatever the admin names. Another tenant answers 404, as if it did not exist.
    fn tenant_for(&self, requested: Option<&str>) -> ApiResult<Option<String>> {
        match (&self.0, requested) {
            (Principal::Admin, r) => Ok(r.map(str::to_owned)),
            (Principal::Tenant(own), None) => Ok(Some(own.to_string())),
            (Principal::Tenant(own), Some(r)) if r == own.as_str() => Ok(Some(r.to_owned())),
            (Principal::Tenant(_), Some(r)) => Err(Error::not_found("tenant", r).into()),
        }
    }
}

impl Auth {
    /// Sets a JSON body's `tenantId` to the tenant the request acts for (see
    /// [`tenant_for`](Auth::tenant_for)) and returns it; `None` when the admin named none.
    fn scope_body(&self, body: &mut Value) -> ApiResult<Option<String>> {
        let obj = body.as_object_mut().ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid",
                "the body must be a JSON object",
            )
        })?;
        let requested = match obj.get("tenantId") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(Error::invalid("tenantId", "must be a string").into()),
        };
        let tenant = self.tenant_for(requested.as_deref())?;
        if let Some(t) = &tenant {
            obj.insert("tenantId".into(), Value::String(t.clone()));
        }
        Ok(tenant)
    }
}

/// Loads a subscription the caller may see, or 404.
async fn visible_subscription(
    engine: &EngineHandle,
    auth: &Auth,
    id: &str,
) -> ApiResult<Subscription> {
    let id = SubscriptionId::from(id);
    let sub = engine.get_subscription(&id).await?;
    if !auth.0.can_access(&sub.tenant_id) {
        return Err(Error::not_found("subscription", id).into());
    }
    Ok(sub)
}

fn parse_delivery_id(s: &str) -> ApiResult<DeliveryId> {
    Ok(s.parse::<DeliveryId>()?)
}

// ---- handlers ------------------------------------------------------------------------------

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn create_tenant(
    State(engine): State<EngineHandle>,
    auth: Auth,
    ApiJson(body): ApiJson<NewTenant>,
) -> ApiResult<impl IntoResponse> {
    auth.require_admin()?;
    let created = engine.create_tenant(body).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

async fn get_tenant(
    State(engine): State<EngineHandle>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let id = TenantId::from(id);
    if !auth.0.can_access(&id) {
        return Err(Error::not_found("tenant", id).into());
    }
    Ok(Json(engine.get_tenant(&id).await?))
}

async fn update_tenant(
    State(engine): State<EngineHandle>,
    auth: Auth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<TenantPatch>,
) -> ApiResult<impl IntoResponse> {
    auth.require_admin()?;
    Ok(Json(engine.update_tenant(&TenantId::from(id), body).await?))
}

async fn create_subscription(
    State(engine): State<EngineHandle>,
    auth: Auth,
    ApiJson(mut body): ApiJson<Value>,
) -> ApiResult<impl IntoResponse> {
    if auth.scope_body(&mut body)?.is_none() {
        return Err(Error::invalid("tenantId", "is required with the admin key").into());
    }
    let new: NewSubscription = serde_json::from_value(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid", e.to_string()))?;
    let sub = engine.create_subscription(new).await?;
    Ok((StatusCode::CREATED, Json(sub)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListSubscriptions {
    tenant_id: Option<String>,
}

async fn list_subscriptions(
    State(engine): State<EngineHandle>,
    auth: Auth,
    ApiQuery(q): ApiQuery<ListSubscriptions>,
) -> ApiResult<impl IntoResponse> {
    let tenant = auth.tenant_for(q.tenant_id.as_deref())?.map(TenantId::from);
    let items = engine.list_subscriptions(tenant.as_ref()).await?;
    Ok(Json(json!({ "items": items })))
}

async fn get_subscription(
    State(engine): State<EngineHandle>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(visible_subscription(&engine, &auth, &id).await?))
}

async fn update_subscription(
    State(engine): State<EngineHandle>,
    auth: Auth,
    Path(id): Path<String>,
    ApiJson(patch): ApiJson<SubscriptionPatch>,
) -> ApiResult<impl IntoResponse> {
    let sub = visible_subscription(&engine, &auth, &id).await?;
    Ok(Json(engine.update_subscription(&sub.id, patch).await?))
}

async fn delete_subscription(
    State(engine): State<EngineHandle>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let sub = visible_subscription(&engine, &auth, &id).await?;
    engine.delete_subscription(&sub.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn pause_subscription(
    State(engine): State<EngineHandle>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let sub = visible_subscription(&engine, &auth, &id).await?;
    Ok(Json(engine.pause_subscription(&sub.id).await?))
}

async fn resume_subscription(
    State(engine): State<EngineHandle>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let sub = visible_subscription(&engine, &auth, &id).await?;
    Ok(Json(engine.resume_subscription(&sub.id).await?))
}

async fn test_endpoint(
    State(engine): State<EngineHandle>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let sub = visible_subscription(&engine, &auth, &id).await?;
    Ok(Json(engine.test_endpoint(&sub.id).await?))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RotateBody {
    secret: Option<String>,
    grace_seconds: Option<u64>,
}

async fn rotate_secret(
    State(engine): State<EngineHandle>,
    auth: Auth,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<impl IntoResponse> {
    let sub = visible_subscription(&engine, &auth, &id).await?;
    // The body is optional: an empty one rotates to a generated secret with the default grace.
    let body: RotateBody = if body.is_empty() {
        RotateBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid", e.to_string()))?
    };
    let grace = body.grace_seconds.map(std::time::Duration::from_secs);
    Ok(Json(
        engine.rotate_secret(&sub.id, body.secret, grace).await?,
    ))
}

#[derive(Deserialize)]
struct ListDeliveries {
    status: Option<String>,
    limit: Option<u32>,
    after: Option<String>,
}

async fn list_deliveries(
    State(engine): State<EngineHandle>,
    auth: Auth,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<ListDeliveries>,
) -> ApiResult<impl IntoResponse> {
    let sub = visible_subscription(&engine, &auth, &id).await?;
    let status = q
        .status
        .as_deref()
        .map(str::parse::<DeliveryStatus>)
        .transpose()?;
    let page = engine
        .list_deliveries(
            &sub.id,
            DeliveryQuery {
                status,
                limit: q.limit,
                after: q.after,
            },
        )
        .await?;
    Ok(Json(page))
}

async fn publish(
    State(engine): State<EngineHandle>,
    auth: Auth,
    ApiJson(mut body): ApiJson<Value>,
) -> ApiResult<impl IntoResponse> {
    auth.scope_body(&mut body)?;
    let event: EventInput = serde_json::from_value(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid", e.to_string()))?;
    let receipt = engine.publish(event).await?;
    Ok((StatusCode::ACCEPTED, Json(receipt)))
}

async fn visible_delivery(
    engine: &EngineHandle,
    auth: &Auth,
    id: &str,
) -> ApiResult<crate::model::DeliveryDetail> {
    let id = parse_delivery_id(id)?;
    let detail = engine.get_delivery(id).await?;
    if !auth.0.can_access(&detail.delivery.tenant_id) {
        return Err(Error::not_found("delivery", id).into());
    }
    Ok(detail)
}

async fn get_delivery(
    State(engine): State<EngineHandle>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let detail = visible_delivery(&engine, &auth, &id).await?;
    let mut v = serde_json::to_value(&detail.delivery)
        .map_err(|e| ApiError::from(Error::Internal(e.to_string())))?;
    v["attemptCount"] = v["attempts"].clone();
    v["attempts"] = serde_json::to_value(&detail.attempt_log)
        .map_err(|e| ApiError::from(Error::Internal(e.to_string())))?;
    Ok(Json(v))
}

async fn resubmit(
    State(engine): State<EngineHandle>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let detail = visible_delivery(&engine, &auth, &id).await?;
    Ok(Json(engine.resubmit(detail.delivery.id).await?))
}

async fn skip(
    State(engine): State<EngineHandle>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let detail = visible_delivery(&engine, &auth, &id).await?;
    Ok(Json(engine.skip(detail.delivery.id).await?))
}
