//! Reads: the API's through the pool of read-only sqlx connections, the delivery path's queue
//! refill and the API key lookup of every request inline (see
//! [`InlineReaders`](super::inline_read::InlineReaders)).
//!
//! Reads run beside the writer (WAL) and see the last commit; none of them takes a lease.

use std::time::Duration;

use sqlx::sqlite::SqlitePool;

use super::open::sql_err;
use super::{Journal, rows};
use crate::domain::clock::now_ms;
use crate::domain::{
    Attempt, Delivery, DeliveryId, DeliveryPage, DeliveryQuery, Principal, SubscriptionId,
    SubscriptionRow, Tenant, TenantId, TransformVersion,
};
use crate::error::{Error, Result};
use crate::metrics::QueueStat;
use crate::policy::ratelimit::RateLimit;
use crate::store::{DeliveryPageBounds, HeldKey, KeyState, QueuedDelivery, StoredTransform};

impl Journal {
    fn pool(&self) -> &SqlitePool {
        &self.inner.readers
    }

    // ---- tenants and keys ---------------------------------------------------------------

    /// Every authenticated API request makes this read, so it runs on an inline reader (one
    /// primary-key probe; through sqlx's thread and channel the hand-offs cost more than it).
    pub(super) async fn read_principal(&self, hash: &str) -> Result<Option<Principal>> {
        let tenant: Option<Option<String>> = self.inner.queue_readers.with(|conn| {
            let mut stmt =
                conn.prepare_cached("SELECT tenant_id FROM api_keys WHERE key_hash = ?1")?;
            rusqlite::OptionalExtension::optional(stmt.query_row([hash], |r| r.get(0)))
        })?;
        Ok(tenant.map(|t| match t {
            None => Principal::Admin,
            Some(t) => Principal::Tenant(TenantId::from(t)),
        }))
    }

    pub(super) async fn read_has_admin_key(&self) -> Result<bool> {
        let row = sqlx::query("SELECT 1 FROM api_keys WHERE tenant_id IS NULL LIMIT 1")
            .fetch_optional(self.pool())
            .await
            .map_err(sql_err("read"))?;
        Ok(row.is_some())
    }

    pub(super) async fn read_tenant(&self, id: &TenantId) -> Result<Option<Tenant>> {
        let row = sqlx::query(concat!(tenant_select!(), " WHERE id = ?1"))
            .bind(id.as_str())
            .fetch_optional(self.pool())
            .await
            .map_err(sql_err("read"))?;
        row.map(|r| rows::tenant(rows::tenant_raw(&r).map_err(sql_err("read"))?))
            .transpose()
    }

    pub(super) async fn read_tenant_rate_limits(&self) -> Result<Vec<(TenantId, RateLimit)>> {
        let found = sqlx::query(concat!(tenant_select!(), " WHERE rate_limit IS NOT NULL"))
            .fetch_all(self.pool())
            .await
            .map_err(sql_err("read"))?;
        found
            .iter()
            .map(|r| {
                let t = rows::tenant(rows::tenant_raw(r).map_err(sql_err("read"))?)?;
                Ok(t.rate_limit.map(|l| (t.id, l)))
            })
            .filter_map(Result::transpose)
            .collect()
    }

    // ---- subscriptions ------------------------------------------------------------------

    pub(super) async fn read_subscription(
        &self,
        id: &SubscriptionId,
    ) -> Result<Option<SubscriptionRow>> {
        let row = sqlx::query(concat!(sub_select!(), " WHERE id = ?1"))
            .bind(id.as_str())
            .fetch_optional(self.pool())
            .await
            .map_err(sql_err("read"))?;
        row.map(|r| self.subscription(&r)).transpose()
    }

    pub(super) async fn read_subscriptions(
        &self,
        tenant: Option<&TenantId>,
    ) -> Result<Vec<SubscriptionRow>> {
        let found = match tenant {
            Some(t) => {
                sqlx::query(concat!(sub_select!(), " WHERE tenant_id = ?1 ORDER BY id"))
                    .bind(t.as_str())
                    .fetch_all(self.pool())
                    .await
            }
            None => {
                sqlx::query(concat!(sub_select!(), " ORDER BY id"))
                    .fetch_all(self.pool())
                    .await
            }
        }
        .map_err(sql_err("read"))?;
        found.iter().map(|r| self.subscription(r)).collect()
    }

