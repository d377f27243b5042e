//! Operational notifications' receivers: the system tenant's subscriptions (see `notify`).
//!
//! The operator's receivers come from the server's configuration and are reconciled at start
//! ([`EngineHandle::configure_notifications`]): one subscription of the system tenant per URL,
//! receiving every notification. A tenant's receivers are added and removed through the API:
//! subscriptions of the system tenant filtered on `workflowId` = the tenant's id, so they get
//! only the notifications about that tenant's subscriptions. Receivers are ordinary
//! subscriptions (signed, retried, in order) with `onFailure: skip`, so one that is down never
//! holds the notifications behind it for good.

use std::time::Duration;

use crate::domain::{
    EventKey, EventTrace, FailurePolicy, NewSubscription, NotificationType, Subscription,
    SubscriptionId, TenantId,
};
use crate::error::{Error, Result};
use crate::notify::{NotificationEndpoint, SYSTEM_TENANT};

use super::EngineHandle;

fn system() -> TenantId {
    TenantId::from(SYSTEM_TENANT)
}

/// The system tenant's subscription for `endpoint`: every notification (`scope` None) or only
/// those about one tenant.
fn receiver(endpoint: &NotificationEndpoint, scope: Option<&TenantId>) -> NewSubscription {
    let mut n = NewSubscription::new(SYSTEM_TENANT, endpoint.url.clone());
    n.notification_types = vec![NotificationType::OperationalEvent];
    n.workflow_ids = scope.map(|t| vec![t.to_string()]).unwrap_or_default();
    n.on_failure = Some(FailurePolicy::Skip);
    n.secret = endpoint.secret.clone();
    n
}

impl EngineHandle {
    /// Creates the system tenant if it does not exist yet. Its API key is drawn and thrown
    /// away: only the admin reaches it.
    pub async fn ensure_system_tenant(&self) -> Result<()> {
        self.check_open()?;
        if self.store().get_tenant(&system()).await?.is_some() {
            return Ok(());
        }
        let unusable = super::tenants::hash_key(&super::tenants::generate_key("hlk_"));
        match self
            .store()
            .create_tenant(
                system(),
                "hookline operational notifications".into(),
                None,
                unusable,
            )
            .await
        {
            Ok(_) | Err(Error::Conflict(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Makes the operator's notification receivers exactly `endpoints`: creates the missing
    /// ones, sets the configured secret on those whose secret changed (no grace) and deletes
    /// the receivers no longer configured (with their pending notifications). Tenants'
    /// receivers are left alone.
    pub async fn configure_notifications(&self, endpoints: &[NotificationEndpoint]) -> Result<()> {
        self.ensure_system_tenant().await?;
        let rows = self.store().list_subscriptions(Some(&system())).await?;
        let mut operator: Vec<_> = rows
            .iter()
            .filter(|r| r.spec.workflow_ids.is_empty())
            .collect();
        // Ids sort by creation time: of two receivers of one URL (two nodes of a cluster that
        // started at once), the older is kept and the other deleted below.
        operator.sort_by(|a, b| a.id.cmp(&b.id));
        for e in endpoints {
            match operator.iter().find(|r| r.spec.url == e.url) {
                None => {
                    let sub = self.create_subscription(receiver(e, None)).await?;
                    tracing::info!(subscription = %sub.id, url = %e.url, "notification receiver added");
                }
                Some(r) => {
                    if let Some(secret) = &e.secret
                        && *secret != r.spec.signing.secret
                    {
                        self.rotate_secret(&r.id, Some(secret.clone()), Some(Duration::ZERO))
                            .await?;
                    }
                }
            }
        }
        let mut kept: Vec<&str> = Vec::new();
        for r in operator {
            let wanted = endpoints.iter().any(|e| e.url == r.spec.url);
            if wanted && !kept.contains(&r.spec.url.as_str()) {
                kept.push(&r.spec.url);
            } else {
                self.delete_subscription(&r.id).await?;
                tracing::info!(subscription = %r.id, url = %r.spec.url, "notification receiver removed");
            }
        }
        Ok(())
    }

    /// The receivers of notifications about `tenant`'s subscriptions (the tenant's own, not
    /// the operator's).
    pub async fn notification_endpoints(&self, tenant: &TenantId) -> Result<Vec<Subscription>> {
        self.get_tenant(tenant).await?;
        Ok(self
            .store()
            .list_subscriptions(Some(&system()))
            .await?
            .iter()
            .filter(|r| r.spec.workflow_ids.iter().any(|w| w == tenant.as_str()))
            .map(|r| r.to_public())
            .collect())
    }

    /// Adds a receiver of the notifications about `tenant`'s subscriptions; answers it with
    /// its signing secret in full (shown only here).
    pub async fn add_notification_endpoint(
        &self,
        tenant: &TenantId,
        endpoint: NotificationEndpoint,
    ) -> Result<Subscription> {
        if tenant.as_str() == SYSTEM_TENANT {
            return Err(Error::invalid(
                "tenantId",
                "the system tenant's receivers come from the server's [notifications] table",
            ));
        }
        self.get_tenant(tenant).await?;
        self.ensure_system_tenant().await?;
        self.create_subscription(receiver(&endpoint, Some(tenant)))
            .await
    }

    /// Removes one of `tenant`'s notification receivers (404 if it is not one of them).
    pub async fn remove_notification_endpoint(
        &self,
        tenant: &TenantId,
        id: &SubscriptionId,
    ) -> Result<()> {
        let row = self.store().get_subscription(id).await?;
        match row {
            Some(r)
                if r.tenant_id.as_str() == SYSTEM_TENANT
                    && r.spec.workflow_ids.iter().any(|w| w == tenant.as_str()) =>
            {
                self.delete_subscription(id).await
            }
            _ => Err(Error::not_found("notification receiver", id)),
        }
    }

    /// The notifications about one subscription, newest first (at most `limit`, 1 to 100),
    /// each with its delivery to every receiver. Empty when there is no system tenant.
    pub async fn notifications_about(
        &self,
        sub: &SubscriptionId,
        limit: u32,
    ) -> Result<Vec<EventTrace>> {
        if self.store().get_tenant(&system()).await?.is_none() {
            return Ok(Vec::new());
        }
        let key = EventKey::TransactionId(sub.to_string());
        self.find_events(&system(), &key, limit).await
    }

    /// The newest notifications (at most `limit`, 1 to 100), each with its delivery to every
    /// receiver: about every tenant's subscriptions (`about` None, the operator's view) or one
    /// tenant's. Indexed (the system tenant's events only), whatever the journal holds.
    pub async fn recent_notifications(
        &self,
        about: Option<&TenantId>,
        limit: u32,
    ) -> Result<Vec<EventTrace>> {
        if !(1..=100).contains(&limit) {
            return Err(Error::invalid("limit", "must be between 1 and 100"));
        }
        self.store().recent_notifications(about, limit).await
    }

    /// Every receiver of notifications (the system tenant's subscriptions): the operator's
    /// (no `workflowIds`) and each tenant's (`workflowIds` = that tenant).
    pub async fn notification_receivers(&self) -> Result<Vec<Subscription>> {
        Ok(self
            .store()
            .list_subscriptions(Some(&system()))
            .await?
            .iter()
            .map(|r| r.to_public())
            .collect())
    }
}
