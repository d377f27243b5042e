//! Tenants and API keys.

use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::domain::{CreatedTenant, NewTenant, Principal, Tenant, TenantPatch};
use crate::domain::{TenantId, validate_external_id};
use crate::error::{Error, Result};

use super::EngineHandle;

/// SHA-256 hex digest of an API key: what the journal stores and looks up.
pub(super) fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

pub(super) fn generate_key(prefix: &str) -> String {
    let bytes: [u8; 32] = rand::random();
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

impl EngineHandle {
    // ---- tenants and keys --------------------------------------------------------------

    /// Creates a tenant and its API key (returned only here; only its hash is stored).
    pub async fn create_tenant(&self, t: NewTenant) -> Result<CreatedTenant> {
        self.check_open()?;
        validate_external_id("id", &t.id)?;
        if t.id == crate::notify::SYSTEM_TENANT {
            return Err(Error::invalid(
                "id",
                "is reserved for hookline's operational notifications",
            ));
        }
        if t.name.trim().is_empty() || t.name.len() > 256 {
            return Err(Error::invalid("name", "must be 1 to 256 characters"));
        }
        if let Some(l) = &t.rate_limit {
            l.validate()?;
        }
        let key = generate_key("hlk_");
        let tenant = self
            .store()
            .create_tenant(TenantId::from(t.id), t.name, t.rate_limit, hash_key(&key))
            .await?;
        if let Some(l) = &tenant.rate_limit {
            self.inner
                .ctx
                .limiters
                .set_tenant_limit(tenant.id.as_str(), Some(l.clone()));
        }
        Ok(CreatedTenant {
            tenant,
            api_key: key,
        })
    }

    /// A tenant by id.
    pub async fn get_tenant(&self, id: &TenantId) -> Result<Tenant> {
        self.store()
            .get_tenant(id)
            .await?
            .ok_or_else(|| Error::not_found("tenant", id))
    }

    /// Changes a tenant: `rateLimit` sets its own delivery rate limit, shared by all its
    /// subscriptions (`Some(None)` removes it, so the engine's default tenant limit applies).
    /// Deliveries are paced by the new limit from their next slot on.
    pub async fn update_tenant(&self, id: &TenantId, patch: TenantPatch) -> Result<Tenant> {
        self.check_open()?;
        let Some(rate_limit) = patch.rate_limit else {
            return self.get_tenant(id).await;
        };
        if let Some(l) = &rate_limit {
            l.validate()?;
        }
        // Serialised so that the limiters end with the limit committed last.
        let _order = self.inner.tenant_updates.lock().await;
        let tenant = self
            .store()
            .set_tenant_rate_limit(id.clone(), rate_limit.clone())
            .await?;
        // After the commit: a limit that did not become durable is never applied.
        self.inner
            .ctx
            .limiters
            .set_tenant_limit(id.as_str(), rate_limit);
        Ok(tenant)
    }

    /// Who an API key belongs to, if anyone.
    pub async fn authenticate(&self, key: &str) -> Result<Option<Principal>> {
        self.check_open()?;
        let hash = hash_key(key);
        let configured = self
            .inner
            .admin_override
            .read()
            .map(|g| g.clone())
            .unwrap_or(None);
        if configured.is_some_and(|h| h == hash) {
            return Ok(Some(Principal::Admin));
        }
        self.store().principal_for_key_hash(&hash).await
    }

    /// Sets up the admin key. With `configured`, that key is accepted (and not stored). Without,
    /// if no admin key was ever generated, one is generated, its hash stored, and the key
    /// returned so the caller can show it once.
    pub async fn ensure_admin_key(&self, configured: Option<&str>) -> Result<Option<String>> {
        if let Some(key) = configured {
            if key.len() < 16 {
                return Err(Error::invalid("adminKey", "must be at least 16 characters"));
            }
            if let Ok(mut g) = self.inner.admin_override.write() {
                *g = Some(hash_key(key));
            }
            return Ok(None);
        }
        if self.store().has_admin_key().await? {
            return Ok(None);
        }
        let key = generate_key("hla_");
        self.store().insert_admin_key(hash_key(&key)).await?;
        Ok(Some(key))
    }
}
