//! The HTTP API: a thin axum layer over [`EngineHandle`].
//!
//! JSON in and out (camelCase). Every request but `GET /healthz` and `GET /v1/openapi.json`
//! carries `Authorization: Bearer <key>`: the admin key may do everything, a tenant key only its
//! own tenant's resources; another tenant's resource answers 404, exactly like a missing one, so
//! keys cannot probe for ids. Every refusal is a 4xx with `{"error": {"code", "message",
//! "field"?}}`; 5xx bodies are opaque (a generic message and the request id) and the cause is
//! logged under that request id.
//!
//! Input passes, in order: the connection limit and header read timeout (`server`), the body
//! size limit and body read timeout (`guard`), then content type, JSON nesting depth, syntax and
//! the JSON Schema of the route (`input`), then serde and the engine's own rules. [`serve`] takes
//! its listener and shutdown signal as arguments so tests and the binary drive it the same way.

pub mod ops;
mod transforms;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{
    DefaultBodyLimit, FromRef, FromRequest, FromRequestParts, Path, Query, Request, State,
};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::{BodyExt, Limited};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracing::Instrument;
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::domain::{
    CreatedTenant, Delivery, DeliveryPage, DeliveryQuery, DeliveryStatus, EndpointTest, EventInput,
    NewSubscription, NewTenant, Principal, PublishReceipt, Subscription, SubscriptionPatch, Tenant,
    TenantPatch,
};
use crate::domain::{DeliveryId, EventId, SubscriptionId, TenantId};
use crate::engine::EngineHandle;
use crate::error::Error;

mod input;
mod server;

use input::SCHEMAS;

/// Default largest request body (an event, a subscription, …): 1 MiB.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The API's limits and timeouts. Every field has a production default; see the README.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Largest request body on every route but the batch route; larger ones get 413 and are
    /// not read past the limit. Default 1 MiB.
    pub body_limit: usize,
    /// Largest body of `POST /v1/events/batch`. Default 16 MiB.
    pub batch_body_limit: usize,
    /// Most events in one batch; more get 413. Default 1000.
    pub batch_max_items: usize,
    /// Deepest JSON nesting accepted in a body (an event's own levels; a batch's array adds
    /// one). Default 64.
    pub json_max_depth: usize,
    /// Time a client has to send a request's headers; a connection that is slower is closed.
    /// The clock also runs while a keep-alive connection waits for its next request, so this
    /// is the idle timeout of keep-alive connections too. Default 10 s.
    pub header_read_timeout: Duration,
    /// Time a client has to send a request's body, once its headers are in; slower gets 408
    /// and the connection is closed. Default 30 s.
    pub body_read_timeout: Duration,
    /// Most connections open at once; one more is answered 503 and closed. Default 1024.
    pub max_connections: usize,
}

impl ApiConfig {
    /// The API settings of a server configuration's `[limits]`.
    pub fn from_limits(l: &crate::config::Limits) -> ApiConfig {
        ApiConfig {
            body_limit: l.max_event_bytes,
            batch_body_limit: l.max_batch_bytes,
            batch_max_items: l.max_batch_events,
            json_max_depth: l.max_json_depth,
            header_read_timeout: l.header_read_timeout.0,
            body_read_timeout: l.body_read_timeout.0,
            max_connections: l.max_connections,
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            body_limit: MAX_BODY_BYTES,
            batch_body_limit: 16 * 1024 * 1024,
            batch_max_items: 1000,
            json_max_depth: 64,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            max_connections: 1024,
        }
    }
}

/// What every handler can reach: the engine and the API's settings.
#[derive(Clone)]
struct AppState {
    engine: EngineHandle,
    cfg: Arc<ApiConfig>,
}

impl FromRef<AppState> for EngineHandle {
    fn from_ref(s: &AppState) -> EngineHandle {
        s.engine.clone()
    }
}

/// The path of the batch route, whose body limit differs.
const BATCH_PATH: &str = "/v1/events/batch";

