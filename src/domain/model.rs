//! The engine's public data types: events, tenants, subscriptions, deliveries and attempts.
//!
//! Input types (`EventInput`, `NewSubscription`, `SubscriptionPatch`) are raw and are validated
//! once, at the door, into the journaled forms (`Event`, `SubscriptionSpec`) that cannot be
//! invalid. All types serialise as camelCase JSON, as the HTTP API and the seeds do.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use crate::domain::{DeliveryId, EventId, SubscriptionId, TenantId, validate_external_id};
use crate::error::{Error, Result};
pub use crate::policy::RetryPolicy;

/// The content type of every delivery, as the callback contract specifies.
pub(crate) const CONTENT_TYPE_JSON: &str = "application/json;charset=UTF-8";
use crate::policy::ratelimit::RateLimit;
use crate::security::signing::SigningKeys;
use crate::security::ssrf::{IpPolicy, check_url};
use crate::security::tls::ClientTls;

/// The kinds of notification of the callback contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NotificationType {
    /// A workflow node finished executing.
    NodeEvent,
    /// A workflow execution ended.
    WorkflowEvent,
    /// A transaction changed status.
    TransactionEvent,
    /// A case changed status.
    CaseEvent,
}

impl NotificationType {
    /// All notification types, in declaration order.
    pub const ALL: [NotificationType; 4] = [
        NotificationType::NodeEvent,
        NotificationType::WorkflowEvent,
        NotificationType::TransactionEvent,
        NotificationType::CaseEvent,
    ];

    /// The wire name, e.g. `TRANSACTION_EVENT`.
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationType::NodeEvent => "NODE_EVENT",
            NotificationType::WorkflowEvent => "WORKFLOW_EVENT",
            NotificationType::TransactionEvent => "TRANSACTION_EVENT",
            NotificationType::CaseEvent => "CASE_EVENT",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// An event as a producer submits it: the callback seed's envelope, with an optional `id`
/// (generated when absent) and an optional `workflowId` used by subscription filters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventInput {
    /// The producer's id for this event; publishing the same (tenant, id) twice is idempotent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The tenant (customer) the event belongs to.
    pub tenant_id: String,
    /// A unique id of the end user the event concerns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_id: Option<String>,
    /// The transaction the event belongs to.
    pub transaction_id: String,
    /// What kind of notification this is.
    pub notification_type: NotificationType,
    /// The workflow that produced the event, used by `workflowIds` filters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_id: Option<String>,
    /// The event's content: a JSON object.
    #[serde(rename = "payLoad")]
    #[schema(value_type = Object)]
    pub pay_load: serde_json::Map<String, serde_json::Value>,
    /// When the event happened, RFC 3339.
    pub timestamp: String,
}

impl EventInput {
    /// A new event with an empty payload and the current time as `timestamp`.
    pub fn new(
        tenant_id: impl Into<String>,
        transaction_id: impl Into<String>,
        notification_type: NotificationType,
    ) -> Self {
        EventInput {
            id: None,
            tenant_id: tenant_id.into(),
            reference_id: None,
            transaction_id: transaction_id.into(),
            notification_type,
            workflow_id: None,
            pay_load: serde_json::Map::new(),
            timestamp: crate::domain::clock::format_ms(crate::domain::clock::now_ms()),
        }
    }

    /// Sets the producer's event id.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Sets the payload; anything that is not a JSON object is refused by `publish`.
    pub fn payload(mut self, payload: serde_json::Value) -> Self {
        self.pay_load = match payload {
            serde_json::Value::Object(map) => map,
            other => {
                let mut m = serde_json::Map::new();
                m.insert(String::from("__invalid__"), other);
                m
            }
        };
        self
    }

    /// Sets the workflow id.
    pub fn workflow_id(mut self, id: impl Into<String>) -> Self {
        self.workflow_id = Some(id.into());
        self
    }

    /// Sets the reference id.
    pub fn reference_id(mut self, id: impl Into<String>) -> Self {
        self.reference_id = Some(id.into());
        self
    }