    fn subscription(&self, r: &sqlx::sqlite::SqliteRow) -> Result<SubscriptionRow> {
        rows::subscription(
            rows::sub_raw(r).map_err(sql_err("read"))?,
            &self.inner.sealer,
        )
    }

    // ---- the queue ----------------------------------------------------------------------

    /// Read inline on the calling task (see [`InlineReaders`](super::inline_read)): every busy
    /// subscription runs this every `actor_prefetch` deliveries, and through sqlx's threads it
    /// cost a third of the time of the deliveries it fetched.
    pub(super) fn read_next_deliveries(
        &self,
        sub: &SubscriptionId,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<QueuedDelivery>> {
        self.read_queued(
            concat!(
                queued_select!(),
                " WHERE d.subscription_id = ?1 AND d.state IN ('pending', 'in_flight') \
                   AND d.event_seq > ?2 \
                 ORDER BY d.event_seq LIMIT ?3"
            ),
            sub,
            after_seq,
            limit,
        )
    }

    /// Runs a queue read `sql` taking (subscription, after `seq`, limit), inline.
    fn read_queued(
        &self,
        sql: &str,
        sub: &SubscriptionId,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<QueuedDelivery>> {
        let raws = self.inner.queue_readers.with(|conn| {
            let mut stmt = conn.prepare_cached(sql)?;
            let raws = stmt.query_map(
                rusqlite::params![sub.as_str(), after_seq, i64::from(limit)],
                |r| rows::queued_raw(r),
            )?;
            raws.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        raws.into_iter().map(rows::queued).collect()
    }

    /// See [`Queue::next_heads`](crate::store::Queue::next_heads). The outer scan walks the
    /// open deliveries (`deliveries_open`); the check of each is one probe of
    /// `deliveries_key_open`, whose WHERE the subquery repeats word for word so SQLite uses it.
    pub(super) fn read_next_heads(
        &self,
        sub: &SubscriptionId,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<QueuedDelivery>> {
        self.read_queued(
            concat!(
                queued_select!(),
                " WHERE d.subscription_id = ?1 AND d.state IN ('pending', 'in_flight') \
                   AND d.event_seq > ?2 \
                   AND NOT EXISTS (SELECT 1 FROM deliveries p \
                     WHERE p.subscription_id = ?1 AND p.order_epoch = d.order_epoch \
                       AND p.order_key = d.order_key AND p.event_seq < d.event_seq \
                       AND order_key IS NOT NULL \
                       AND (state IN ('pending', 'in_flight') OR holds_key = 1)) \
                 ORDER BY d.event_seq LIMIT ?3"
            ),
            sub,
            after_seq,
            limit,
        )
    }

    pub(super) fn read_next_in_group(
        &self,
        sub: &SubscriptionId,
        order_epoch: u32,
        order_key: &str,
        after_seq: i64,
    ) -> Result<Option<QueuedDelivery>> {
        let raw = self
            .inner
            .queue_readers
            .with(|conn| next_in_group_on(conn, sub, order_epoch, order_key, after_seq))?;
        raw.map(rows::queued).transpose()
    }

    /// One probe of the `(subscription_id, event_seq)` unique index.
    pub(super) fn read_last_seq(&self, sub: &SubscriptionId) -> Result<i64> {
        self.inner.queue_readers.with(|conn| {
            conn.prepare_cached(
                "SELECT COALESCE(MAX(event_seq), 0) FROM deliveries WHERE subscription_id = ?1",
            )?
            .query_row(rusqlite::params![sub.as_str()], |r| r.get(0))
        })
    }

    pub(super) fn read_held_keys(&self, sub: &SubscriptionId) -> Result<Vec<HeldKey>> {
        self.inner.queue_readers.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, event_seq, order_key, order_epoch FROM deliveries \
                 WHERE subscription_id = ?1 AND holds_key = 1 AND order_key IS NOT NULL \
                 ORDER BY event_seq",
            )?;
            let held = stmt.query_map(rusqlite::params![sub.as_str()], |r| {
                Ok(HeldKey {
                    delivery: DeliveryId(r.get(0)?),
                    seq: r.get(1)?,
                    order_key: std::sync::Arc::from(r.get::<_, String>(2)?),
                    order_epoch: r.get::<_, i64>(3)?.clamp(0, i64::from(u32::MAX)) as u32,
                })
            })?;
            held.collect::<rusqlite::Result<Vec<_>>>()
        })
    }

    // ---- deliveries ---------------------------------------------------------------------

    pub(super) async fn read_delivery(&self, id: DeliveryId) -> Result<Option<Delivery>> {
        let row = sqlx::query(concat!(delivery_select!(), " WHERE d.id = ?1"))
            .bind(id.raw())
            .fetch_optional(self.pool())
            .await
            .map_err(sql_err("read"))?;
        row.map(|r| rows::delivery(&r, sql_err("read"))).transpose()
    }

    pub(super) async fn read_attempts(&self, id: DeliveryId) -> Result<Vec<Attempt>> {
        let found = sqlx::query(
            "SELECT n, started_at, duration_ms, status_code, error_kind, error, response_snippet, \
             transform_log FROM attempts WHERE delivery_id = ?1 ORDER BY n",
        )
        .bind(id.raw())
        .fetch_all(self.pool())
        .await
        .map_err(sql_err("read"))?;
        found
            .iter()
            .map(|r| rows::attempt(r).map_err(sql_err("read")))
            .collect()
    }

    pub(super) async fn read_deliveries(
        &self,
        sub: &SubscriptionId,
        q: &DeliveryQuery,
    ) -> Result<DeliveryPage> {
        let b = DeliveryPageBounds::check(q)?;
        let found = sqlx::query(concat!(
            delivery_select!(),
            " WHERE d.subscription_id = ?1 AND d.event_seq > ?2 \
             AND (?3 IS NULL OR d.state = ?3) ORDER BY d.event_seq LIMIT ?4"
        ))
        .bind(sub.as_str())
        .bind(b.after_seq)
        .bind(b.status.map(|s| s.as_str()))
        .bind(i64::from(b.limit) + 1)
        .fetch_all(self.pool())
        .await
        .map_err(sql_err("read"))?;
        let mut items = found
            .iter()
            .map(|r| rows::delivery(r, sql_err("read")))
            .collect::<Result<Vec<_>>>()?;
        let next = if items.len() > b.limit as usize {
            items.truncate(b.limit as usize);
            items.last().map(|d| d.seq.to_string())
        } else {
            None
        };
        Ok(DeliveryPage { items, next })
    }

    /// See [`Reads::key_state`](crate::store::Reads::key_state): the held keys from
    /// `deliveries_holding`, the count from `deliveries_in_flight` (every in-flight delivery
    /// of the journal: at most the sum of all subscriptions' lanes).
    pub(super) async fn read_key_state(&self, sub: &SubscriptionId) -> Result<KeyState> {
        let held: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT order_key, id, updated_at FROM deliveries \
             WHERE subscription_id = ?1 AND holds_key = 1 AND order_key IS NOT NULL \
             ORDER BY event_seq",
        )
        .bind(sub.as_str())
        .fetch_all(self.pool())
        .await
        .map_err(sql_err("read"))?;
        let in_flight: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM deliveries INDEXED BY deliveries_in_flight \
             WHERE state = 'in_flight' AND subscription_id = ?1",
        )
        .bind(sub.as_str())
        .fetch_one(self.pool())
        .await
        .map_err(sql_err("read"))?;
        Ok(KeyState {
            held: held
                .into_iter()
                .map(|(k, id, at)| (k, DeliveryId(id), at))
                .collect(),
            in_flight: u32::try_from(in_flight).unwrap_or(u32::MAX),
        })
    }