/// The routes that need no key.
const PUBLIC_PATHS: [&str; 2] = ["/healthz", "/v1/openapi.json"];

/// The API's router with the default [`ApiConfig`].
pub fn router(engine: EngineHandle) -> Router {
    router_with(engine, ApiConfig::default())
}

/// The API's router, ready to serve.
pub fn router_with(engine: EngineHandle, cfg: ApiConfig) -> Router {
    std::sync::LazyLock::force(&SCHEMAS);
    let state = AppState {
        engine,
        cfg: Arc::new(cfg),
    };
    Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/openapi.json", get(openapi_json))
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
        .route(BATCH_PATH, post(publish_batch))
        .route("/v1/deliveries/{id}", get(get_delivery))
        .route("/v1/deliveries/{id}/resubmit", post(resubmit))
        .route("/v1/deliveries/{id}/skip", post(skip))
        .merge(transforms::routes())
        .merge(ops::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // `guard` reads every body under its route's limit and timeout, once; the extractors
        // then work on the bytes it read.
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// Serves the API on `listener` with the default [`ApiConfig`] until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    engine: EngineHandle,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, engine, ApiConfig::default(), shutdown).await
}

/// Serves the API on `listener` until `shutdown` resolves, then stops accepting and lets
/// requests in progress finish. The engine itself is not shut down here.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    engine: EngineHandle,
    cfg: ApiConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router_with(engine, cfg.clone());
    server::run(listener, app, &cfg, shutdown).await
}

/// The OpenAPI document of this API (also served at `GET /v1/openapi.json` and committed as
/// `schemas/openapi.json`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The OpenAPI document. A new route is one more line in `paths(...)` (and a
/// `#[utoipa::path]` on its handler).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "hookline",
        description = "Durable, strictly ordered webhook delivery. Every route but /healthz and \
                       /v1/openapi.json needs `Authorization: Bearer <key>`."
    ),
    paths(
        healthz,
        openapi_json,
        create_tenant,
        get_tenant,
        update_tenant,
        create_subscription,
        list_subscriptions,
        get_subscription,
        update_subscription,
        delete_subscription,
        pause_subscription,
        resume_subscription,
        rotate_secret,
        test_endpoint,
        list_deliveries,
        publish,
        publish_batch,
        get_delivery,
        resubmit,
        skip,
        transforms::list,
        transforms::upload,
        transforms::show,
        transforms::remove,
        transforms::test,
        ops::readyz,
        ops::metrics,
        ops::replay,
    ),
    components(schemas(ErrorResponse, ErrorBody)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The admin key or a tenant's API key"))
                    .build(),
            ),
        );
    }
}

// ---- request guard -------------------------------------------------------------------------

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request id of a request: the caller's `x-request-id` when it is a sane token, else a
/// fresh UUIDv7. Echoed in the response header and in 5xx bodies, and on every log line.
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 128
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().simple().to_string())
}

/// The JSON nesting limit, handed from the guard to the extractors.
#[derive(Debug, Clone, Copy)]
struct DepthLimit(usize);

fn depth_limit(req: &Request) -> usize {
    req.extensions()
        .get::<DepthLimit>()
        .map_or(ApiConfig::default().json_max_depth, |d| d.0)
}