    /// Validates the envelope into the journaled form, generating an id when none was given.
    pub(crate) fn validate(self) -> Result<Event> {
        validate_external_id("tenantId", &self.tenant_id)?;
        let id = match self.id {
            Some(id) => {
                validate_external_id("id", &id)?;
                if id.contains('.') {
                    // The signed content is "{id}.{timestamp}.{body}": a dot would make it ambiguous.
                    return Err(Error::invalid("id", "must not contain '.'"));
                }
                EventId::from(id)
            }
            None => EventId::generate(),
        };
        if self.transaction_id.is_empty() || self.transaction_id.len() > 256 {
            return Err(Error::invalid(
                "transactionId",
                "must be 1 to 256 characters",
            ));
        }
        if let Some(r) = &self.reference_id
            && r.len() > 256
        {
            return Err(Error::invalid(
                "referenceId",
                "must be at most 256 characters",
            ));
        }
        if let Some(w) = &self.workflow_id
            && (w.is_empty() || w.len() > 256)
        {
            return Err(Error::invalid("workflowId", "must be 1 to 256 characters"));
        }
        if self.pay_load.contains_key("__invalid__") && self.pay_load.len() == 1 {
            return Err(Error::invalid("payLoad", "must be a JSON object"));
        }
        if time::OffsetDateTime::parse(
            &self.timestamp,
            &time::format_description::well_known::Rfc3339,
        )
        .is_err()
        {
            return Err(Error::invalid(
                "timestamp",
                "must be an RFC 3339 date-time, e.g. 2026-11-23T10:12:16.827Z",
            ));
        }
        Ok(Event {
            id,
            tenant_id: TenantId::from(self.tenant_id),
            reference_id: self.reference_id,
            transaction_id: self.transaction_id,
            notification_type: self.notification_type,
            workflow_id: self.workflow_id,
            pay_load: self.pay_load,
            timestamp: self.timestamp,
        })
    }
}

/// A journaled event: immutable once accepted. Its JSON form is the body POSTed to receivers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// The event id (`webhook-id` on the wire).
    pub id: EventId,
    /// The tenant the event belongs to.
    pub tenant_id: TenantId,
    /// A unique id of the end user the event concerns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_id: Option<String>,
    /// The transaction the event belongs to.
    pub transaction_id: String,
    /// What kind of notification this is.
    pub notification_type: NotificationType,
    /// The workflow that produced the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_id: Option<String>,
    /// The event's content.
    #[serde(rename = "payLoad")]
    pub pay_load: serde_json::Map<String, serde_json::Value>,
    /// When the event happened, RFC 3339.
    pub timestamp: String,
}

/// What `publish` returns once the event and its deliveries are durable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublishReceipt {
    /// The event id (generated when the producer gave none).
    pub id: EventId,
    /// The event's position in the journal; deliveries of a subscription go out in `seq` order.
    pub seq: i64,
    /// How many subscriptions the event was fanned out to.
    pub deliveries: u32,
    /// True when this (tenant, id) had been published before: nothing new was created.
    pub duplicate: bool,
}

/// A tenant to create.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewTenant {
    /// The tenant's id: 1 to 128 characters of `[A-Za-z0-9-_.:]`.
    pub id: String,
    /// A display name.
    pub name: String,
    /// A delivery rate limit shared by all the tenant's subscriptions (replacing the engine's
    /// default tenant limit); none: the default applies.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
}

/// Changes to a tenant; absent fields stay as they are.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TenantPatch {
    /// New rate limit of the tenant; `Some(None)` (`rateLimit: null`) removes it, so the engine's
    /// default tenant limit applies again.
    #[serde(default, deserialize_with = "double_option")]
    pub rate_limit: Option<Option<RateLimit>>,
}

/// A tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Tenant {
    /// The tenant's id.
    pub id: TenantId,
    /// A display name.
    pub name: String,
    /// The tenant's own rate limit, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Creation time, RFC 3339.
    pub created_at: String,
}

/// A newly created tenant with its API key, which is shown only this once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedTenant {
    /// The tenant.
    #[serde(flatten)]
    pub tenant: Tenant,
    /// The tenant's API key (only its hash is stored).
    pub api_key: String,
}

/// Who is calling, as established from an API key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The operator: may do everything.
    Admin,
    /// A tenant: may see and change only its own resources.
    Tenant(TenantId),
}

impl Principal {
    /// Whether this principal may act on resources of `tenant`.
    pub fn can_access(&self, tenant: &TenantId) -> bool {
        match self {
            Principal::Admin => true,
            Principal::Tenant(t) => t == tenant,
        }
    }
}

/// What happens to a subscription's queue when one of its deliveries ends `failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum FailurePolicy {
    /// The subscription stops at the failed delivery until an operator resubmits or skips it.
    #[default]
    Block,
    /// The failed delivery stays visible as `failed`; the queue moves on.
    Skip,
}

