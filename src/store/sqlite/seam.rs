//! The store's traits on [`Journal`]: each write becomes one writer operation (see
//! [`ops`](super::ops)), each read one query (see [`reads`](super::reads)).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::Journal;
use super::catalog::{
    CreateSubscription, CreateTenant, DeleteSubscription, InsertAdminKey, SetFlags,
    SetTenantRateLimit, UpdateSpec,
};
use super::publish::Publish;
use super::queue::{Acquire, MarkInFlight, RecordAttempt, SetDeliveryStatus};
use super::transforms::{DeleteTransform, InsertTransform, SetTransformArtifact};
use super::upkeep::{Prune, Replay};
use crate::domain::clock::now_ms;
use crate::domain::{
    Attempt, AttemptRollup, Delivery, DeliveryId, DeliveryPage, DeliveryQuery, DeliveryStatus,
    Event, EventId, EventKey, EventTrace, MinuteRollup, Principal, PublishReceipt, SubscriptionId,
    SubscriptionRow, SubscriptionSpec, Tenant, TenantId, TransformVersion,
};
use crate::error::Result;
use crate::metrics::QueueStat;
use crate::policy::ratelimit::RateLimit;
use crate::store::{
    AttemptRecord, Catalog, FlagChange, HeldKey, Ingest, KeyFollow, KeyState, Lease,
    NewTransformRow, Queue, QueuedDelivery, Reads, Retention, StoredTransform, Upkeep,
};

#[async_trait]
impl Catalog for Journal {
    async fn create_tenant(
        &self,
        id: TenantId,
        name: String,
        rate_limit: Option<RateLimit>,
        key_hash: String,
    ) -> Result<Tenant> {
        self.call(CreateTenant {
            id,
            name,
            rate_limit,
            key_hash,
            at: now_ms(),
        })
        .await
    }

    async fn set_tenant_rate_limit(
        &self,
        id: TenantId,
        rate_limit: Option<RateLimit>,
    ) -> Result<Tenant> {
        self.call(SetTenantRateLimit { id, rate_limit }).await
    }

    async fn get_tenant(&self, id: &TenantId) -> Result<Option<Tenant>> {
        self.read_tenant(id).await
    }

    async fn tenant_rate_limits(&self) -> Result<Vec<(TenantId, RateLimit)>> {
        self.read_tenant_rate_limits().await
    }

    async fn insert_admin_key(&self, key_hash: String) -> Result<()> {
        self.call(InsertAdminKey {
            key_hash,
            at: now_ms(),
        })
        .await
    }

    async fn principal_for_key_hash(&self, hash: &str) -> Result<Option<Principal>> {
        self.read_principal(hash).await
    }

    async fn has_admin_key(&self) -> Result<bool> {
        self.read_has_admin_key().await
    }

    async fn create_subscription(
        &self,
        id: SubscriptionId,
        tenant: TenantId,
        spec: SubscriptionSpec,
    ) -> Result<SubscriptionRow> {
        let row = self
            .call(CreateSubscription {
                id,
                tenant,
                spec: Box::new(spec),
                at: now_ms(),
            })
            .await?;
        Ok(*row)
    }

    async fn update_spec(
        &self,
        id: SubscriptionId,
        spec: SubscriptionSpec,
    ) -> Result<SubscriptionRow> {
        let row = self
            .call(UpdateSpec {
                id,
                spec: Box::new(spec),
                at: now_ms(),
            })
            .await?;
        Ok(*row)
    }

    async fn set_flags(&self, id: SubscriptionId, flags: FlagChange) -> Result<SubscriptionRow> {
        let row = self
            .call(SetFlags {
                lease: None,
                id,
                flags,
                at: now_ms(),
            })
            .await?;
        Ok(*row)
    }

    async fn delete_subscription(&self, id: SubscriptionId) -> Result<()> {
        self.call(DeleteSubscription { id }).await
    }

    async fn get_subscription(&self, id: &SubscriptionId) -> Result<Option<SubscriptionRow>> {
        self.read_subscription(id).await
    }

    async fn list_subscriptions(&self, tenant: Option<&TenantId>) -> Result<Vec<SubscriptionRow>> {
        self.read_subscriptions(tenant).await
    }