/// Around every request: gives it a request id and a span, authenticates a request that has a
/// body before reading it, reads the body whole under the route's size limit and the body
/// timeout (a body over the limit is not read past it), and makes every 5xx body opaque,
/// logging the real cause with the request id.
async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let id = request_id(req.headers());
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path());
    async move {
        let cfg = &state.cfg;
        let (mut parts, body) = req.into_parts();
        let limit = if parts.uri.path() == BATCH_PATH {
            cfg.batch_body_limit
        } else if transforms::is_upload(&parts.method, parts.uri.path()) {
            state.engine.transform_limits().module_bytes
        } else {
            cfg.body_limit
        };
        // A body is read only for a caller with a valid key, so that anonymous clients cannot
        // make the server buffer up to `limit` per connection.
        let body_to_read = parts.headers.contains_key(header::TRANSFER_ENCODING)
            || parts
                .headers
                .get(header::CONTENT_LENGTH)
                .is_some_and(|v| v != "0");
        let read = if body_to_read && !PUBLIC_PATHS.contains(&parts.uri.path()) {
            match authenticate(&parts.headers, &state.engine).await {
                Ok(p) => {
                    parts.extensions.insert(Authenticated(p));
                    read_body(&parts, body, limit, cfg.body_read_timeout).await
                }
                Err(e) => {
                    // Discarded, not kept: a client's body left unread in the socket would turn
                    // the close into a reset that can destroy the 401 before the client reads it.
                    drain(body, limit, cfg.body_read_timeout).await;
                    Err(e)
                }
            }
        } else {
            read_body(&parts, body, limit, cfg.body_read_timeout).await
        };
        let mut resp = match read {
            Ok(bytes) => {
                parts.extensions.insert(DepthLimit(cfg.json_max_depth));
                next.run(Request::from_parts(parts, Body::from(bytes))).await
            }
            Err(e) => {
                let mut r = e.into_response();
                // The rest of the body is not read: the connection cannot be reused.
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                r
            }
        };
        if let Some(opaque) = resp.extensions_mut().remove::<Opaque>() {
            tracing::error!(status = resp.status().as_u16(), cause = %opaque.cause, "request failed");
            let status = resp.status();
            let headers = std::mem::take(resp.headers_mut());
            let body = ErrorResponse {
                error: ErrorBody {
                    code: opaque.code.into(),
                    message: opaque.message,
                    field: None,
                    request_id: Some(id.clone()),
                },
            };
            resp = (status, Json(body)).into_response();
            for (name, value) in &headers {
                if name != header::CONTENT_LENGTH && name != header::CONTENT_TYPE {
                    resp.headers_mut().insert(name.clone(), value.clone());
                }
            }
        }
        if let Ok(v) = HeaderValue::from_str(&id) {
            resp.headers_mut().insert(X_REQUEST_ID.clone(), v);
        }
        resp
    }
    .instrument(span)
    .await
}

/// Reads and discards up to `limit` bytes of `body`, for at most `timeout`.
async fn drain(body: Body, limit: usize, timeout: Duration) {
    let mut body = Limited::new(body, limit);
    let _ = tokio::time::timeout(timeout, async {
        while let Some(Ok(_)) = body.frame().await {}
    })
    .await;
}

async fn read_body(parts: &Parts, body: Body, limit: usize, timeout: Duration) -> ApiResult<Bytes> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body exceeds this route's limit of {limit} bytes"),
        )
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(e)) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("could not read the body: {e}"),
        )),
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!("the body did not arrive within {} s", timeout.as_secs_f64()),
        )),
    }
}

// ---- errors --------------------------------------------------------------------------------

/// The body of every refusal.
#[derive(Debug, Serialize, ToSchema)]
struct ErrorResponse {
    error: ErrorBody,
}

/// What went wrong: a stable machine code, a message for people, and the field at fault as a
/// JSON pointer or a name when one is. 5xx bodies carry only a generic message and the
/// request id that the real cause is logged under.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct ErrorBody {
    code: String,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<String>,
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

/// A 5xx's code, message and cause, for [`guard`] to log with the request id and answer with
/// an opaque body.
#[derive(Debug, Clone)]
struct Opaque {
    code: &'static str,
    message: String,
    cause: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
            cause: None,
        }
    }

    fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    fn unauthorized(message: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    fn body(&self) -> ErrorBody {
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
            Error::Invalid { field, message } => ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid",
                format!("{field}: {message}"),
            )
            .with_field(field),
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

/// A JSON body whose every refusal is an [`ApiError`]: content type (415), nesting depth and
/// syntax (400), then serde's typed parse (400 `invalid`). Schemas are checked by the handlers
/// that take a [`Value`].
struct ApiJson<T>(T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        input::require_json(req.headers())?;
        let depth = depth_limit(&req);
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|r| ApiError::new(r.status(), "bad_request", r.body_text()))?;
        let value = input::parse(&bytes, depth)?;
        serde_json::from_value(value)
            .map(ApiJson)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid", e.to_string()))
    }
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