/// A subscription's externally visible state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum SubscriptionState {
    /// Delivering.
    Active,
    /// Paused by an operator; events accumulate.
    Paused,
    /// Stopped at a failed delivery under `onFailure: block`; events accumulate.
    Blocked,
    /// Disabled by the receiver (410 Gone); events accumulate until resumed.
    Disabled,
    /// Its actor kept crashing and was given up on; events accumulate until resumed.
    Faulted,
}

/// A subscription to create.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewSubscription {
    /// The owning tenant.
    pub tenant_id: String,
    /// The callback URL (`http` or `https`).
    pub url: String,
    /// Notification types to receive; empty means all.
    #[serde(default)]
    pub notification_types: Vec<NotificationType>,
    /// Workflow ids to receive; empty means all.
    #[serde(default)]
    pub workflow_ids: Vec<String>,
    /// Sent as the seed's `access-key` header.
    #[serde(default)]
    pub access_key: Option<String>,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Retry policy; engine defaults when absent.
    #[serde(default)]
    pub retry: Option<RetryPolicy>,
    /// Per-attempt timeout in ms (default 30000, 100 to 300000).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Failure policy (default `block`).
    #[serde(default)]
    pub on_failure: Option<FailurePolicy>,
    /// Signing secret (`whsec_` + base64 of 24 to 64 bytes); generated when absent.
    #[serde(default)]
    pub secret: Option<String>,
    /// Also sign with ed25519 (`v1a`); the public key is shown as `publicKey`.
    #[serde(default)]
    pub ed25519: bool,
    /// How to authenticate to the receiver (instead of `accessKey`).
    #[serde(default)]
    pub auth: Option<ReceiverAuth>,
    /// Pace deliveries to at most this rate (never reordering or dropping them).
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// A transform of the same tenant run on every delivery before it is signed and sent.
    #[serde(default)]
    pub transform: Option<TransformRef>,
    /// Client certificate (mutual TLS) and/or the CA to trust; works with any `auth`.
    #[serde(default)]
    pub tls: Option<ClientTls>,
}

impl NewSubscription {
    /// A subscription of `tenant` to `url` with every other field at its default.
    pub fn new(tenant: impl Into<String>, url: impl Into<String>) -> Self {
        NewSubscription {
            tenant_id: tenant.into(),
            url: url.into(),
            ..Default::default()
        }
    }
}

/// Changes to a subscription; absent fields stay as they are. `accessKey: null` removes the key.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubscriptionPatch {
    /// New callback URL.
    #[serde(default)]
    pub url: Option<String>,
    /// New notification type filter.
    #[serde(default)]
    pub notification_types: Option<Vec<NotificationType>>,
    /// New workflow id filter.
    #[serde(default)]
    pub workflow_ids: Option<Vec<String>>,
    /// New access key; `Some(None)` removes it.
    #[serde(default, deserialize_with = "double_option")]
    pub access_key: Option<Option<String>>,
    /// New custom headers (replaces all of them).
    #[serde(default)]
    pub headers: Option<BTreeMap<String, String>>,
    /// New retry policy.
    #[serde(default)]
    pub retry: Option<RetryPolicy>,
    /// New timeout.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// New failure policy.
    #[serde(default)]
    pub on_failure: Option<FailurePolicy>,
    /// New receiver authentication; `Some(None)` removes it.
    #[serde(default, deserialize_with = "double_option")]
    pub auth: Option<Option<ReceiverAuth>>,
    /// New rate limit; `Some(None)` removes it.
    #[serde(default, deserialize_with = "double_option")]
    pub rate_limit: Option<Option<RateLimit>>,
    /// New transform binding; `Some(None)` unbinds it.
    #[serde(default, deserialize_with = "double_option")]
    pub transform: Option<Option<TransformRef>>,
    /// New TLS settings (replaced as a whole); `Some(None)` removes them.
    #[serde(default, deserialize_with = "double_option")]
    pub tls: Option<Option<ClientTls>>,
}

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
    pub created_at: String,
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