    async fn insert_transform(&self, row: NewTransformRow) -> Result<(TransformVersion, bool)> {
        self.call(InsertTransform(Box::new(row))).await
    }

    async fn delete_transform(&self, tenant: TenantId, name: String) -> Result<()> {
        self.call(DeleteTransform { tenant, name }).await
    }

    async fn set_transform_artifact(
        &self,
        tenant: TenantId,
        name: String,
        version: u32,
        artifact: Arc<[u8]>,
    ) -> Result<()> {
        self.call(SetTransformArtifact {
            tenant,
            name,
            version,
            artifact,
        })
        .await
    }

    async fn list_transform_versions(&self, tenant: &TenantId) -> Result<Vec<TransformVersion>> {
        self.read_transform_versions(tenant).await
    }

    async fn find_transform_by_hash(
        &self,
        tenant: &TenantId,
        name: &str,
        sha256: &str,
    ) -> Result<Option<TransformVersion>> {
        self.read_transform_by_hash(tenant, name, sha256).await
    }

    async fn transform_artifact(
        &self,
        tenant: &TenantId,
        name: &str,
        version: u32,
    ) -> Result<Option<StoredTransform>> {
        self.read_transform_artifact(tenant, name, version).await
    }

    async fn transform_module(
        &self,
        tenant: &TenantId,
        name: &str,
        version: u32,
    ) -> Result<Option<Vec<u8>>> {
        self.read_transform_module(tenant, name, version).await
    }
}

#[async_trait]
impl Ingest for Journal {
    async fn publish(
        &self,
        events: Vec<Event>,
        wait: Duration,
    ) -> Result<Vec<Result<PublishReceipt>>> {
        let at = now_ms();
        self.call_within(Publish { events, at }, wait).await
    }
}

impl Journal {
    /// Returns once the event of `last` (a queue read's newest delivery, the reads being in
    /// `seq` order) is durable. A read may see a publish committed but not yet fsynced, and
    /// nothing of it may be sent before a power failure can no longer take it back (see
    /// `durable`): every queue read hands its deliveries out through here.
    async fn once_durable(&self, last: Option<&QueuedDelivery>) {
        if let Some(d) = last {
            self.inner.frontier.wait_durable(d.seq).await;
        }
    }
}

#[async_trait]
impl Queue for Journal {
    async fn acquire(&self, sub: &SubscriptionId) -> Result<Lease> {
        self.call(Acquire {
            sub: sub.clone(),
            at: now_ms(),
        })
        .await
    }