impl<S: Send + Sync> FromRequestParts<S> for Auth
where
    EngineHandle: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        if let Some(Authenticated(p)) = parts.extensions.get::<Authenticated>() {
            return Ok(Auth(p.clone()));
        }
        authenticate(&parts.headers, &EngineHandle::from_ref(state))
            .await
            .map(Auth)
    }
}

/// The caller as [`guard`] established it before reading a body.
#[derive(Debug, Clone)]
struct Authenticated(Principal);

/// Who the request's `Authorization: Bearer <key>` belongs to, or 401.
async fn authenticate(headers: &HeaderMap, engine: &EngineHandle) -> ApiResult<Principal> {
    let header = headers
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
    engine
        .authenticate(key)
        .await?
        .ok_or_else(|| ApiError::unauthorized("unknown API key"))
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
    /// With a tenant key, fills an object's absent `tenantId` with the key's tenant, so that
    /// the schema's `required` holds for producers that leave it out. Refusals are left to
    /// [`scope_body`](Auth::scope_body).
    fn fill_tenant(&self, body: &mut Value) {
        if let (Principal::Tenant(own), Value::Object(obj)) = (&self.0, body)
            && matches!(obj.get("tenantId"), None | Some(Value::Null))
        {
            obj.insert("tenantId".into(), Value::String(own.to_string()));
        }
    }

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

#[utoipa::path(get, path = "/healthz", security(()), tag = "ops",
    responses((status = 200, description = "The process is up", body = Object)))]
async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

#[utoipa::path(get, path = "/v1/openapi.json", security(()), tag = "ops",
    responses((status = 200, description = "This document", body = Object)))]
async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi())
}

#[utoipa::path(post, path = "/v1/tenants", tag = "tenants", request_body = NewTenant,
    responses(
        (status = 201, description = "Created; `apiKey` is shown only here", body = CreatedTenant),
        (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse),
        (status = 403, body = ErrorResponse), (status = 409, body = ErrorResponse)))]
async fn create_tenant(
    State(engine): State<EngineHandle>,
    auth: Auth,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<impl IntoResponse> {
    auth.require_admin()?;
    let body: NewTenant = input::typed(&SCHEMAS.tenant, body)?;
    let created = engine.create_tenant(body).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

#[utoipa::path(get, path = "/v1/tenants/{id}", tag = "tenants", params(("id" = String, Path)),
    responses((status = 200, body = Tenant), (status = 404, body = ErrorResponse)))]
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

#[utoipa::path(patch, path = "/v1/tenants/{id}", tag = "tenants", params(("id" = String, Path)),
    request_body = TenantPatch,
    responses((status = 200, body = Tenant), (status = 400, body = ErrorResponse),
        (status = 403, body = ErrorResponse), (status = 404, body = ErrorResponse)))]
async fn update_tenant(
    State(engine): State<EngineHandle>,
    auth: Auth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<TenantPatch>,
) -> ApiResult<impl IntoResponse> {
    auth.require_admin()?;
    Ok(Json(engine.update_tenant(&TenantId::from(id), body).await?))
}

#[utoipa::path(post, path = "/v1/subscriptions", tag = "subscriptions",
    request_body = NewSubscription,
    responses(
        (status = 201, description = "Created; `secret` is shown only here", body = Subscription),
        (status = 400, body = ErrorResponse), (status = 404, body = ErrorResponse)))]
