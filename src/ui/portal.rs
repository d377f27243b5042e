//! Tenant portal links: the admin creates a short-lived signed link for one tenant
//! (`POST /v1/tenants/{id}/portal-link`); whoever opens it gets the dashboard scoped to that
//! tenant, without a key.
//!
//! A link's token is `base64url(tenant \n expiry_ms \n nonce) . base64url(HMAC-SHA256)` under a
//! key drawn at random when the server starts. Invariants:
//! - A token is accepted only with a valid MAC, before its expiry, and once: opening it spends
//!   its nonce (spent nonces are remembered until they expire).
//! - The link opens a page with a button, and only that button's POST spends the token and
//!   starts the session: a mail scanner that fetches the link spends nothing, and the session
//!   cookie (`SameSite=Strict`) is set by a same-site request, so the browser sends it after.
//! - Links die with the process (the key is not stored): they are meant to be used within
//!   minutes (`UiConfig::portal_link_ttl`, default 15, at most `UiConfig::max_portal_link_ttl`).
//! - The route answers like the API: bearer key, JSON body, JSON errors (400 for a body that is
//!   not `{"ttlSeconds": n}`, 422 for a life out of range); only the admin key may create links
//!   (a tenant key gets 403), and an unknown tenant is 404.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use askama::Template;
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::json;
use sha2::Sha256;

use super::UiState;
use super::error::{UiError, UiResult};
use super::form::Form;
use super::session::{LOGIN_COOKIE, cookie, random_token, same_secret, set_cookie, signed_in};
use super::view::{Chrome, render, time};
use crate::domain::{Principal, TenantId, Timestamp};

/// The key portal links are signed with, and the nonces already spent.
pub(super) struct LinkKey {
    key: [u8; 32],
    spent: Mutex<HashMap<String, i64>>,
}

impl std::fmt::Debug for LinkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkKey").finish_non_exhaustive()
    }
}

/// Why a token was refused (the page says only that the link is not valid).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum LinkRefused {
    Malformed,
    BadSignature,
    Expired,
    Spent,
}

impl LinkKey {
    pub(super) fn generate() -> LinkKey {
        LinkKey {
            key: rand::random(),
            spent: Mutex::new(HashMap::new()),
        }
    }

    fn mac(&self, payload: &[u8]) -> Hmac<Sha256> {
        // HMAC takes keys of any length; 32 bytes cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(payload);
        mac
    }

    /// A token for `tenant` valid until `expires_ms`.
    pub(super) fn sign(&self, tenant: &TenantId, expires_ms: i64) -> String {
        let payload = format!("{tenant}\n{expires_ms}\n{}", random_token());
        let tag = self.mac(payload.as_bytes()).finalize().into_bytes();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(payload.as_bytes()),
            URL_SAFE_NO_PAD.encode(tag)
        )
    }

    /// The tenant of a valid, unexpired token, and its nonce and expiry.
    fn verify(&self, token: &str, now_ms: i64) -> Result<(TenantId, String, i64), LinkRefused> {
        let (payload, tag) = token.split_once('.').ok_or(LinkRefused::Malformed)?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| LinkRefused::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| LinkRefused::Malformed)?;
        self.mac(&payload)
            .verify_slice(&tag)
            .map_err(|_| LinkRefused::BadSignature)?;
        let text = String::from_utf8(payload).map_err(|_| LinkRefused::Malformed)?;
        let mut parts = text.splitn(3, '\n');
        let (Some(tenant), Some(expires), Some(nonce)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(LinkRefused::Malformed);
        };
        let expires: i64 = expires.parse().map_err(|_| LinkRefused::Malformed)?;
        if expires <= now_ms {
            return Err(LinkRefused::Expired);
        }
        let spent = self
            .spent
            .lock()
            .map(|s| s.contains_key(nonce))
            .unwrap_or(true);
        if spent {
            return Err(LinkRefused::Spent);
        }
        Ok((TenantId::from(tenant), nonce.to_owned(), expires))
    }

    /// Verifies a token and spends it: a second use is refused.
    pub(super) fn redeem(&self, token: &str, now_ms: i64) -> Result<TenantId, LinkRefused> {
        let (tenant, nonce, expires) = self.verify(token, now_ms)?;
        let mut spent = self.spent.lock().map_err(|_| LinkRefused::Spent)?;
        spent.retain(|_, exp| *exp > now_ms);
        if spent.insert(nonce, expires).is_some() {
            return Err(LinkRefused::Spent);
        }
        Ok(tenant)
    }
}

