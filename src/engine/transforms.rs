//! Tenant transforms through the handle: upload, list, delete, test.

use crate::domain::EventInput;
use crate::domain::TenantId;
use crate::error::{Error, Result};

use super::EngineHandle;

/// Tenant transforms (WebAssembly components run on each delivery before it is signed).
impl EngineHandle {
    /// Uploads a module as the next version of the tenant's transform `name`. The module is
    /// compiled and instantiated once under the sandbox limits before anything is stored; one
    /// that is not a component of the `hookline:transform` world is refused with
    /// [`Error::Invalid`] saying why. Uploading the same bytes again returns the existing
    /// version. Returns the version and whether this call created it.
    ///
    /// CPU-heavy for large components (seconds for a Python one); it runs on a blocking thread.
    pub async fn upload_transform(
        &self,
        tenant: &TenantId,
        name: &str,
        wasm: Vec<u8>,
    ) -> Result<(crate::domain::TransformVersion, bool)> {
        self.check_open()?;
        self.get_tenant(tenant).await?;
        self.inner.ctx.transforms.upload(tenant, name, wasm).await
    }

    /// The tenant's transforms with their versions and bound subscriptions, by name.
    pub async fn list_transforms(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<crate::domain::TransformInfo>> {
        self.get_tenant(tenant).await?;
        let versions = self.store().list_transform_versions(tenant).await?;
        let subs = self.store().list_subscriptions(Some(tenant)).await?;
        let mut out: Vec<crate::domain::TransformInfo> = Vec::new();
        for v in versions {
            match out.last_mut() {
                Some(info) if info.name == v.name => info.versions.push(v),
                _ => out.push(crate::domain::TransformInfo {
                    name: v.name.clone(),
                    bound_by: subs
                        .iter()
                        .filter(|s| s.spec.transform.as_ref().is_some_and(|t| t.name == v.name))
                        .map(|s| s.id.clone())
                        .collect(),
                    versions: vec![v],
                }),
            }
        }
        Ok(out)
    }

    /// One of the tenant's transforms.
    pub async fn get_transform(
        &self,
        tenant: &TenantId,
        name: &str,
    ) -> Result<crate::domain::TransformInfo> {
        self.list_transforms(tenant)
            .await?
            .into_iter()
            .find(|t| t.name == name)
            .ok_or_else(|| Error::not_found("transform", name))
    }

    /// Deletes every version of a transform. Refused with [`Error::Conflict`] while a
    /// subscription is bound to it.
    pub async fn delete_transform(&self, tenant: &TenantId, name: &str) -> Result<()> {
        self.check_open()?;
        self.store()
            .delete_transform(tenant.clone(), name.to_string())
            .await?;
        self.inner.ctx.transforms.forget(tenant, name);
        Ok(())
    }

    /// Runs one version of a transform on an event envelope, as a delivery would, and returns
    /// what it decided. Nothing is sent or stored.
    pub async fn test_transform(
        &self,
        tenant: &TenantId,
        name: &str,
        version: u32,
        mut event: EventInput,
    ) -> Result<crate::domain::TransformTest> {
        self.check_open()?;
        event.tenant_id = tenant.as_str().to_string();
        let event = event.validate()?;
        let body =
            serde_json::to_vec(&event).map_err(|e| Error::Internal(format!("test event: {e}")))?;
        let compiled = self.inner.ctx.transforms.get(tenant, name, version).await?;
        let input = crate::transform::TransformInput::for_delivery(
            &event.id,
            tenant.as_str(),
            "test",
            event.notification_type,
            &std::collections::BTreeMap::new(),
            body,
        );
        let report = self
            .inner
            .ctx
            .transforms
            .runtime()
            .call(&compiled, input)
            .await;
        Ok(report.into_test())
    }

    /// The sandbox limits transforms run under.
    pub fn transform_limits(&self) -> &crate::transform::TransformLimits {
        self.inner.ctx.transforms.runtime().limits()
    }

    /// What the transform registry did since this engine started: compilations, loads of
    /// precompiled artifacts, versions in memory.
    pub fn transform_stats(&self) -> crate::transform::TransformStats {
        self.inner.ctx.transforms.stats()
    }
}