async fn create_subscription(
    State(engine): State<EngineHandle>,
    auth: Auth,
    ApiJson(mut body): ApiJson<Value>,
) -> ApiResult<impl IntoResponse> {
    auth.fill_tenant(&mut body);
    input::check(&SCHEMAS.subscription, &body).map_err(input::FieldError::into_api)?;
    if auth.scope_body(&mut body)?.is_none() {
        return Err(Error::invalid("tenantId", "is required with the admin key").into());
    }
    let new: NewSubscription = serde_json::from_value(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid", e.to_string()))?;
    let sub = engine.create_subscription(new).await?;
    Ok((StatusCode::CREATED, Json(sub)))
}

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
struct ListSubscriptions {
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
async fn list_subscriptions(
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
async fn get_subscription(
    State(engine): State<EngineHandle>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(visible_subscription(&engine, &auth, &id).await?))
}

#[utoipa::path(patch, path = "/v1/subscriptions/{id}", tag = "subscriptions",
    params(("id" = String, Path)), request_body = SubscriptionPatch,
    responses((status = 200, body = Subscription), (status = 400, body = ErrorResponse),
        (status = 404, body = ErrorResponse), (status = 409, body = ErrorResponse)))]
async fn update_subscription(
    State(engine): State<EngineHandle>,
    auth: Auth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<impl IntoResponse> {
    let sub = visible_subscription(&engine, &auth, &id).await?;
    let patch: SubscriptionPatch = input::typed(&SCHEMAS.subscription_patch, body)?;
    Ok(Json(engine.update_subscription(&sub.id, patch).await?))
}

#[utoipa::path(delete, path = "/v1/subscriptions/{id}", tag = "subscriptions",
    params(("id" = String, Path)),
    responses((status = 204, description = "Deleted with its deliveries"),
        (status = 404, body = ErrorResponse)))]
async fn delete_subscription(
    State(engine): State<EngineHandle>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let sub = visible_subscription(&engine, &auth, &id).await?;
    engine.delete_subscription(&sub.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/subscriptions/{id}/pause", tag = "subscriptions",
    params(("id" = String, Path)),
    responses((status = 200, body = Subscription), (status = 404, body = ErrorResponse)))]
async fn pause_subscription(
    State(engine): State<EngineHandle>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let sub = visible_subscription(&engine, &auth, &id).await?;
    Ok(Json(engine.pause_subscription(&sub.id).await?))
}

#[utoipa::path(post, path = "/v1/subscriptions/{id}/resume", tag = "subscriptions",
    params(("id" = String, Path)),
    responses((status = 200, body = Subscription), (status = 404, body = ErrorResponse)))]
async fn resume_subscription(
    State(engine): State<EngineHandle>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let sub = visible_subscription(&engine, &auth, &id).await?;
    Ok(Json(engine.resume_subscription(&sub.id).await?))
}

#[utoipa::path(post, path = "/v1/subscriptions/{id}/test", tag = "subscriptions",
    params(("id" = String, Path)),
    responses((status = 200, body = EndpointTest), (status = 404, body = ErrorResponse)))]
async fn test_endpoint(
    State(engine): State<EngineHandle>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let sub = visible_subscription(&engine, &auth, &id).await?;
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
        (status = 400, body = ErrorResponse), (status = 404, body = ErrorResponse)))]
async fn rotate_secret(
    State(engine): State<EngineHandle>,
    auth: Auth,
    Path(id): Path<String>,
    body: Request,
) -> ApiResult<impl IntoResponse> {
    let sub = visible_subscription(&engine, &auth, &id).await?;
    let depth = depth_limit(&body);
    // The body is optional: an empty one rotates to a generated secret with the default grace.
    let bytes = Bytes::from_request(body, &())
        .await
        .map_err(|r| ApiError::new(r.status(), "bad_request", r.body_text()))?;
    let body: RotateBody = if bytes.is_empty() {
        RotateBody::default()
    } else {
        serde_json::from_value(input::parse(&bytes, depth)?)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid", e.to_string()))?
    };
    let grace = body.grace_seconds.map(std::time::Duration::from_secs);
    Ok(Json(
        engine.rotate_secret(&sub.id, body.secret, grace).await?,
    ))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListDeliveries {
    /// Only this status: pending, in_flight, delivered, failed, skipped, dropped.
    status: Option<String>,
    /// At most this many (1 to 1000, default 100).
    limit: Option<u32>,
    /// The cursor of the next page (a previous page's `next`).
    after: Option<String>,
}

#[utoipa::path(get, path = "/v1/subscriptions/{id}/deliveries", tag = "deliveries",
    params(("id" = String, Path), ListDeliveries),
    responses((status = 200, body = DeliveryPage), (status = 400, body = ErrorResponse),
        (status = 404, body = ErrorResponse)))]
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