    /// See [`Reads::held_key_counts`](crate::store::Reads::held_key_counts).
    pub(super) async fn read_held_key_counts(&self) -> Result<Vec<(String, u64)>> {
        let found: Vec<(String, i64)> = sqlx::query_as(
            "SELECT subscription_id, COUNT(*) FROM deliveries INDEXED BY deliveries_holding \
             WHERE holds_key = 1 AND order_key IS NOT NULL GROUP BY subscription_id",
        )
        .fetch_all(self.pool())
        .await
        .map_err(sql_err("read"))?;
        Ok(found
            .into_iter()
            .map(|(sub, n)| (sub, n.max(0) as u64))
            .collect())
    }

    /// Every subscription's open queue: depth and age of the oldest open delivery's event.
    pub(super) async fn read_queue_stats(&self) -> Result<Vec<QueueStat>> {
        let found: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT q.sub, q.n, e.created_at FROM \
               (SELECT subscription_id AS sub, COUNT(*) AS n, MIN(event_seq) AS first \
                FROM deliveries WHERE state IN ('pending', 'in_flight') \
                GROUP BY subscription_id) q \
             JOIN events e ON e.seq = q.first",
        )
        .fetch_all(self.pool())
        .await
        .map_err(sql_err("read"))?;
        let now = now_ms();
        Ok(found
            .into_iter()
            .map(|(subscription, depth, created_at)| QueueStat {
                subscription,
                depth: depth.max(0) as u64,
                oldest_age: Duration::from_millis(now.saturating_sub(created_at).max(0) as u64),
            })
            .collect())
    }

    // ---- transforms ---------------------------------------------------------------------

    pub(super) async fn read_transform_versions(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<TransformVersion>> {
        let found = sqlx::query(concat!(
            version_select!(),
            "WHERE tenant_id = ?1 ORDER BY name, version"
        ))
        .bind(tenant.as_str())
        .fetch_all(self.pool())
        .await
        .map_err(sql_err("read"))?;
        found
            .iter()
            .map(|r| rows::version(r).map_err(sql_err("read")))
            .collect()
    }

    pub(super) async fn read_transform_by_hash(
        &self,
        tenant: &TenantId,
        name: &str,
        sha256: &str,
    ) -> Result<Option<TransformVersion>> {
        let row = sqlx::query(concat!(
            version_select!(),
            "WHERE tenant_id = ?1 AND name = ?2 AND sha256 = ?3"
        ))
        .bind(tenant.as_str())
        .bind(name)
        .bind(sha256)
        .fetch_optional(self.pool())
        .await
        .map_err(sql_err("read"))?;
        row.map(|r| rows::version(&r).map_err(sql_err("read")))
            .transpose()
    }

    pub(super) async fn read_transform_artifact(
        &self,
        tenant: &TenantId,
        name: &str,
        version: u32,
    ) -> Result<Option<StoredTransform>> {
        let row: Option<(String, Option<Vec<u8>>)> = sqlx::query_as(
            "SELECT sha256, artifact FROM transforms \
             WHERE tenant_id = ?1 AND name = ?2 AND version = ?3",
        )
        .bind(tenant.as_str())
        .bind(name)
        .bind(i64::from(version))
        .fetch_optional(self.pool())
        .await
        .map_err(sql_err("read"))?;
        let Some((hex_hash, artifact)) = row else {
            return Ok(None);
        };
        let sha256 = hex::decode(&hex_hash)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| Error::Internal(format!("transform {name} v{version}: bad hash")))?;
        Ok(Some(StoredTransform { sha256, artifact }))
    }

    pub(super) async fn read_transform_module(
        &self,
        tenant: &TenantId,
        name: &str,
        version: u32,
    ) -> Result<Option<Vec<u8>>> {
        sqlx::query_scalar(
            "SELECT wasm FROM transforms WHERE tenant_id = ?1 AND name = ?2 AND version = ?3",
        )
        .bind(tenant.as_str())
        .bind(name)
        .bind(i64::from(version))
        .fetch_optional(self.pool())
        .await
        .map_err(sql_err("read"))
    }
}

/// The first open delivery of `sub`'s group `(order_epoch, order_key)` after `after_seq`, read
/// on `conn`: a reader's, or the writer's right after it recorded the outcome that ended the
/// group's head (see `queue::RecordAttempt::follow`).
pub(super) fn next_in_group_on(
    conn: &rusqlite::Connection,
    sub: &SubscriptionId,
    order_epoch: u32,
    order_key: &str,
    after_seq: i64,
) -> rusqlite::Result<Option<rows::QueuedRaw>> {
    use rusqlite::OptionalExtension;
    conn.prepare_cached(concat!(
        queued_select!(),
        " WHERE d.subscription_id = ?1 AND d.order_epoch = ?2 AND d.order_key = ?3 \
           AND d.event_seq > ?4 AND d.order_key IS NOT NULL \
           AND (d.state IN ('pending', 'in_flight') OR d.holds_key = 1) \
         ORDER BY d.event_seq LIMIT 1"
    ))?
    .query_row(
        rusqlite::params![sub.as_str(), i64::from(order_epoch), order_key, after_seq],
        |r| rows::queued_raw(r),
    )
    .optional()
}
