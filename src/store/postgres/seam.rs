//! The store's traits on [`PgStore`]: each method is one transaction (see the sibling modules).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::PgStore;
use crate::domain::clock::now_ms;
use crate::domain::{
    Attempt, AttemptRollup, Delivery, DeliveryId, DeliveryPage, DeliveryQuery, DeliveryStatus,
    Event, EventId, EventKey, EventTrace, Principal, PublishReceipt, SubscriptionId,
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
impl Catalog for PgStore {
    async fn create_tenant(
        &self,
        id: TenantId,
        name: String,
        rate_limit: Option<RateLimit>,
        key_hash: String,
    ) -> Result<Tenant> {
        self.pg_create_tenant(id, name, rate_limit, key_hash).await
    }

    async fn set_tenant_rate_limit(
        &self,
        id: TenantId,
        rate_limit: Option<RateLimit>,
    ) -> Result<Tenant> {
        self.pg_set_tenant_rate_limit(id, rate_limit).await
    }

    async fn get_tenant(&self, id: &TenantId) -> Result<Option<Tenant>> {
        self.pg_get_tenant(id).await
    }

    async fn tenant_rate_limits(&self) -> Result<Vec<(TenantId, RateLimit)>> {
        self.pg_tenant_rate_limits().await
    }

    async fn insert_admin_key(&self, key_hash: String) -> Result<()> {
        self.pg_insert_admin_key(key_hash).await
    }

    async fn principal_for_key_hash(&self, hash: &str) -> Result<Option<Principal>> {
        self.pg_principal(hash).await
    }

    async fn has_admin_key(&self) -> Result<bool> {
        self.pg_has_admin_key().await
    }

    async fn create_subscription(
        &self,
        id: SubscriptionId,
        tenant: TenantId,
        spec: SubscriptionSpec,
    ) -> Result<SubscriptionRow> {
        self.pg_create_subscription(id, tenant, spec).await
    }

    async fn update_spec(
        &self,
        id: SubscriptionId,
        spec: SubscriptionSpec,
    ) -> Result<SubscriptionRow> {
        self.pg_update_spec(id, spec).await
    }

    async fn set_flags(&self, id: SubscriptionId, flags: FlagChange) -> Result<SubscriptionRow> {
        self.pg_set_flags(id, flags).await
    }

    async fn delete_subscription(&self, id: SubscriptionId) -> Result<()> {
        self.pg_delete_subscription(id).await
    }

    async fn get_subscription(&self, id: &SubscriptionId) -> Result<Option<SubscriptionRow>> {
        self.pg_get_subscription(id).await
    }

    async fn list_subscriptions(&self, tenant: Option<&TenantId>) -> Result<Vec<SubscriptionRow>> {
        self.pg_list_subscriptions(tenant).await
    }

    async fn insert_transform(&self, row: NewTransformRow) -> Result<(TransformVersion, bool)> {
        self.pg_insert_transform(row).await
    }

    async fn delete_transform(&self, tenant: TenantId, name: String) -> Result<()> {
        self.pg_delete_transform(tenant, name).await
    }

    async fn set_transform_artifact(
        &self,
        tenant: TenantId,
        name: String,
        version: u32,
        artifact: Arc<[u8]>,
    ) -> Result<()> {
        self.pg_set_transform_artifact(tenant, name, version, artifact)
            .await
    }

    async fn list_transform_versions(&self, tenant: &TenantId) -> Result<Vec<TransformVersion>> {
        self.pg_transform_versions(tenant).await
    }

    async fn find_transform_by_hash(
        &self,
        tenant: &TenantId,
        name: &str,
        sha256: &str,
    ) -> Result<Option<TransformVersion>> {
        self.pg_transform_by_hash(tenant, name, sha256).await
    }

    async fn transform_artifact(
        &self,
        tenant: &TenantId,
        name: &str,
        version: u32,
    ) -> Result<Option<StoredTransform>> {
        self.pg_transform_artifact(tenant, name, version).await
    }

    async fn transform_module(
        &self,
        tenant: &TenantId,
        name: &str,
        version: u32,
    ) -> Result<Option<Vec<u8>>> {
        self.pg_transform_module(tenant, name, version).await
    }
}

#[async_trait]
impl Ingest for PgStore {
    async fn publish(
        &self,
        events: Vec<Event>,
        wait: Duration,
    ) -> Result<Vec<Result<PublishReceipt>>> {
        self.pg_publish(events, wait).await
    }
}

#[async_trait]
impl Queue for PgStore {
    async fn acquire(&self, sub: &SubscriptionId) -> Result<Lease> {
        self.pg_acquire(sub).await
    }

    async fn next_deliveries(
        &self,
        sub: &SubscriptionId,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<QueuedDelivery>> {
        self.pg_next_deliveries(sub, after_seq, limit).await
    }

    async fn next_heads(
        &self,
        sub: &SubscriptionId,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<QueuedDelivery>> {
        self.pg_next_heads(sub, after_seq, limit).await
    }

    async fn next_in_group(
        &self,
        sub: &SubscriptionId,
        order_epoch: u32,
        order_key: &str,
        after_seq: i64,
    ) -> Result<Option<QueuedDelivery>> {
        self.pg_next_in_group(sub, order_epoch, order_key, after_seq)
            .await
    }

    async fn held_keys(&self, sub: &SubscriptionId) -> Result<Vec<HeldKey>> {
        self.pg_held_keys(sub).await
    }

    async fn last_seq(&self, sub: &SubscriptionId) -> Result<i64> {
        self.pg_last_seq(sub).await
    }

    /// Waits for its commit (unlike SQLite's): a refusal is reported to this caller.
    async fn mark_in_flight(
        &self,
        lease: &Lease,
        delivery: DeliveryId,
        attempt: u32,
        at: i64,
    ) -> Result<()> {
        self.pg_mark_in_flight(lease, delivery, attempt, at).await
    }

    async fn record_attempt(&self, lease: &Lease, record: AttemptRecord) -> Result<()> {
        self.pg_record_attempt(lease, record).await
    }

    async fn record_attempt_following(
        &self,
        lease: &Lease,
        record: AttemptRecord,
        follow: Option<KeyFollow>,
    ) -> (Result<()>, Option<Result<Option<QueuedDelivery>>>) {
        match follow {
            Some(f) if record.is_plain() => self.pg_record_plain_following(lease, record, &f).await,
            follow => {
                crate::store::traits::record_then_read_next(self, lease, record, follow).await
            }
        }
    }

    async fn set_queue_flags(&self, lease: &Lease, flags: FlagChange) -> Result<SubscriptionRow> {
        self.pg_set_queue_flags(lease, flags).await
    }

    async fn set_delivery_status(
        &self,
        lease: &Lease,
        delivery: DeliveryId,
        status: DeliveryStatus,
        reset_budget: bool,
        unblock: bool,
    ) -> Result<()> {
        self.pg_set_delivery_status(lease, delivery, status, reset_budget, unblock)
            .await
    }

    async fn replay(&self, lease: &Lease, since_ms: i64, until_ms: i64) -> Result<u64> {
        self.pg_replay(lease, since_ms, until_ms).await
    }
}

#[async_trait]
impl Reads for PgStore {
    async fn get_delivery(&self, id: DeliveryId) -> Result<Option<Delivery>> {
        self.pg_get_delivery(id).await
    }

    async fn attempts(&self, id: DeliveryId) -> Result<Vec<Attempt>> {
        self.pg_attempts(id).await
    }

    async fn list_deliveries(
        &self,
        sub: &SubscriptionId,
        q: &DeliveryQuery,
    ) -> Result<DeliveryPage> {
        self.pg_list_deliveries(sub, q).await
    }

    async fn key_state(&self, sub: &SubscriptionId) -> Result<KeyState> {
        self.pg_key_state(sub).await
    }

    async fn held_key_counts(&self) -> Result<Vec<(String, u64)>> {
        self.pg_held_key_counts().await
    }

    async fn queue_stats(&self) -> Result<Vec<QueueStat>> {
        self.pg_queue_stats().await
    }

    async fn event_body(&self, tenant: &TenantId, id: &EventId) -> Result<Option<String>> {
        self.pg_event_body(tenant, id).await
    }

    async fn events_by_key(
        &self,
        tenant: &TenantId,
        key: &EventKey,
        limit: u32,
    ) -> Result<Vec<EventTrace>> {
        self.pg_events_by_key(tenant, key, limit).await
    }

    async fn recent_notifications(
        &self,
        about: Option<&TenantId>,
        limit: u32,
    ) -> Result<Vec<EventTrace>> {
        self.pg_recent_notifications(about, limit).await
    }

    async fn attempt_rollup(
        &self,
        tenant: Option<&TenantId>,
        since_ms: i64,
        recent_since_ms: i64,
    ) -> Result<AttemptRollup> {
        self.pg_attempt_rollup(tenant, since_ms, recent_since_ms)
            .await
    }
}

#[async_trait]
impl Upkeep for PgStore {
    async fn prune(&self, r: &Retention) -> Result<u64> {
        let now = now_ms();
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        self.pg_prune(
            now.saturating_sub(ms(r.delivered_after)),
            now.saturating_sub(ms(r.failed_after)),
            r.batch_size,
        )
        .await
    }

    async fn close(&self) {
        self.shut().await
    }
}