/// One event envelope from the wire to the engine's input type: tenant filled for tenant keys,
/// the idempotency key as its id, the schema, the tenant check (404), then serde.
fn prepare_event(auth: &Auth, mut body: Value, key: Option<&str>) -> ApiResult<EventInput> {
    auth.fill_tenant(&mut body);
    if let (Some(key), Value::Object(obj)) = (key, &mut body) {
        match obj.get("id") {
            None | Some(Value::Null) => {
                obj.insert("id".into(), Value::String(key.to_owned()));
            }
            Some(Value::String(id)) if id == key => {}
            Some(_) => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "idempotency_key_mismatch",
                    "the body's id and the Idempotency-Key header differ; send one, or both equal",
                )
                .with_field("/id"));
            }
        }
    }
    input::check(&SCHEMAS.event, &body).map_err(input::FieldError::into_api)?;
    auth.scope_body(&mut body)?;
    serde_json::from_value(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid", e.to_string()))
}

#[utoipa::path(post, path = "/v1/events", tag = "events", request_body = EventInput,
    params(("Idempotency-Key" = Option<String>, Header,
        description = "Used as the event id when the body has none; must equal it otherwise")),
    responses(
        (status = 202, description = "Journaled with its deliveries (or a duplicate of an earlier one)", body = PublishReceipt),
        (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse),
        (status = 404, body = ErrorResponse), (status = 413, body = ErrorResponse),
        (status = 415, body = ErrorResponse),
        (status = 429, description = "Intake queue full; see Retry-After", body = ErrorResponse),
        (status = 503, description = "Journal unavailable; see Retry-After", body = ErrorResponse)))]
async fn publish(
    State(engine): State<EngineHandle>,
    auth: Auth,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<impl IntoResponse> {
    let key = idempotency_key(&headers)?;
    let event = prepare_event(&auth, body, key.as_deref())?;
    let receipt = engine.publish(event).await?;
    Ok((StatusCode::ACCEPTED, Json(receipt)))
}

/// The outcome of one batch item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum ItemStatus {
    /// Journaled with its deliveries.
    Accepted,
    /// Its (tenant, id) was published before; nothing new was created.
    Duplicate,
    /// Refused; see `error`. Nothing of it was written.
    Rejected,
}

/// One item's result, in the order of the request.
#[derive(Debug, Serialize, ToSchema)]
struct BatchItem {
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
    fn rejected(index: usize, e: ApiError) -> Self {
        BatchItem {
            index,
            status: ItemStatus::Rejected,
            id: None,
            seq: None,
            deliveries: None,
            error: Some(e.body()),
        }
    }

    fn journaled(index: usize, r: PublishReceipt) -> Self {
        BatchItem {
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
        }
    }
}

/// The answer to a batch: counts (`accepted` includes duplicates) and one result per item.
#[derive(Debug, Serialize, ToSchema)]
struct BatchResponse {
    accepted: usize,
    rejected: usize,
    results: Vec<BatchItem>,
}