pub(super) fn routes() -> Router<UiState> {
    Router::new()
        .route("/v1/tenants/{id}/portal-link", post(create_portal_link))
        .route("/ui/portal", get(portal_page).post(open_portal))
}

fn api_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

struct LinkRequest {
    ttl_seconds: Option<u64>,
}

/// `schemas/portal-link.schema.json`, bundled; a schema that does not compile is a bug caught by
/// the portal-link tests before it could ship.
#[allow(clippy::expect_used)]
static LINK_SCHEMA: std::sync::LazyLock<jsonschema::Validator> = std::sync::LazyLock::new(|| {
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../../schemas/portal-link.schema.json"))
            .expect("bundled schema is JSON");
    jsonschema::validator_for(&schema).expect("bundled schema compiles")
});

/// A portal link, as `POST /v1/tenants/{id}/portal-link` answers.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PortalLink {
    /// The tenant the link opens.
    tenant_id: TenantId,
    /// The link's path and query, to append to the server's base URL; it holds the token.
    path: String,
    /// When the link stops working (whether or not it was used).
    expires_at: Timestamp,
}

#[utoipa::path(post, path = "/v1/tenants/{id}/portal-link", tag = "tenants",
    params(("id" = String, Path, pattern = "^[A-Za-z0-9_.:-]{1,128}$")),
    responses((status = 201, description = "Created; open the path within its life, once", body = PortalLink)))]
pub(crate) async fn create_portal_link(
    State(state): State<UiState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let key = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|k| !k.is_empty());
    let Some(key) = key else {
        return api_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing Authorization: Bearer <key>",
        );
    };
    match state.engine.authenticate(key).await {
        Ok(Some(Principal::Admin)) => {}
        Ok(Some(Principal::Tenant(_))) => {
            return api_error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this operation needs the admin key",
            );
        }
        Ok(None) => {
            return api_error(StatusCode::UNAUTHORIZED, "unauthorized", "unknown API key");
        }
        Err(e) => return engine_error(e),
    }
    let req = if body.iter().all(u8::is_ascii_whitespace) {
        LinkRequest { ttl_seconds: None }
    } else if body.len() > 1024 {
        return api_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the body exceeds this route's limit of 1024 bytes",
        );
    } else {
        let value = match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(v) => v,
            Err(e) => {
                return api_error(
                    StatusCode::BAD_REQUEST,
                    "malformed_json",
                    &format!("the body is not JSON: {e}"),
                );
            }
        };
        // The same JSON Schema the OpenAPI document publishes, so the two cannot drift.
        if let Some(e) = LINK_SCHEMA.iter_errors(&value).next() {
            return api_error(
                StatusCode::BAD_REQUEST,
                "schema_violation",
                &format!("{}: {}", e.instance_path().as_str(), e.masked()),
            );
        }
        // The schema bounds it to 1..=604800, an integer (possibly written `134.0`): exact.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let ttl_seconds = value
            .get("ttlSeconds")
            .and_then(serde_json::Value::as_f64)
            .map(|f| f as u64);
        LinkRequest { ttl_seconds }
    };
    let ttl = req
        .ttl_seconds
        .map_or(state.cfg.portal_link_ttl, Duration::from_secs);
    if ttl > state.cfg.max_portal_link_ttl {
        // As in the API: the body has the right shape, the configured rule refuses it.
        return api_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            &format!(
                "ttlSeconds: must be between 1 and {}",
                state.cfg.max_portal_link_ttl.as_secs()
            ),
        );
    }
    let tenant = TenantId::from(id);
    if let Err(e) = state.engine.get_tenant(&tenant).await {
        return engine_error(e);
    }
    let expires = Timestamp::now()
        .as_ms()
        .saturating_add(ttl.as_millis() as i64);
    let token = state.links.sign(&tenant, expires);
    let path = format!("/ui/portal?token={token}");
    let link = PortalLink {
        tenant_id: tenant,
        path,
        expires_at: Timestamp::from_ms(expires),
    };
    (StatusCode::CREATED, Json(link)).into_response()
}

