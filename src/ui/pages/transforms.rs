//! `/ui/transforms`: a tenant's transforms, each with its versions (hash, size, upload time) and
//! the subscriptions bound to it, and a form to try one version on a pasted event envelope, as
//! a delivery would run it (nothing is sent or stored).
//!
//! A tenant sees its own; the admin picks a tenant. Uploading stays an API call (a binary
//! module is not a form field).

use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::Html;
use axum::routing::{get, post};
use serde::Deserialize;

use super::super::UiState;
use super::super::error::{UiError, UiResult};
use super::super::form::Form;
use super::super::session::Viewer;
use super::super::view::{Chrome, TenantOption, render, tenant_options, time};
use crate::domain::{EventInput, TenantId};

pub(super) fn routes() -> Router<UiState> {
    Router::new()
        .route("/ui/transforms", get(list))
        .route("/ui/transforms/{tenant}/{name}/test", post(test))
}

struct VersionRow {
    version: u32,
    sha256: String,
    size: u64,
    created: String,
}

struct TransformRow {
    name: String,
    versions: Vec<VersionRow>,
    bound_by: Vec<String>,
}

#[derive(Template)]
#[template(path = "transforms.html")]
struct TransformsPage {
    chrome: Chrome,
    tenant: String,
    tenants: Vec<TenantOption>,
    transforms: Vec<TransformRow>,
    sample: String,
}

#[derive(Deserialize, Default)]
struct ListQuery {
    tenant: Option<String>,
}

/// The envelope the test form starts with.
const SAMPLE: &str = r#"{
  "transactionId": "84e32dcfecc9f4dc",
  "notificationType": "NODE_EVENT",
  "workflowId": "104",
  "payLoad": {"id": 28907, "name": "8:Blacklist Check"},
  "timestamp": "2022-08-12T10:12:16.827Z"
}"#;

/// The tenant a page is about: a tenant viewer's own, or the one the admin picked.
fn tenant_of(viewer: &Viewer, requested: Option<&str>) -> UiResult<Option<TenantId>> {
    match (viewer.own_tenant(), requested.filter(|t| !t.is_empty())) {
        (Some(own), None) => Ok(Some(own.clone())),
        (Some(own), Some(r)) if r == own.as_str() => Ok(Some(own.clone())),
        (Some(_), Some(r)) => Err(UiError::NotFound(format!("tenant {r} not found"))),
        (None, r) => Ok(r.map(TenantId::from)),
    }
}

async fn list(
    State(state): State<UiState>,
    viewer: Viewer,
    Query(q): Query<ListQuery>,
) -> UiResult<Html<String>> {
    let tenant = tenant_of(&viewer, q.tenant.as_deref())?;
    let tenants = if viewer.is_admin() {
        tenant_options(
            state
                .engine
                .list_subscriptions(None)
                .await?
                .into_iter()
                .map(|s| s.tenant_id.to_string()),
        )
    } else {
        Vec::new()
    };
    let transforms = match &tenant {
        Some(t) => state
            .engine
            .list_transforms(t)
            .await?
            .into_iter()
            .map(|info| TransformRow {
                name: info.name,
                versions: info
                    .versions
                    .into_iter()
                    .map(|v| VersionRow {
                        version: v.version,
                        sha256: v.sha256.chars().take(16).collect(),
                        size: v.size_bytes,
                        created: time(v.created_at),
                    })
                    .collect(),
                bound_by: info.bound_by.iter().map(ToString::to_string).collect(),
            })
            .collect(),
        None => Vec::new(),
    };
    render(&TransformsPage {
        chrome: viewer.chrome("transforms"),
        tenant: tenant.map(|t| t.to_string()).unwrap_or_default(),
        tenants,
        transforms,
        sample: SAMPLE.to_owned(),
    })
}

#[derive(Template)]
#[template(path = "transform_test.html")]
struct TestPage {
    chrome: Chrome,
    tenant: String,
    name: String,
    version: u32,
    action: String,
    headers: Vec<(String, String)>,
    body: String,
    reason: String,
    error: String,
    log: String,
    duration_us: u64,
}

async fn test(
    State(state): State<UiState>,
    viewer: Viewer,
    Path((tenant, name)): Path<(String, String)>,
    form: Form,
) -> UiResult<Html<String>> {
    viewer.check_csrf(&form)?;
    let tenant =
        tenant_of(&viewer, Some(&tenant))?.ok_or_else(|| UiError::NotFound("no tenant".into()))?;
    let version: u32 = form
        .get("version")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| UiError::Invalid("version: pick a version".into()))?;
    let mut envelope: serde_json::Value = serde_json::from_str(form.raw("envelope").unwrap_or(""))
        .map_err(|e| UiError::Invalid(format!("envelope: not JSON ({e})")))?;
    if let Some(obj) = envelope.as_object_mut() {
        obj.insert("tenantId".into(), tenant.as_str().into());
    }
    let input: EventInput =
        serde_json::from_value(envelope).map_err(|e| UiError::Invalid(format!("envelope: {e}")))?;
    let r = state
        .engine
        .test_transform(&tenant, &name, version, input)
        .await?;
    let action = serde_json::to_value(r.action)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    render(&TestPage {
        chrome: viewer.chrome("transforms"),
        tenant: tenant.to_string(),
        name,
        version,
        action,
        headers: r.headers.unwrap_or_default(),
        body: r
            .body
            .map(|b| pretty(&b))
            .or(r.body_base64.map(|b| format!("(binary, base64) {b}")))
            .unwrap_or_default(),
        reason: r.reason.unwrap_or_default(),
        error: r
            .error
            .map(|e| format!("{}: {}", e.code, e.message))
            .unwrap_or_default(),
        log: r.log,
        duration_us: r.duration_us,
    })
}

/// JSON pretty-printed when it is JSON, else as it is.
pub(super) fn pretty(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| text.to_owned())
}
