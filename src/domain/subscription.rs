//! Subscriptions: what a tenant asks for ([`NewSubscription`], [`SubscriptionPatch`]), the
//! validated configuration the engine runs ([`SubscriptionSpec`]), and what the API shows
//! ([`Subscription`]).
//!
//! Input is raw and is validated once, at the door, into a [`SubscriptionSpec`] that cannot be
//! invalid: URL and OAuth2 token URL checked against the address rules (names are checked again
//! when each attempt resolves them), headers that hookline owns refused, limits in range. The
//! spec is journaled with its secrets sealed; the public view never carries a secret (the
//! signing secret appears in full only in the answers to creation and rotation).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::auth::{ReceiverAuth, ReceiverAuthView};
use crate::domain::event::NotificationType;
use crate::domain::headers::validate_headers;
use crate::domain::ordering::{BlockedKey, Ordering};
use crate::domain::time::Timestamp;
use crate::domain::transform::{TransformRef, validate_transform_name};
use crate::domain::{DeliveryId, SubscriptionId, TenantId};
use crate::error::{Error, Result};
use crate::policy::ratelimit::RateLimit;
use crate::policy::{RetryPolicy, StatusRules, StatusTable};
use crate::security::signing::SigningKeys;
use crate::security::ssrf::{IpPolicy, check_url};
use crate::security::tls::{ClientTls, TlsView};

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
    /// The status table receivers' answers are judged by (default `hookline`).
    #[serde(default)]
    pub status_table: Option<StatusTable>,
    /// Status codes (300 to 599) retried whatever the table says.
    #[serde(default)]
    pub retry_on: Option<Vec<u16>>,
    /// Status codes (300 to 599) that count as delivered whatever the table says.
    #[serde(default)]
    pub delivered_on: Option<Vec<u16>>,
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
    /// Strict order per key value instead of per subscription, with parallel lanes.
    #[serde(default)]
    pub ordering: Option<Ordering>,
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
    #[serde(default, deserialize_with = "crate::domain::double_option")]
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
    /// New status table (the lists stay as they are).
    #[serde(default)]
    pub status_table: Option<StatusTable>,
    /// New list of codes to retry (replaces it; `[]` empties it).
    #[serde(default)]
    pub retry_on: Option<Vec<u16>>,
    /// New list of codes that count as delivered (replaces it; `[]` empties it).
    #[serde(default)]
    pub delivered_on: Option<Vec<u16>>,
    /// New receiver authentication; `Some(None)` removes it.
    #[serde(default, deserialize_with = "crate::domain::double_option")]
    pub auth: Option<Option<ReceiverAuth>>,
    /// New rate limit; `Some(None)` removes it.
    #[serde(default, deserialize_with = "crate::domain::double_option")]
    pub rate_limit: Option<Option<RateLimit>>,
    /// New transform binding; `Some(None)` unbinds it.
    #[serde(default, deserialize_with = "crate::domain::double_option")]
    pub transform: Option<Option<TransformRef>>,
    /// New TLS settings (replaced as a whole); `Some(None)` removes them.
    #[serde(default, deserialize_with = "crate::domain::double_option")]
    pub tls: Option<Option<ClientTls>>,
    /// New ordering (replaced as a whole); `Some(None)` removes it. Queued deliveries keep the
    /// key they were given (see docs/ordering.md).
    #[serde(default, deserialize_with = "crate::domain::double_option")]
    pub ordering: Option<Option<Ordering>>,
}

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
    /// Absent from configs journaled before the option existed: hookline's table, no lists.
    #[serde(default, skip_serializing_if = "StatusRules::is_default")]
    pub statuses: StatusRules,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering: Option<Ordering>,
    /// Bumped by every change of `ordering.key` (set, changed, removed): deliveries fanned out
    /// under different epochs always keep their relative order (see docs/ordering.md).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub order_epoch: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
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
            .field("statuses", &self.statuses)
            .field("signing", &self.signing)
            .field("auth", &self.auth)
            .field("rate_limit", &self.rate_limit)
            .field("transform", &self.transform)
            .field("tls", &self.tls)
            .field("ordering", &self.ordering)
            .field("order_epoch", &self.order_epoch)
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
            statuses: StatusRules {
                table: n.status_table.unwrap_or_default(),
                retry_on: n.retry_on.unwrap_or_default(),
                delivered_on: n.delivered_on.unwrap_or_default(),
            },
            signing,
            auth: n.auth,
            rate_limit: n.rate_limit,
            transform: n.transform,
            tls: n.tls,
            ordering: n.ordering,
            order_epoch: 0,
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
        if let Some(v) = p.status_table {
            s.statuses.table = v;
        }
        if let Some(v) = p.retry_on {
            s.statuses.retry_on = v;
        }
        if let Some(v) = p.delivered_on {
            s.statuses.delivered_on = v;
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
        if let Some(v) = p.ordering {
            let key = |o: &Option<Ordering>| o.as_ref().map(|o| o.key.clone());
            if key(&v) != key(&s.ordering) {
                s.order_epoch = s.order_epoch.saturating_add(1);
            }
            s.ordering = v;
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
        if let Some(o) = &self.ordering {
            o.validate()?;
        }
        self.retry.validate()?;
        self.statuses.validate()?;
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

    /// How many attempts may be in flight at once (1 without `ordering`).
    pub(crate) fn lanes(&self) -> usize {
        self.ordering.as_ref().map_or(1, |o| usize::from(o.lanes))
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
    // This schema and `tls`'s are the loose ones the published OpenAPI document has always had.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub auth: Option<ReceiverAuthView>,
    /// The rate limit pacing deliveries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// The transform run on every delivery before it is signed and sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<TransformRef>,
    /// The TLS settings, shown as fingerprints (the PEMs, the key above all, are never returned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<serde_json::Value>)]
    pub tls: Option<TlsView>,
    /// Custom request headers.
    pub headers: BTreeMap<String, String>,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Per-attempt timeout in ms.
    pub timeout_ms: u64,
    /// Failure policy.
    pub on_failure: FailurePolicy,
    /// The status table receivers' answers are judged by.
    pub status_table: StatusTable,
    /// Status codes retried whatever the table says.
    pub retry_on: Vec<u16>,
    /// Status codes that count as delivered whatever the table says.
    pub delivered_on: Vec<u16>,
    /// Strict order per key value, with parallel lanes (absent: one order for all events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering: Option<Ordering>,
    /// Current state.
    pub state: SubscriptionState,
    /// Why the subscription is blocked, disabled or faulted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_reason: Option<String>,
    /// The delivery holding the queue when `state` is `blocked`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_on: Option<DeliveryId>,
    /// With `ordering`: the keys held by a failed delivery (`onFailure: block`), oldest first;
    /// the subscription stays `active` and its other keys go on. Shown by
    /// `GET /v1/subscriptions/{id}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocked_keys: Vec<BlockedKey>,
    /// With `ordering`: how many deliveries are in flight now (at most `ordering.lanes`).
    /// Shown by `GET /v1/subscriptions/{id}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lanes_busy: Option<u32>,
    /// The signing secret in full: present only in the answers to creation and rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// The signing secret, masked.
    pub secret_masked: String,
    /// When the previous secret (still sent during a rotation) stops being sent, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub previous_secret_expires_at: Option<Timestamp>,
    /// The ed25519 public key (`whpk_…`) receivers verify `v1a` signatures with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// Creation time, RFC 3339.
    #[schema(value_type = String)]
    pub created_at: Timestamp,
    /// Last change, RFC 3339.
    #[schema(value_type = String)]
    pub updated_at: Timestamp,
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
            statuses: StatusRules::default(),
            signing: SigningKeys::default(),
            auth: None,
            rate_limit: None,
            transform: None,
            tls: None,
            ordering: None,
            order_epoch: 0,
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
    fn the_order_epoch_moves_only_when_the_key_changes() {
        let cfg = crate::config::EngineConfig::default().subscription_defaults();
        let policy = cfg.ip_policy.clone();
        let spec =
            SubscriptionSpec::from_new(NewSubscription::new("acme", "https://example.com/"), &cfg)
                .expect("valid");
        assert_eq!((spec.order_epoch, spec.lanes()), (0, 1));
        let set = |key: &str, lanes| SubscriptionPatch {
            ordering: Some(Some(Ordering {
                key: key.into(),
                lanes,
            })),
            ..SubscriptionPatch::default()
        };
        let keyed = spec
            .apply(set("/transactionId", 4), &policy)
            .expect("valid");
        assert_eq!((keyed.order_epoch, keyed.lanes()), (1, 4));
        let wider = keyed
            .apply(set("/transactionId", 16), &policy)
            .expect("valid");
        assert_eq!(wider.order_epoch, 1, "lanes alone keep the epoch");
        let other = wider
            .apply(set("/payLoad/loanId", 16), &policy)
            .expect("valid");
        assert_eq!(other.order_epoch, 2);
        let off = SubscriptionPatch {
            ordering: Some(None),
            ..SubscriptionPatch::default()
        };
        let none = other.apply(off, &policy).expect("valid");
        assert_eq!((none.order_epoch, none.lanes()), (3, 1));
        assert!(other.apply(set("loanId", 1), &policy).is_err());
        assert!(other.apply(set("/loanId", 0), &policy).is_err());
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
