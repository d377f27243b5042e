//! Transform metadata: the versions of a tenant's transforms, a subscription's binding to one
//! ([`TransformRef`]), and what a test run of one did ([`TransformTest`]).
//!
//! The modules themselves and their sandboxed runtime live in the `transform` layer above; this
//! is the plain data the API and the store exchange about them. Names are checked once here
//! ([`validate_transform_name`]) so they are safe in URLs and logs.

use serde::{Deserialize, Serialize};

use crate::domain::SubscriptionId;
use crate::domain::time::Timestamp;
use crate::error::{Error, Result};

/// One uploaded version of a tenant's transform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransformVersion {
    /// The transform's name.
    pub name: String,
    /// 1 for the first upload of the name, then 2, 3, …
    pub version: u32,
    /// sha256 of the uploaded module, lowercase hex (compare with `sha256sum`).
    pub sha256: String,
    /// Size of the uploaded module.
    pub size_bytes: u64,
    /// Upload time, RFC 3339.
    #[schema(value_type = String)]
    pub created_at: Timestamp,
}

/// A tenant's transform: its versions and the subscriptions bound to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransformInfo {
    /// The transform's name.
    pub name: String,
    /// Every version, oldest first.
    pub versions: Vec<TransformVersion>,
    /// The subscriptions bound to one of its versions (a bound transform cannot be deleted).
    pub bound_by: Vec<SubscriptionId>,
}

/// What a transform did with a test event (nothing was sent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransformTest {
    /// What hookline would do: `deliver`, `drop` or `error`.
    pub action: TransformAction,
    /// The headers that would be sent (before hookline's own `webhook-*` and auth headers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Vec<(String, String)>>,
    /// The body that would be sent, as UTF-8 text when it is valid UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// The body as base64, when it is not valid UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_base64: Option<String>,
    /// Why the event was dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Why the transform failed: a stable code (`transform_timeout`, `transform_trap`, …)
    /// and a message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<TransformTestError>,
    /// What the transform printed on stdout and stderr (bounded).
    pub log: String,
    /// Wall-clock time of the call.
    pub duration_us: u64,
}

/// What a transform decided, in a [`TransformTest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum TransformAction {
    /// Send the returned request.
    Deliver,
    /// Send nothing; the delivery ends as dropped.
    Drop,
    /// The transform failed; the delivery would fail without retry.
    Error,
}

/// A transform failure in a [`TransformTest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TransformTestError {
    /// Stable machine-readable code.
    pub code: String,
    /// What went wrong, for the tenant.
    pub message: String,
}

/// A subscription's binding to one version of one of its tenant's transforms.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TransformRef {
    /// The transform's name.
    pub name: String,
    /// The version, as returned by the upload.
    pub version: u32,
}

/// Transform names: 1 to 64 of `[a-z0-9-_.]`, starting with a letter or digit, so they are safe
/// in URLs and logs.
pub(crate) fn validate_transform_name(field: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            "must be 1 to 64 characters of a-z, 0-9, '-', '_' and '.', starting with a letter or digit",
        ))
    }
}