fn double_option<'de, D, T>(d: D) -> std::result::Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// How hookline authenticates to a receiver (besides the signature every request carries).
/// Secrets in here are never returned by the API and never logged.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
pub enum ReceiverAuth {
    /// The callback contract's static `access-key` header.
    AccessKey {
        /// The key.
        key: String,
    },
    /// HTTP Basic authentication.
    Basic {
        /// User name (no `:`).
        username: String,
        /// Password.
        password: String,
    },
    /// A static bearer token.
    Bearer {
        /// The token.
        token: String,
    },
    /// OAuth2 client credentials at a token endpoint (the lending seed's gateway): the token is
    /// cached until shortly before it expires; a 401 from the receiver refreshes it once.
    Oauth2 {
        /// The token endpoint.
        token_url: String,
        /// Client id (sent with HTTP Basic to the token endpoint).
        client_id: String,
        /// Client secret.
        client_secret: String,
        /// Requested scope.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scope: Option<String>,
        /// Extra headers of the token request.
        #[serde(default)]
        token_headers: BTreeMap<String, String>,
        /// Extra headers of every delivery (e.g. entityId, appId, branchCode, userId,
        /// SERVICE-CONSUMER).
        #[serde(default)]
        headers: BTreeMap<String, String>,
    },
}

impl std::fmt::Debug for ReceiverAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReceiverAuth({})", self.view())
    }
}

impl ReceiverAuth {
    /// What may be shown of it: the type and the non-secret fields.
    pub fn view(&self) -> serde_json::Value {
        match self {
            ReceiverAuth::AccessKey { .. } => serde_json::json!({"type": "accessKey"}),
            ReceiverAuth::Basic { username, .. } => {
                serde_json::json!({"type": "basic", "username": username})
            }
            ReceiverAuth::Bearer { .. } => serde_json::json!({"type": "bearer"}),
            ReceiverAuth::Oauth2 {
                token_url,
                client_id,
                scope,
                token_headers,
                headers,
                ..
            } => serde_json::json!({
                "type": "oauth2",
                "tokenUrl": token_url,
                "clientId": client_id,
                "scope": scope,
                "tokenHeaders": token_headers.keys().collect::<Vec<_>>(),
                "headers": headers.keys().collect::<Vec<_>>(),
            }),
        }
    }

    fn validate(&self, policy: &IpPolicy) -> Result<()> {
        let visible = |field: &str, v: &str| {
            if v.is_empty() || v.len() > 4096 || reqwest::header::HeaderValue::from_str(v).is_err()
            {
                Err(Error::invalid(
                    field,
                    "must be 1 to 4096 visible ASCII characters",
                ))
            } else {
                Ok(())
            }
        };
        match self {
            ReceiverAuth::AccessKey { key } => visible("auth.key", key),
            ReceiverAuth::Bearer { token } => visible("auth.token", token),
            ReceiverAuth::Basic { username, password } => {
                if username.is_empty() || username.contains(':') || username.len() > 256 {
                    return Err(Error::invalid(
                        "auth.username",
                        "must be 1 to 256 characters without ':'",
                    ));
                }
                if password.len() > 1024 {
                    return Err(Error::invalid(
                        "auth.password",
                        "must be at most 1024 characters",
                    ));
                }
                Ok(())
            }
            ReceiverAuth::Oauth2 {
                token_url,
                client_id,
                client_secret,
                token_headers,
                headers,
                ..
            } => {
                let url =
                    url::Url::parse(token_url).map_err(|e| Error::invalid("auth.tokenUrl", e))?;
                check_url(&url, policy).map_err(|e| Error::invalid("auth.tokenUrl", e))?;
                if client_id.is_empty() || client_id.len() > 512 {
                    return Err(Error::invalid(
                        "auth.clientId",
                        "must be 1 to 512 characters",
                    ));
                }
                if client_secret.len() > 4096 {
                    return Err(Error::invalid(
                        "auth.clientSecret",
                        "must be at most 4096 characters",
                    ));
                }
                validate_headers("auth.tokenHeaders", token_headers)?;
                validate_headers("auth.headers", headers)
            }
        }
    }
}

/// Checks custom header names and values: valid HTTP, and none that hookline sets itself.
fn validate_headers(field: &str, headers: &BTreeMap<String, String>) -> Result<()> {
    if headers.len() > 32 {
        return Err(Error::invalid(field, "at most 32 headers"));
    }
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(Error::invalid(
                format!("{field}.{name}"),
                "is not a valid header name",
            ));
        }
        if RESERVED_HEADERS.contains(&lower.as_str())
            || lower.starts_with("webhook-")
            || lower == "authorization"
        {
            return Err(Error::invalid(
                format!("{field}.{name}"),
                "is set by hookline and cannot be overridden",
            ));
        }
        if value.len() > 4096 || reqwest::header::HeaderValue::from_str(value).is_err() {
            return Err(Error::invalid(
                format!("{field}.{name}"),
                "value must be at most 4096 visible characters",
            ));
        }
    }
    Ok(())
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