fn engine_error(e: crate::error::Error) -> Response {
    use crate::error::Error;
    match e {
        Error::NotFound { kind, id } => api_error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("{kind} {id} not found"),
        ),
        Error::ShuttingDown | Error::Unavailable { .. } => api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "hookline is unavailable; retry later",
        ),
        other => {
            tracing::error!(cause = %crate::error::error_chain(&other), "portal link failed");
            api_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            )
        }
    }
}

#[derive(Template)]
#[template(path = "portal.html")]
struct PortalPage {
    chrome: Chrome,
    tenant: String,
    expires: String,
    token: String,
    csrf: String,
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

fn not_valid() -> UiError {
    UiError::NotFound("this portal link is not valid, has expired or was already used".into())
}

async fn portal_page(
    State(state): State<UiState>,
    headers: HeaderMap,
    Query(q): Query<TokenQuery>,
) -> UiResult<Response> {
    let token = q.token.ok_or_else(not_valid)?;
    let (tenant, _, expires) = state
        .links
        .verify(&token, Timestamp::now().as_ms())
        .map_err(|_| not_valid())?;
    let csrf = random_token();
    let page = PortalPage {
        chrome: Chrome::anonymous(),
        tenant: tenant.to_string(),
        expires: time(Timestamp::from_ms(expires)),
        token,
        csrf: csrf.clone(),
    };
    // The button's double-submit cookie needs to outlive the page only while someone reads it.
    let cookie = set_cookie(
        &state,
        &headers,
        LOGIN_COOKIE,
        &csrf,
        Duration::from_secs(15 * 60),
    );
    Ok(([(header::SET_COOKIE, cookie)], render(&page)?).into_response())
}

async fn open_portal(
    State(state): State<UiState>,
    headers: HeaderMap,
    form: Form<8192>,
) -> UiResult<Response> {
    let double_submit = match (cookie(&headers, LOGIN_COOKIE), form.get("csrf")) {
        (Some(c), Some(f)) => same_secret(c, f),
        _ => false,
    };
    if !double_submit {
        return Err(UiError::Forbidden(
            "the portal page expired or came from another site; open the link again".into(),
        ));
    }
    let token = form.get("token").ok_or_else(not_valid)?;
    let tenant = state
        .links
        .redeem(token, Timestamp::now().as_ms())
        .map_err(|_| not_valid())?;
    let session = state.sessions.start(Principal::Tenant(tenant), true);
    Ok(signed_in(&state, &headers, &session, "/ui/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_opens_once_before_it_expires() {
        let k = LinkKey::generate();
        let t = k.sign(&TenantId::from("acme.eu"), 10_000);
        assert_eq!(k.redeem(&t, 9_000), Ok(TenantId::from("acme.eu")));
        assert_eq!(k.redeem(&t, 9_001), Err(LinkRefused::Spent));
        let late = k.sign(&TenantId::from("acme"), 10_000);
        assert_eq!(k.redeem(&late, 10_000), Err(LinkRefused::Expired));
    }

    #[test]
    fn a_forged_or_foreign_link_is_refused() {
        let k = LinkKey::generate();
        let t = k.sign(&TenantId::from("acme"), 10_000);
        let other = LinkKey::generate();
        assert_eq!(other.redeem(&t, 0), Err(LinkRefused::BadSignature));
        // Another tenant's name under the same tag.
        let (_, tag) = t.split_once('.').expect("dot");
        let forged = format!("{}.{tag}", URL_SAFE_NO_PAD.encode("globex\n10000\nnonce"));
        assert_eq!(k.redeem(&forged, 0), Err(LinkRefused::BadSignature));
        assert_eq!(k.redeem("garbage", 0), Err(LinkRefused::Malformed));
    }
}
