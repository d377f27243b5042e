//! Row encoding and decoding: one decoder per row type, for both drivers.
//!
//! The writer reads rows back on its rusqlite connection (a subscription after a change, a
//! tenant after `RETURNING`, the routing table at start), the API's reads go through sqlx: both
//! decode with the same functions, generic over [`Columns`]. A raw decoder returns the driver's
//! own error (so a failure inside the writer still aborts its batch, as any SQLite failure
//! does); turning raw columns into domain values (JSON, sealed secrets) is driver-independent,
//! and shared with the PostgreSQL store (`store::postgres`), which fills the same raw structs.

use std::sync::Arc;

use sqlx::Sqlite;

use crate::domain::Timestamp;
use crate::domain::{
    Attempt, Delivery, DeliveryId, DeliveryStatus, EventId, NotificationType, SubscriptionId,
    SubscriptionRow, SubscriptionSpec, Tenant, TenantId, TransformVersion,
};
use crate::error::{Error, Result};
use crate::policy::ratelimit::RateLimit;
use crate::security::secretbox::SecretBox;
use crate::store::QueuedDelivery;

/// The subscription columns [`sub_raw`] reads, as a literal so queries stay `&'static str`.
macro_rules! sub_select {
    () => {
        "SELECT id, tenant_id, config, version, paused, blocked_on, disabled_reason, \
         faulted_reason, created_at, updated_at, secrets FROM subscriptions"
    };
}

/// The tenant columns [`tenant_raw`] reads.
/// The queue reads' columns, in the order [`queued_raw`] reads them; a WHERE follows.
macro_rules! queued_select {
    () => {
        "SELECT d.id, d.event_seq, e.id, e.notification_type, e.body, d.attempts, \
         d.budget_used, d.next_at, d.order_key, d.order_epoch, d.holds_key \
         FROM deliveries d JOIN events e ON e.seq = d.event_seq"
    };
}

macro_rules! tenant_select {
    () => {
        "SELECT id, name, created_at, rate_limit FROM tenants"
    };
}

/// The delivery columns [`delivery`] reads.
macro_rules! delivery_select {
    () => {
        "SELECT d.id, e.id, d.subscription_id, e.tenant_id, d.event_seq, d.state, d.attempts, \
         d.last_status, d.last_error, d.next_at, d.updated_at \
         FROM deliveries d JOIN events e ON e.seq = d.event_seq"
    };
}

/// The transform version columns [`version`] reads.
macro_rules! version_select {
    () => {
        "SELECT name, version, sha256, size_bytes, created_at FROM transforms "
    };
}

/// A column type both drivers decode.
pub(super) trait Value:
    rusqlite::types::FromSql + for<'r> sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite>
{
}

impl<T> Value for T where
    T: rusqlite::types::FromSql + for<'r> sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite>
{
}

/// A result row of either driver.
pub(super) trait Columns {
    type Error;
    fn col<T: Value>(&self, i: usize) -> std::result::Result<T, Self::Error>;
}

impl Columns for rusqlite::Row<'_> {
    type Error = rusqlite::Error;
    fn col<T: Value>(&self, i: usize) -> rusqlite::Result<T> {
        self.get(i)
    }
}

impl Columns for sqlx::sqlite::SqliteRow {
    type Error = sqlx::Error;
    fn col<T: Value>(&self, i: usize) -> std::result::Result<T, sqlx::Error> {
        sqlx::Row::try_get(self, i)
    }
}

// ---- subscriptions ------------------------------------------------------------------------

/// The spec fields that carry secrets: kept out of the readable `config` column and sealed.
const SECRET_FIELDS: [&str; 4] = ["accessKey", "auth", "signing", "tls"];

/// Splits a spec into its readable config JSON and its sealed secrets (bound to the id).
pub(in crate::store) fn encode_spec(
    spec: &SubscriptionSpec,
    id: &SubscriptionId,
    sealer: &SecretBox,
) -> Result<(String, Vec<u8>)> {
    let internal = |e: &dyn std::fmt::Display| Error::Internal(format!("subscription config: {e}"));
    let mut value = serde_json::to_value(spec).map_err(|e| internal(&e))?;
    let obj = value
        .as_object_mut()
        .ok_or_else(|| internal(&"not an object"))?;
    let mut secrets = serde_json::Map::new();
    for field in SECRET_FIELDS {
        if let Some(v) = obj.remove(field) {
            secrets.insert(field.to_owned(), v);
        }
    }
    let sealed = sealer
        .seal_json(&secrets, id.as_str().as_bytes())
        .map_err(|e| internal(&e))?;
    Ok((value.to_string(), sealed))
}