/// Header names a subscription may not set: hookline owns them.
const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "host",
    "user-agent",
    "access-key",
    "transfer-encoding",
    "connection",
];

/// The validated, journaled configuration of a subscription.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SubscriptionSpec {
    pub url: String,
    pub notification_types: Vec<NotificationType>,
    pub workflow_ids: Vec<String>,
    pub access_key: Option<String>,
    pub headers: BTreeMap<String, String>,
    pub retry: RetryPolicy,
    pub timeout_ms: u64,
    pub on_failure: FailurePolicy,
    #[serde(default)]
    pub signing: SigningKeys,
    #[serde(default)]
    pub auth: Option<ReceiverAuth>,
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<TransformRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTls>,
}

// Secrets stay out of logs and panics: Debug names them only.
impl std::fmt::Debug for SubscriptionSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriptionSpec")
            .field("url", &self.url)
            .field("notification_types", &self.notification_types)
            .field("workflow_ids", &self.workflow_ids)
            .field(
                "access_key",
                &self.access_key.as_ref().map(|_| "<redacted>"),
            )
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("retry", &self.retry)
            .field("timeout_ms", &self.timeout_ms)
            .field("on_failure", &self.on_failure)
            .field("signing", &self.signing)
            .field("auth", &self.auth)
            .field("rate_limit", &self.rate_limit)
            .field("transform", &self.transform)
            .field("tls", &self.tls)
            .finish()
    }
}

/// What a new subscription gets for the settings it leaves out, and the address rules its URL
/// is checked against (the engine's configuration, passed down).
#[derive(Debug, Clone)]
pub(crate) struct SubscriptionDefaults {
    pub retry: RetryPolicy,
    pub timeout_ms: u64,
    pub ip_policy: IpPolicy,
}

impl SubscriptionSpec {
    pub const MIN_TIMEOUT_MS: u64 = 100;
    pub const MAX_TIMEOUT_MS: u64 = 300_000;

    pub(crate) fn from_new(n: NewSubscription, defaults: &SubscriptionDefaults) -> Result<Self> {
        let signing = SigningKeys::create(n.secret.as_deref(), n.ed25519)
            .map_err(|e| Error::invalid("secret", e))?;
        let spec = SubscriptionSpec {
            url: n.url,
            notification_types: n.notification_types,
            workflow_ids: n.workflow_ids,
            access_key: n.access_key,
            headers: n.headers,
            retry: n.retry.unwrap_or_else(|| defaults.retry.clone()),
            timeout_ms: n.timeout_ms.unwrap_or(defaults.timeout_ms),
            on_failure: n.on_failure.unwrap_or_default(),
            signing,
            auth: n.auth,
            rate_limit: n.rate_limit,
            transform: n.transform,
            tls: n.tls,
        };
        spec.validate(&defaults.ip_policy)?;
        Ok(spec)
    }

    pub(crate) fn apply(&self, p: SubscriptionPatch, policy: &IpPolicy) -> Result<Self> {
        let mut s = self.clone();
        if let Some(v) = p.url {
            s.url = v;
        }
        if let Some(v) = p.notification_types {
            s.notification_types = v;
        }
        if let Some(v) = p.workflow_ids {
            s.workflow_ids = v;
        }
        if let Some(v) = p.access_key {
            s.access_key = v;
        }
        if let Some(v) = p.headers {
            s.headers = v;
        }
        if let Some(v) = p.retry {
            s.retry = v;
        }
        if let Some(v) = p.timeout_ms {
            s.timeout_ms = v;
        }
        if let Some(v) = p.on_failure {
            s.on_failure = v;
        }
        if let Some(v) = p.auth {
            s.auth = v;
        }
        if let Some(v) = p.rate_limit {
            s.rate_limit = v;
        }
        if let Some(v) = p.transform {
            s.transform = v;
        }
        if let Some(v) = p.tls {
            s.tls = v;
        }
        s.validate(policy)?;
        Ok(s)
    }