#[utoipa::path(post, path = "/v1/events/batch", tag = "events",
    request_body(content = Vec<EventInput>, description = "1 to 1000 event envelopes"),
    responses(
        (status = 200, description = "Every valid item journaled in one commit; per-item results", body = BatchResponse),
        (status = 400, description = "Not a JSON array, or empty", body = ErrorResponse),
        (status = 401, body = ErrorResponse),
        (status = 413, description = "Over 1000 items or over the batch body limit", body = ErrorResponse),
        (status = 415, body = ErrorResponse),
        (status = 429, description = "Intake queue full; nothing accepted", body = ErrorResponse),
        (status = 503, description = "Journal unavailable; nothing accepted", body = ErrorResponse)))]
async fn publish_batch(
    State(state): State<AppState>,
    auth: Auth,
    req: Request,
) -> ApiResult<Json<BatchResponse>> {
    input::require_json(req.headers())?;
    let bytes = Bytes::from_request(req, &())
        .await
        .map_err(|r| ApiError::new(r.status(), "bad_request", r.body_text()))?;
    // The array is one level more than its events.
    let value = input::parse(&bytes, state.cfg.json_max_depth + 1)?;
    let Value::Array(items) = value else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "schema_violation",
            "body: must be a JSON array of event envelopes",
        )
        .with_field(""));
    };
    let max = state.cfg.batch_max_items;
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
    let mut results: Vec<Option<BatchItem>> = Vec::with_capacity(items.len());
    let mut events = Vec::with_capacity(items.len());
    let mut positions = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        match prepare_event(&auth, item, None) {
            Ok(e) => {
                events.push(e);
                positions.push(index);
                results.push(None);
            }
            Err(e) => results.push(Some(BatchItem::rejected(index, e))),
        }
    }
    if !events.is_empty() {
        let outcomes = state.engine.publish_batch(events).await?;
        for (index, outcome) in positions.into_iter().zip(outcomes) {
            results[index] = Some(match outcome {
                Ok(receipt) => BatchItem::journaled(index, receipt),
                Err(e) => BatchItem::rejected(index, e.into()),
            });
        }
    }
    let results: Vec<BatchItem> = results
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            r.unwrap_or_else(|| {
                BatchItem::rejected(i, Error::Internal("no result for this item".into()).into())
            })
        })
        .collect();
    let rejected = results
        .iter()
        .filter(|r| r.status == ItemStatus::Rejected)
        .count();
    Ok(Json(BatchResponse {
        accepted: results.len() - rejected,
        rejected,
        results,
    }))
}

async fn visible_delivery(
    engine: &EngineHandle,
    auth: &Auth,
    id: &str,
) -> ApiResult<crate::domain::DeliveryDetail> {
    let id = parse_delivery_id(id)?;
    let detail = engine.get_delivery(id).await?;
    if !auth.0.can_access(&detail.delivery.tenant_id) {
        return Err(Error::not_found("delivery", id).into());
    }
    Ok(detail)
}

#[utoipa::path(get, path = "/v1/deliveries/{id}", tag = "deliveries",
    params(("id" = String, Path, description = "A delivery id, `dlv_<n>`")),
    responses((status = 200, description = "The delivery with `attemptCount` and its attempt log as `attempts`", body = Object),
        (status = 404, body = ErrorResponse)))]
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

#[utoipa::path(post, path = "/v1/deliveries/{id}/resubmit", tag = "deliveries",
    params(("id" = String, Path)),
    responses((status = 200, body = Delivery), (status = 404, body = ErrorResponse),
        (status = 409, body = ErrorResponse)))]
async fn resubmit(
    State(engine): State<EngineHandle>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let detail = visible_delivery(&engine, &auth, &id).await?;
    Ok(Json(engine.resubmit(detail.delivery.id).await?))
}

#[utoipa::path(post, path = "/v1/deliveries/{id}/skip", tag = "deliveries",
    params(("id" = String, Path)),
    responses((status = 200, body = Delivery), (status = 404, body = ErrorResponse),
        (status = 409, body = ErrorResponse)))]
async fn skip(
    State(engine): State<EngineHandle>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let detail = visible_delivery(&engine, &auth, &id).await?;
    Ok(Json(engine.skip(detail.delivery.id).await?))
}
