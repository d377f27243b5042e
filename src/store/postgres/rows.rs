//! Decoding PostgreSQL rows into the store's values.
//!
//! The column lists are macros so that queries stay literal `&'static str`; each decoder reads
//! the columns of its list by position. Turning raw columns into domain values (the spec's
//! JSON and sealed secrets, a tenant's rate limit) is shared with the SQLite journal
//! (`sqlite::rows`), so both stores read a subscription the same way.

use std::sync::Arc;

use sqlx::Row;
use sqlx::postgres::PgRow;

use super::sql_err;
use crate::domain::{
    Attempt, Delivery, DeliveryId, DeliveryStatus, EventId, NotificationType, SubscriptionId,
    SubscriptionRow, Tenant, TenantId, Timestamp, TransformVersion,
};
use crate::error::{Error, Result};
use crate::security::secretbox::SecretBox;
use crate::store::QueuedDelivery;
use crate::store::sqlite::rows::{SubRaw, TenantRaw};

/// The subscription columns [`subscription`] reads.
macro_rules! pg_sub_select {
    () => {
        "SELECT id, tenant_id, config, paused, blocked_on, disabled_reason, faulted_reason, \
         created_at, updated_at, secrets FROM subscriptions"
    };
}

/// The tenant columns [`tenant`] reads.
macro_rules! pg_tenant_select {
    () => {
        "SELECT id, name, created_at, rate_limit FROM tenants"
    };
}

/// The delivery columns [`delivery`] reads.
macro_rules! pg_delivery_select {
    () => {
        "SELECT d.id, e.id, d.subscription_id, e.tenant_id, d.seq, d.state, d.attempts, \
         d.last_status, d.last_error, d.next_at, d.updated_at \
         FROM deliveries d JOIN events e ON e.seq = d.event_seq"
    };
}

/// The transform version columns [`version`] reads.
macro_rules! pg_version_select {
    () => {
        "SELECT name, version, sha256, size_bytes, created_at FROM transforms "
    };
}

/// The queue columns [`queued`] reads.
macro_rules! pg_queued_select {
    () => {
        "SELECT d.id, d.seq, e.id, e.notification_type, e.body, d.attempts, d.budget_used, \
         d.next_at, d.order_key, d.order_epoch, d.holds_key \
         FROM deliveries d JOIN events e ON e.seq = d.event_seq"
    };
}

fn read<T>(r: std::result::Result<T, sqlx::Error>) -> Result<T> {
    r.map_err(sql_err("read"))
}

pub(super) fn subscription(r: &PgRow, sealer: &SecretBox) -> Result<SubscriptionRow> {
    let raw = SubRaw {
        id: read(r.try_get(0))?,
        tenant_id: read(r.try_get(1))?,
        config: read(r.try_get(2))?,
        paused: i64::from(read::<bool>(r.try_get(3))?),
        blocked_on: read(r.try_get(4))?,
        disabled_reason: read(r.try_get(5))?,
        faulted_reason: read(r.try_get(6))?,
        created_at: read(r.try_get(7))?,
        updated_at: read(r.try_get(8))?,
        secrets: read(r.try_get(9))?,
    };
    crate::store::sqlite::rows::subscription(raw, sealer)
}

pub(super) fn tenant(r: &PgRow) -> Result<Tenant> {
    crate::store::sqlite::rows::tenant(TenantRaw {
        id: read(r.try_get(0))?,
        name: read(r.try_get(1))?,
        created_at: read(r.try_get(2))?,
        rate_limit: read(r.try_get(3))?,
    })
}

pub(super) fn version(r: &PgRow) -> Result<TransformVersion> {
    Ok(TransformVersion {
        name: read(r.try_get(0))?,
        version: read::<i64>(r.try_get(1))?.clamp(0, i64::from(u32::MAX)) as u32,
        sha256: read(r.try_get(2))?,
        size_bytes: read::<i64>(r.try_get(3))?.max(0) as u64,
        created_at: Timestamp::from_ms(read(r.try_get(4))?),
    })
}

pub(super) fn delivery(r: &PgRow) -> Result<Delivery> {
    let state: String = read(r.try_get(5))?;
    Ok(Delivery {
        id: DeliveryId(read(r.try_get(0))?),
        event_id: EventId::from(read::<String>(r.try_get(1))?),
        subscription_id: SubscriptionId::from(read::<String>(r.try_get(2))?),
        tenant_id: TenantId::from(read::<String>(r.try_get(3))?),
        seq: read(r.try_get(4))?,
        status: DeliveryStatus::parse(&state)
            .ok_or_else(|| Error::Internal(format!("bad delivery state {state}")))?,
        attempts: read::<i64>(r.try_get(6))?.clamp(0, i64::from(u32::MAX)) as u32,
        last_status_code: read::<Option<i64>>(r.try_get(7))?.map(|s| s as u16),
        last_error: read(r.try_get(8))?,
        next_attempt_at: read::<Option<i64>>(r.try_get(9))?.map(Timestamp::from_ms),
        updated_at: Timestamp::from_ms(read(r.try_get(10))?),
    })
}

/// `n, started_at, duration_ms, status_code, error_kind, error, response_snippet, transform_log`.
pub(super) fn attempt(r: &PgRow) -> Result<Attempt> {
    Ok(Attempt {
        n: read::<i64>(r.try_get(0))?.clamp(0, i64::from(u32::MAX)) as u32,
        started_at: Timestamp::from_ms(read(r.try_get(1))?),
        duration_ms: read::<i64>(r.try_get(2))?.max(0) as u64,
        status_code: read::<Option<i64>>(r.try_get(3))?.map(|s| s as u16),
        error_kind: read(r.try_get(4))?,
        error: read(r.try_get(5))?,
        response_snippet: read(r.try_get(6))?,
        transform_log: read(r.try_get(7))?,
    })
}

pub(super) fn queued(r: &PgRow) -> Result<QueuedDelivery> {
    queued_from(r, 0)
}

/// A [`pg_queued_select!`] row whose columns start at `at` (a statement that returns other
/// columns before them).
pub(super) fn queued_from(r: &PgRow, at: usize) -> Result<QueuedDelivery> {
    let ty: String = read(r.try_get(at + 3))?;
    Ok(QueuedDelivery {
        id: DeliveryId(read(r.try_get(at))?),
        seq: read(r.try_get(at + 1))?,
        event_id: EventId::from(read::<String>(r.try_get(at + 2))?),
        notification_type: NotificationType::parse(&ty)
            .ok_or_else(|| Error::Internal(format!("bad notification type {ty}")))?,
        body: Arc::from(read::<String>(r.try_get(at + 4))?),
        attempts: read::<i64>(r.try_get(at + 5))?.clamp(0, i64::from(u32::MAX)) as u32,
        budget_used: read::<i64>(r.try_get(at + 6))?.clamp(0, i64::from(u32::MAX)) as u32,
        next_at: read(r.try_get(at + 7))?,
        marked: false,
        order_key: read::<Option<String>>(r.try_get(at + 8))?.map(Arc::from),
        order_epoch: read::<i64>(r.try_get(at + 9))?.clamp(0, i64::from(u32::MAX)) as u32,
        holds_key: read(r.try_get(at + 10))?,
    })
}