    fn validate(&self, policy: &IpPolicy) -> Result<()> {
        let url = url::Url::parse(&self.url).map_err(|e| Error::invalid("url", e))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::invalid("url", "scheme must be http or https"));
        }
        if url.host().is_none() {
            return Err(Error::invalid("url", "must have a host"));
        }
        // A literal address (or localhost) that deliveries would refuse is refused now; names
        // are checked again when each attempt resolves them.
        if let Err(e) = check_url(&url, policy) {
            return Err(Error::invalid("url", e));
        }
        if self.url.len() > 2048 {
            return Err(Error::invalid("url", "must be at most 2048 characters"));
        }
        for w in &self.workflow_ids {
            if w.is_empty() || w.len() > 256 {
                return Err(Error::invalid(
                    "workflowIds",
                    "each must be 1 to 256 characters",
                ));
            }
        }
        if let Some(k) = &self.access_key
            && (k.is_empty()
                || k.len() > 1024
                || reqwest::header::HeaderValue::from_str(k).is_err())
        {
            return Err(Error::invalid(
                "accessKey",
                "must be 1 to 1024 visible ASCII characters",
            ));
        }
        validate_headers("headers", &self.headers)?;
        if let Some(l) = &self.rate_limit {
            l.validate()?;
        }
        if let Some(t) = &self.transform {
            validate_transform_name("transform.name", &t.name)?;
            if t.version == 0 {
                return Err(Error::invalid("transform.version", "versions start at 1"));
            }
        }
        if let Some(auth) = &self.auth {
            if self.access_key.is_some() {
                return Err(Error::invalid(
                    "auth",
                    "set either accessKey or auth, not both",
                ));
            }
            auth.validate(policy)?;
        }
        if let Some(tls) = &self.tls {
            tls.validate()?;
        }
        self.retry.validate()?;
        if !(Self::MIN_TIMEOUT_MS..=Self::MAX_TIMEOUT_MS).contains(&self.timeout_ms) {
            return Err(Error::invalid(
                "timeoutMs",
                format!(
                    "must be between {} and {}",
                    Self::MIN_TIMEOUT_MS,
                    Self::MAX_TIMEOUT_MS
                ),
            ));
        }
        Ok(())
    }

    /// Whether an event of this type and workflow goes to this subscription.
    pub(crate) fn matches(&self, ty: NotificationType, workflow: Option<&str>) -> bool {
        let type_ok = self.notification_types.is_empty() || self.notification_types.contains(&ty);
        let wf_ok = self.workflow_ids.is_empty()
            || workflow.is_some_and(|w| self.workflow_ids.iter().any(|x| x == w));
        type_ok && wf_ok
    }
}

/// A subscription as stored, with its state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    /// The subscription id.
    pub id: SubscriptionId,
    /// The owning tenant.
    pub tenant_id: TenantId,
    /// The callback URL.
    pub url: String,
    /// Notification types received; empty means all.
    pub notification_types: Vec<NotificationType>,
    /// Workflow ids received; empty means all.
    pub workflow_ids: Vec<String>,
    /// Whether an access key is configured (the key itself is never returned).
    pub access_key_set: bool,
    /// The receiver authentication's type and non-secret fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub auth: Option<serde_json::Value>,
    /// The rate limit pacing deliveries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// The transform run on every delivery before it is signed and sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<TransformRef>,
    /// The TLS settings, shown as fingerprints (the PEMs, the key above all, are never returned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<serde_json::Value>,
    /// Custom request headers.
    pub headers: BTreeMap<String, String>,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Per-attempt timeout in ms.
    pub timeout_ms: u64,
    /// Failure policy.
    pub on_failure: FailurePolicy,
    /// Current state.
    pub state: SubscriptionState,
    /// Why the subscription is blocked, disabled or faulted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_reason: Option<String>,
    /// The delivery holding the queue when `state` is `blocked`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_on: Option<DeliveryId>,
    /// The signing secret in full: present only in the answers to creation and rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// The signing secret, masked.
    pub secret_masked: String,
    /// When the previous secret (still sent during a rotation) stops being sent, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret_expires_at: Option<String>,
    /// The ed25519 public key (`whpk_…`) receivers verify `v1a` signatures with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// Creation time, RFC 3339.
    pub created_at: String,
    /// Last change, RFC 3339.
    pub updated_at: String,
}

/// What an endpoint test (the lending seed's "Test button") found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointTest {
    /// The receiver's status code, if it answered (a timeout is reported as 500, as the seeds do).
    pub status_code: Option<u16>,
    /// How long the request took.
    pub duration_ms: u64,
    /// What went wrong, if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Whether the endpoint accepted the signed test event with a 2xx.
    pub verified: bool,
}