/// The columns of [`sub_select!`].
pub(in crate::store) struct SubRaw {
    pub(in crate::store) id: String,
    pub(in crate::store) tenant_id: String,
    pub(in crate::store) config: String,
    pub(in crate::store) paused: i64,
    pub(in crate::store) blocked_on: Option<i64>,
    pub(in crate::store) disabled_reason: Option<String>,
    pub(in crate::store) faulted_reason: Option<String>,
    pub(in crate::store) created_at: i64,
    pub(in crate::store) updated_at: i64,
    pub(in crate::store) secrets: Option<Vec<u8>>,
}

pub(super) fn sub_raw<R: Columns>(r: &R) -> std::result::Result<SubRaw, R::Error> {
    Ok(SubRaw {
        id: r.col(0)?,
        tenant_id: r.col(1)?,
        config: r.col(2)?,
        paused: r.col(4)?,
        blocked_on: r.col(5)?,
        disabled_reason: r.col(6)?,
        faulted_reason: r.col(7)?,
        created_at: r.col(8)?,
        updated_at: r.col(9)?,
        secrets: r.col(10)?,
    })
}

/// A subscription from its columns: the config with its secrets opened.
pub(in crate::store) fn subscription(r: SubRaw, sealer: &SecretBox) -> Result<SubscriptionRow> {
    let id = SubscriptionId::from(r.id);
    let mut value: serde_json::Value = serde_json::from_str(&r.config)
        .map_err(|e| Error::Internal(format!("unreadable subscription config: {e}")))?;
    if let Some(sealed) = r.secrets
        && let Some(obj) = value.as_object_mut()
    {
        let secrets: serde_json::Map<String, serde_json::Value> = sealer
            .open_json(&sealed, id.as_str().as_bytes())
            .map_err(|e| Error::Unavailable {
                message: format!("cannot open the secrets of subscription {id}: {e}"),
                source: None,
            })?;
        obj.extend(secrets);
    }
    let spec: SubscriptionSpec = serde_json::from_value(value)
        .map_err(|e| Error::Internal(format!("unreadable subscription config: {e}")))?;
    Ok(SubscriptionRow {
        id,
        tenant_id: TenantId::from(r.tenant_id),
        spec,
        paused: r.paused != 0,
        blocked_on: r.blocked_on,
        disabled_reason: r.disabled_reason,
        faulted_reason: r.faulted_reason,
        created_at: r.created_at,
        updated_at: r.updated_at,
    })
}

// ---- tenants ------------------------------------------------------------------------------

/// The columns of [`tenant_select!`].
pub(in crate::store) struct TenantRaw {
    pub(in crate::store) id: String,
    pub(in crate::store) name: String,
    pub(in crate::store) created_at: i64,
    /// The JSON of a [`RateLimit`].
    pub(in crate::store) rate_limit: Option<String>,
}

pub(super) fn tenant_raw<R: Columns>(r: &R) -> std::result::Result<TenantRaw, R::Error> {
    Ok(TenantRaw {
        id: r.col(0)?,
        name: r.col(1)?,
        created_at: r.col(2)?,
        rate_limit: r.col(3)?,
    })
}

pub(in crate::store) fn tenant(r: TenantRaw) -> Result<Tenant> {
    let rate_limit = r
        .rate_limit
        .map(|j| serde_json::from_str::<RateLimit>(&j))
        .transpose()
        .map_err(|e| Error::Internal(format!("unreadable tenant rate limit: {e}")))?;
    Ok(Tenant {
        id: TenantId::from(r.id),
        name: r.name,
        rate_limit,
        created_at: Timestamp::from_ms(r.created_at),
    })
}

/// A tenant's rate limit as stored: JSON, or NULL for none.
pub(in crate::store) fn rate_limit_json(limit: Option<&RateLimit>) -> Result<Option<String>> {
    limit
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| Error::Internal(format!("tenant rate limit: {e}")))
}

// ---- transforms ---------------------------------------------------------------------------

