//! Tenants: the customers whose events hookline delivers, and who is calling ([`Principal`]).
//!
//! A tenant owns its subscriptions, transforms and events; its API key is shown once, at creation
//! ([`CreatedTenant`]), and only its hash is stored.

use serde::{Deserialize, Serialize};

use crate::domain::TenantId;
use crate::domain::time::Timestamp;
use crate::policy::ratelimit::RateLimit;

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
    #[serde(default, deserialize_with = "crate::domain::double_option")]
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
    #[schema(value_type = String)]
    pub created_at: Timestamp,
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