/// A delivery's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting for its turn (or for a retry).
    Pending,
    /// An attempt is under way.
    InFlight,
    /// The receiver answered 2xx.
    Delivered,
    /// Given up on; see the attempts. Under `onFailure: block` it holds the queue.
    Failed,
    /// Skipped by an operator.
    Skipped,
    /// Dropped by a transform.
    Dropped,
}

impl DeliveryStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::InFlight => "in_flight",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Skipped => "skipped",
            DeliveryStatus::Dropped => "dropped",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        [
            DeliveryStatus::Pending,
            DeliveryStatus::InFlight,
            DeliveryStatus::Delivered,
            DeliveryStatus::Failed,
            DeliveryStatus::Skipped,
            DeliveryStatus::Dropped,
        ]
        .into_iter()
        .find(|d| d.as_str() == s)
    }

    /// Whether the delivery will not be attempted again without an operator.
    pub fn is_terminal(self) -> bool {
        !matches!(self, DeliveryStatus::Pending | DeliveryStatus::InFlight)
    }
}

/// One (event, subscription) pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// The delivery id.
    pub id: DeliveryId,
    /// The event delivered.
    pub event_id: EventId,
    /// The subscription delivered to.
    pub subscription_id: SubscriptionId,
    /// The tenant both belong to.
    pub tenant_id: TenantId,
    /// The event's journal sequence number: the delivery order.
    pub seq: i64,
    /// Current status.
    pub status: DeliveryStatus,
    /// Attempts made so far.
    pub attempts: u32,
    /// Status code of the last attempt, if it got a response (a timeout is recorded as 500).
    pub last_status_code: Option<u16>,
    /// Error of the last attempt, if any.
    pub last_error: Option<String>,
    /// When the next retry is due, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
    /// Last change, RFC 3339.
    pub updated_at: String,
}

/// One HTTP try of a delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    /// 1 for the first attempt.
    pub n: u32,
    /// Start time, RFC 3339.
    pub started_at: String,
    /// Duration in ms.
    pub duration_ms: u64,
    /// The response status (a timeout is recorded as 500, as the seeds do).
    pub status_code: Option<u16>,
    /// The kind of error: `timeout`, `connect`, `dns`, `reset`, `http_status`, `interrupted`, ….
    pub error_kind: Option<String>,
    /// A description of the error.
    pub error: Option<String>,
    /// The first bytes (at most 4 KiB) of the response body.
    pub response_snippet: Option<String>,
    /// What the subscription's transform printed during this attempt (bounded), if it printed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform_log: Option<String>,
}

/// A delivery with its attempt log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryDetail {
    /// The delivery.
    pub delivery: Delivery,
    /// Its attempts, oldest first.
    pub attempt_log: Vec<Attempt>,
}

/// Which deliveries of a subscription to list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeliveryQuery {
    /// Only this status.
    pub status: Option<DeliveryStatus>,
    /// At most this many (1 to 1000, default 100).
    pub limit: Option<u32>,
    /// Only after this cursor (from a previous page's `next`).
    pub after: Option<String>,
}

/// A page of deliveries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryPage {
    /// The deliveries, in `seq` order.
    pub items: Vec<Delivery>,
    /// The cursor of the next page, or `None` at the end.
    pub next: Option<String>,
}

/// A replay window (`POST /v1/subscriptions/{id}/replay`): the subscription's finished
/// deliveries of events accepted from `since` (inclusive) until `until` (exclusive; default
/// now), both RFC 3339.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplayWindow {
    pub since: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

impl ReplayWindow {
    /// The window in journal milliseconds, checked: both RFC 3339, `since` before `until`.
    pub(crate) fn to_ms(&self, now_ms: i64) -> Result<(i64, i64)> {
        let parse = |field: &str, s: &str| -> Result<i64> {
            let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .map_err(|e| Error::invalid(field, format!("must be an RFC 3339 time ({e})")))?;
            i64::try_from(t.unix_timestamp_nanos() / 1_000_000)
                .map_err(|_| Error::invalid(field, "out of range"))
        };
        let since = parse("since", &self.since)?;
        let until = match &self.until {
            Some(u) => parse("until", u)?,
            None => now_ms.saturating_add(1),
        };
        if until <= since {
            return Err(Error::invalid("until", "must be after since"));
        }
        Ok((since, until))
    }
}