/// The columns of [`version_select!`].
pub(super) fn version<R: Columns>(r: &R) -> std::result::Result<TransformVersion, R::Error> {
    Ok(TransformVersion {
        name: r.col(0)?,
        version: r.col::<i64>(1)?.clamp(0, i64::from(u32::MAX)) as u32,
        sha256: r.col(2)?,
        size_bytes: r.col::<i64>(3)?.max(0) as u64,
        created_at: Timestamp::from_ms(r.col(4)?),
    })
}

// ---- deliveries ---------------------------------------------------------------------------

/// The columns of [`delivery_select!`]; `read` maps the driver's error.
pub(super) fn delivery<R: Columns>(r: &R, read: impl Fn(R::Error) -> Error) -> Result<Delivery> {
    let state: String = r.col(5).map_err(&read)?;
    Ok(Delivery {
        id: DeliveryId(r.col(0).map_err(&read)?),
        event_id: EventId::from(r.col::<String>(1).map_err(&read)?),
        subscription_id: SubscriptionId::from(r.col::<String>(2).map_err(&read)?),
        tenant_id: TenantId::from(r.col::<String>(3).map_err(&read)?),
        seq: r.col(4).map_err(&read)?,
        status: DeliveryStatus::parse(&state)
            .ok_or_else(|| Error::Internal(format!("bad delivery state {state}")))?,
        attempts: r.col::<i64>(6).map_err(&read)? as u32,
        last_status_code: r.col::<Option<i64>>(7).map_err(&read)?.map(|s| s as u16),
        last_error: r.col(8).map_err(&read)?,
        next_attempt_at: r
            .col::<Option<i64>>(9)
            .map_err(&read)?
            .map(Timestamp::from_ms),
        updated_at: Timestamp::from_ms(r.col(10).map_err(&read)?),
    })
}

/// An attempt log entry: `n, started_at, duration_ms, status_code, error_kind, error,
/// response_snippet, transform_log`.
pub(super) fn attempt<R: Columns>(r: &R) -> std::result::Result<Attempt, R::Error> {
    Ok(Attempt {
        n: r.col::<i64>(0)? as u32,
        started_at: Timestamp::from_ms(r.col(1)?),
        duration_ms: r.col::<i64>(2)?.max(0) as u64,
        status_code: r.col::<Option<i64>>(3)?.map(|s| s as u16),
        error_kind: r.col(4)?,
        error: r.col(5)?,
        response_snippet: r.col(6)?,
        transform_log: r.col(7)?,
    })
}

/// The columns of a queue read, before the notification type is checked.
pub(super) struct QueuedRaw {
    id: i64,
    seq: i64,
    event_id: String,
    notification_type: String,
    body: String,
    attempts: i64,
    budget_used: i64,
    next_at: Option<i64>,
    order_key: Option<String>,
    order_epoch: i64,
    holds_key: i64,
}

/// `d.id, d.event_seq, e.id, e.notification_type, e.body, d.attempts, d.budget_used, d.next_at,
/// d.order_key, d.order_epoch, d.holds_key` (as [`queued_select!`] selects them).
pub(super) fn queued_raw<R: Columns>(r: &R) -> std::result::Result<QueuedRaw, R::Error> {
    Ok(QueuedRaw {
        id: r.col(0)?,
        seq: r.col(1)?,
        event_id: r.col(2)?,
        notification_type: r.col(3)?,
        body: r.col(4)?,
        attempts: r.col(5)?,
        budget_used: r.col(6)?,
        next_at: r.col(7)?,
        order_key: r.col(8)?,
        order_epoch: r.col(9)?,
        holds_key: r.col(10)?,
    })
}

pub(super) fn queued(r: QueuedRaw) -> Result<QueuedDelivery> {
    let ty = r.notification_type;
    Ok(QueuedDelivery {
        id: DeliveryId(r.id),
        seq: r.seq,
        event_id: EventId::from(r.event_id),
        notification_type: NotificationType::parse(&ty)
            .ok_or_else(|| Error::Internal(format!("bad notification type {ty}")))?,
        body: Arc::from(r.body),
        attempts: r.attempts as u32,
        budget_used: r.budget_used as u32,
        next_at: r.next_at,
        marked: false,
        order_key: r.order_key.map(Arc::from),
        order_epoch: r.order_epoch.clamp(0, i64::from(u32::MAX)) as u32,
        holds_key: r.holds_key != 0,
    })
}