    async fn next_deliveries(
        &self,
        sub: &SubscriptionId,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<QueuedDelivery>> {
        let queued = self.read_next_deliveries(sub, after_seq, limit)?;
        self.once_durable(queued.last()).await;
        Ok(queued)
    }

    async fn next_heads(
        &self,
        sub: &SubscriptionId,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<QueuedDelivery>> {
        let heads = self.read_next_heads(sub, after_seq, limit)?;
        self.once_durable(heads.last()).await;
        Ok(heads)
    }

    async fn next_in_group(
        &self,
        sub: &SubscriptionId,
        order_epoch: u32,
        order_key: &str,
        after_seq: i64,
    ) -> Result<Option<QueuedDelivery>> {
        let next = self.read_next_in_group(sub, order_epoch, order_key, after_seq)?;
        self.once_durable(next.as_ref()).await;
        Ok(next)
    }

    async fn held_keys(&self, sub: &SubscriptionId) -> Result<Vec<HeldKey>> {
        self.read_held_keys(sub)
    }

    async fn last_seq(&self, sub: &SubscriptionId) -> Result<i64> {
        self.read_last_seq(sub)
    }

    /// Does not wait for the commit (see the trait).
    async fn mark_in_flight(
        &self,
        lease: &Lease,
        delivery: DeliveryId,
        attempt: u32,
        at: i64,
    ) -> Result<()> {
        self.send(MarkInFlight {
            lease: lease.clone(),
            delivery,
            attempts: attempt,
            at,
        })
        .await
    }

    async fn record_attempt(&self, lease: &Lease, record: AttemptRecord) -> Result<()> {
        self.record_attempt_following(lease, record, None).await.0
    }

    async fn record_attempt_following(
        &self,
        lease: &Lease,
        record: AttemptRecord,
        follow: Option<KeyFollow>,
    ) -> (Result<()>, Option<Result<Option<QueuedDelivery>>>) {
        let out = self
            .call(RecordAttempt {
                lease: lease.clone(),
                record: Box::new(record),
                follow,
            })
            .await;
        match out {
            Err(e) => (Err(e), None),
            Ok(next) => {
                if let Some(Ok(read)) = &next {
                    self.once_durable(read.as_ref()).await;
                }
                (Ok(()), next)
            }
        }
    }

    async fn set_queue_flags(&self, lease: &Lease, flags: FlagChange) -> Result<SubscriptionRow> {
        let row = self
            .call(SetFlags {
                lease: Some(lease.clone()),
                id: lease.subscription().clone(),
                flags,
                at: now_ms(),
            })
            .await?;
        Ok(*row)
    }

    async fn set_delivery_status(
        &self,
        lease: &Lease,
        delivery: DeliveryId,
        status: DeliveryStatus,
        reset_budget: bool,
        unblock: bool,
    ) -> Result<()> {
        self.call(SetDeliveryStatus {
            lease: lease.clone(),
            delivery,
            status,
            reset_budget,
            unblock,
            at: now_ms(),
        })
        .await
    }

    async fn replay(&self, lease: &Lease, since_ms: i64, until_ms: i64) -> Result<u64> {
        self.call(Replay {
            lease: lease.clone(),
            since_ms,
            until_ms,
            at: now_ms(),
        })
        .await
    }
}

#[async_trait]
impl Reads for Journal {
    async fn get_delivery(&self, id: DeliveryId) -> Result<Option<Delivery>> {
        self.read_delivery(id).await
    }

    async fn attempts(&self, id: DeliveryId) -> Result<Vec<Attempt>> {
        self.read_attempts(id).await
    }

    async fn list_deliveries(
        &self,
        sub: &SubscriptionId,
        q: &DeliveryQuery,
    ) -> Result<DeliveryPage> {
        self.read_deliveries(sub, q).await
    }

    async fn key_state(&self, sub: &SubscriptionId) -> Result<KeyState> {
        self.read_key_state(sub).await
    }

    async fn held_key_counts(&self) -> Result<Vec<(String, u64)>> {
        self.read_held_key_counts().await
    }

    async fn queue_stats(&self) -> Result<Vec<QueueStat>> {
        self.read_queue_stats().await
    }

    async fn event_body(&self, tenant: &TenantId, id: &EventId) -> Result<Option<String>> {
        self.read_event_body(tenant, id).await
    }

    async fn events_by_key(
        &self,
        tenant: &TenantId,
        key: &EventKey,
        limit: u32,
    ) -> Result<Vec<EventTrace>> {
        self.read_events_by_key(tenant, key, limit).await
    }

    async fn recent_notifications(
        &self,
        about: Option<&TenantId>,
        limit: u32,
    ) -> Result<Vec<EventTrace>> {
        self.read_recent_notifications(about, limit).await
    }

    async fn attempt_rollup(
        &self,
        tenant: Option<&TenantId>,
        since_ms: i64,
        recent_since_ms: i64,
    ) -> Result<AttemptRollup> {
        self.read_attempt_rollup(tenant, since_ms, recent_since_ms)
            .await
    }

    async fn attempt_hours(
        &self,
        subs: &[SubscriptionId],
        since_ms: i64,
    ) -> Result<Vec<MinuteRollup>> {
        self.read_attempt_hours(subs, since_ms).await
    }
}

#[async_trait]
impl Upkeep for Journal {
    async fn prune(&self, r: &Retention) -> Result<u64> {
        let now = now_ms();
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        self.call(Prune {
            delivered_before: now.saturating_sub(ms(r.delivered_after)),
            failed_before: now.saturating_sub(ms(r.failed_after)),
            batch: r.batch_size,
        })
        .await
    }

    async fn close(&self) {
        self.shut().await
    }
}