/// The answer to a replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplayReceipt {
    /// Deliveries put back to pending.
    pub replayed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(types: Vec<NotificationType>, wfs: Vec<&str>) -> SubscriptionSpec {
        SubscriptionSpec {
            url: "http://example.com/".into(),
            notification_types: types,
            workflow_ids: wfs.into_iter().map(String::from).collect(),
            access_key: None,
            headers: BTreeMap::new(),
            retry: RetryPolicy::default(),
            timeout_ms: 30_000,
            on_failure: FailurePolicy::Block,
            signing: SigningKeys::default(),
            auth: None,
            rate_limit: None,
            transform: None,
            tls: None,
        }
    }

    #[test]
    fn filters_match_types_and_workflows() {
        let all = spec(vec![], vec![]);
        assert!(all.matches(NotificationType::CaseEvent, None));
        let nodes = spec(vec![NotificationType::NodeEvent], vec![]);
        assert!(nodes.matches(NotificationType::NodeEvent, Some("104")));
        assert!(!nodes.matches(NotificationType::CaseEvent, Some("104")));
        let wf = spec(vec![], vec!["104"]);
        assert!(wf.matches(NotificationType::CaseEvent, Some("104")));
        assert!(!wf.matches(NotificationType::CaseEvent, Some("105")));
        assert!(!wf.matches(NotificationType::CaseEvent, None));
    }

    #[test]
    fn envelope_validation_names_the_field() {
        let ok = EventInput::new("acme", "t1", NotificationType::NodeEvent);
        assert!(ok.clone().validate().is_ok());
        let mut bad = ok.clone();
        bad.timestamp = "yesterday".into();
        assert!(
            matches!(bad.validate(), Err(Error::Invalid { field, .. }) if field == "timestamp")
        );
        let bad = ok.clone().payload(serde_json::json!([1, 2]));
        assert!(matches!(bad.validate(), Err(Error::Invalid { field, .. }) if field == "payLoad"));
        let mut bad = ok;
        bad.transaction_id.clear();
        assert!(
            matches!(bad.validate(), Err(Error::Invalid { field, .. }) if field == "transactionId")
        );
    }

    #[test]
    fn envelope_json_uses_the_seed_names() {
        let json = serde_json::json!({
            "tenantId": "acme", "transactionId": "84e32dcfecc9f4dc",
            "notificationType": "NODE_EVENT", "payLoad": {"id": 28907},
            "timestamp": "2022-08-12T10:12:16.827Z"
        });
        let input: EventInput = serde_json::from_value(json).expect("seed envelope parses");
        let event = input.validate().expect("valid");
        let out = serde_json::to_value(&event).expect("serialises");
        assert_eq!(out["payLoad"]["id"], 28907);
        assert_eq!(out["notificationType"], "NODE_EVENT");
        assert!(out["id"].as_str().is_some_and(|s| s.starts_with("evt_")));
    }

    #[test]
    fn reserved_headers_are_refused() {
        let cfg = crate::config::EngineConfig::default().subscription_defaults();
        for name in ["Content-Type", "webhook-id", "access-key", "Host"] {
            let mut n = NewSubscription::new("acme", "http://example.com/hook");
            n.headers.insert(name.into(), "x".into());
            assert!(
                SubscriptionSpec::from_new(n, &cfg).is_err(),
                "{name} must be refused"
            );
        }
        let mut n = NewSubscription::new("acme", "http://example.com/hook");
        n.headers.insert("entityId".into(), "E1".into());
        assert!(SubscriptionSpec::from_new(n, &cfg).is_ok());
    }

    #[test]
    fn urls_and_limits_are_checked() {
        let cfg = crate::config::EngineConfig::default().subscription_defaults();
        for url in ["ftp://example.com/", "not a url", "http://"] {
            let n = NewSubscription::new("acme", url);
            assert!(
                SubscriptionSpec::from_new(n, &cfg).is_err(),
                "{url} must be refused"
            );
        }
        let mut n = NewSubscription::new("acme", "https://example.com/");
        n.retry = Some(RetryPolicy {
            max_attempts: 21,
            backoff_ms: vec![1],
        });
        assert!(SubscriptionSpec::from_new(n, &cfg).is_err());
        let mut n = NewSubscription::new("acme", "https://example.com/");
        n.timeout_ms = Some(5);
        assert!(SubscriptionSpec::from_new(n, &cfg).is_err());
    }
}
