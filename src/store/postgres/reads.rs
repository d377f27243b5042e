//! Reads on PostgreSQL: deliveries, attempt logs, pages, queue statistics, events by key and
//! attempt statistics. None takes a lock or a lease; each sees the last commit (any node's).
//!
//! Events by `transactionId` or `referenceId` use the expression indexes of the schema (the
//! query's expression is the index's, word for word); statistics are two grouped scans of the
//! window's attempts, run side by side on two pool connections.

use std::collections::HashMap;
use std::time::Duration;

use sqlx::Row;

use super::{PgStore, rows, sql_err};
use crate::domain::clock::now_ms;
use crate::domain::{
    Attempt, AttemptRollup, Delivery, DeliveryId, DeliveryPage, DeliveryQuery, DurationCount,
    EventId, EventKey, EventTrace, MinuteRollup, NotificationType, SubscriptionId, TenantId,
    Timestamp,
};
use crate::error::{Error, Result};
use crate::metrics::QueueStat;
use crate::notify::SYSTEM_TENANT;
use crate::store::{DeliveryPageBounds, KeyState};

const R: &str = "read";

macro_rules! pg_failed {
    () => {
        "CASE WHEN a.status_code BETWEEN 200 AND 299 \
         OR a.error_kind IN ('dropped', 'interrupted') THEN 0 ELSE 1 END"
    };
}

macro_rules! pg_succeeded {
    () => {
        "CASE WHEN a.status_code BETWEEN 200 AND 299 THEN 1 ELSE 0 END"
    };
}

/// The attempts of the window, optionally of one tenant's subscriptions (`$2`, NULL for all).
macro_rules! pg_window {
    () => {
        " FROM attempts a JOIN deliveries d ON d.id = a.delivery_id \
         WHERE a.started_at >= $1 AND ($2::text IS NULL OR d.subscription_id IN \
           (SELECT id FROM subscriptions WHERE tenant_id = $2))"
    };
}

macro_rules! pg_events_where {
    ($cond:literal) => {
        concat!(
            "SELECT seq, id, notification_type, body, created_at FROM events \
             WHERE tenant_id = $1 AND ",
            $cond,
            " ORDER BY seq DESC LIMIT $3"
        )
    };
}

impl PgStore {
    pub(super) async fn pg_get_delivery(&self, id: DeliveryId) -> Result<Option<Delivery>> {
        sqlx::query(concat!(pg_delivery_select!(), " WHERE d.id = $1"))
            .bind(id.raw())
            .fetch_optional(self.pool())
            .await
            .map_err(sql_err(R))?
            .map(|r| rows::delivery(&r))
            .transpose()
    }

    pub(super) async fn pg_attempts(&self, id: DeliveryId) -> Result<Vec<Attempt>> {
        let found = sqlx::query(
            "SELECT n, started_at, duration_ms, status_code, error_kind, error, response_snippet, \
             transform_log FROM attempts WHERE delivery_id = $1 ORDER BY n",
        )
        .bind(id.raw())
        .fetch_all(self.pool())
        .await
        .map_err(sql_err(R))?;
        found.iter().map(rows::attempt).collect()
    }

    pub(super) async fn pg_list_deliveries(
        &self,
        sub: &SubscriptionId,
        q: &DeliveryQuery,
    ) -> Result<DeliveryPage> {
        let b = DeliveryPageBounds::check(q)?;
        let found = sqlx::query(concat!(
            pg_delivery_select!(),
            " WHERE d.subscription_id = $1 AND d.seq > $2 \
             AND ($3::text IS NULL OR d.state = $3) ORDER BY d.seq LIMIT $4"
        ))
        .bind(sub.as_str())
        .bind(b.after_seq)
        .bind(b.status.map(|s| s.as_str()))
        .bind(i64::from(b.limit) + 1)
        .fetch_all(self.pool())
        .await
        .map_err(sql_err(R))?;
        let mut items = found
            .iter()
            .map(rows::delivery)
            .collect::<Result<Vec<_>>>()?;
        let next = if items.len() > b.limit as usize {
            items.truncate(b.limit as usize);
            items.last().map(|d| d.seq.to_string())
        } else {
            None
        };
        Ok(DeliveryPage { items, next })
    }

    /// See [`Reads::key_state`](crate::store::Reads::key_state) (`deliveries_holding`,
    /// `deliveries_in_flight`).
    pub(super) async fn pg_key_state(&self, sub: &SubscriptionId) -> Result<KeyState> {
        let held: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT order_key, id, updated_at FROM deliveries \
             WHERE subscription_id = $1 AND holds_key AND order_key IS NOT NULL ORDER BY seq",
        )
        .bind(sub.as_str())
        .fetch_all(self.pool())
        .await
        .map_err(sql_err("read"))?;
        let in_flight: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM deliveries WHERE subscription_id = $1 AND state = 'in_flight'",
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

    /// See [`Reads::held_key_counts`](crate::store::Reads::held_key_counts) (`deliveries_holding`).
    pub(super) async fn pg_held_key_counts(&self) -> Result<Vec<(String, u64)>> {
        let found: Vec<(String, i64)> = sqlx::query_as(
            "SELECT subscription_id, COUNT(*) FROM deliveries \
             WHERE holds_key AND order_key IS NOT NULL GROUP BY subscription_id",
        )
        .fetch_all(self.pool())
        .await
        .map_err(sql_err(R))?;
        Ok(found
            .into_iter()
            .map(|(sub, n)| (sub, n.max(0) as u64))
            .collect())
    }

    pub(super) async fn pg_queue_stats(&self) -> Result<Vec<QueueStat>> {
        let found: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT q.sub, q.n, e.created_at FROM \
               (SELECT subscription_id AS sub, COUNT(*) AS n, MIN(seq) AS first \
                FROM deliveries WHERE state IN ('pending', 'in_flight') \
                GROUP BY subscription_id) q \
             JOIN deliveries f ON f.subscription_id = q.sub AND f.seq = q.first \
             JOIN events e ON e.seq = f.event_seq",
        )
        .fetch_all(self.pool())
        .await
        .map_err(sql_err(R))?;
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

    pub(super) async fn pg_event_body(
        &self,
        tenant: &TenantId,
        id: &EventId,
    ) -> Result<Option<String>> {
        sqlx::query_scalar("SELECT body FROM events WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.as_str())
            .bind(id.as_str())
            .fetch_optional(self.pool())
            .await
            .map_err(sql_err(R))
    }

    pub(super) async fn pg_events_by_key(
        &self,
        tenant: &TenantId,
        key: &EventKey,
        limit: u32,
    ) -> Result<Vec<EventTrace>> {
        let (sql, value) = match key {
            EventKey::TransactionId(v) => (
                pg_events_where!("((body::jsonb) ->> 'transactionId') = $2"),
                v,
            ),
            EventKey::ReferenceId(v) => (
                pg_events_where!("((body::jsonb) ->> 'referenceId') = $2"),
                v,
            ),
            EventKey::EventId(v) => (pg_events_where!("id = $2"), v),
        };
        let found = sqlx::query(sql)
            .bind(tenant.as_str())
            .bind(value.as_str())
            .bind(i64::from(limit))
            .fetch_all(self.pool())
            .await
            .map_err(sql_err(R))?;
        self.pg_traces(tenant, &found).await
    }

    pub(super) async fn pg_recent_notifications(
        &self,
        about: Option<&TenantId>,
        limit: u32,
    ) -> Result<Vec<EventTrace>> {
        // The tenant is written literally, as the partial indexes' condition is (migration
        // 0002), so the planner can use them.
        let query = match about {
            None => sqlx::query(
                "SELECT seq, id, notification_type, body, created_at FROM events \
                 WHERE tenant_id = '_hookline' ORDER BY seq DESC LIMIT $1",
            )
            .bind(i64::from(limit)),
            Some(t) => sqlx::query(
                "SELECT seq, id, notification_type, body, created_at FROM events \
                 WHERE tenant_id = '_hookline' AND ((body::jsonb) ->> 'workflowId') = $1 \
                 ORDER BY seq DESC LIMIT $2",
            )
            .bind(t.as_str())
            .bind(i64::from(limit)),
        };
        let found = query.fetch_all(self.pool()).await.map_err(sql_err(R))?;
        self.pg_traces(&TenantId::from(SYSTEM_TENANT), &found).await
    }

    /// Each found event row (`seq, id, notification_type, body, created_at`) of `tenant` with
    /// its deliveries: one read of all of them (`deliveries_by_event`), not one per event.
    async fn pg_traces(
        &self,
        tenant: &TenantId,
        found: &[sqlx::postgres::PgRow],
    ) -> Result<Vec<EventTrace>> {
        if found.is_empty() {
            return Ok(Vec::new());
        }
        let seqs = found
            .iter()
            .map(|r| r.try_get::<i64, _>(0).map_err(sql_err(R)))
            .collect::<Result<Vec<i64>>>()?;
        let mut by_event: HashMap<EventId, Vec<Delivery>> = HashMap::new();
        for d in sqlx::query(concat!(
            pg_delivery_select!(),
            " WHERE d.event_seq = ANY($1) ORDER BY d.subscription_id"
        ))
        .bind(&seqs)
        .fetch_all(self.pool())
        .await
        .map_err(sql_err(R))?
        .iter()
        {
            let d = rows::delivery(d)?;
            by_event.entry(d.event_id.clone()).or_default().push(d);
        }
        let mut out = Vec::with_capacity(found.len());
        for r in found {
            let seq: i64 = r.try_get(0).map_err(sql_err(R))?;
            let id = EventId::from(r.try_get::<String, _>(1).map_err(sql_err(R))?);
            let ty: String = r.try_get(2).map_err(sql_err(R))?;
            let body: String = r.try_get(3).map_err(sql_err(R))?;
            let created_at: i64 = r.try_get(4).map_err(sql_err(R))?;
            let envelope: serde_json::Value = serde_json::from_str(&body)
                .map_err(|e| Error::Internal(format!("event {seq}: journaled body: {e}")))?;
            let text = |k: &str| envelope.get(k).and_then(|v| v.as_str()).map(str::to_owned);
            out.push(EventTrace {
                deliveries: by_event.remove(&id).unwrap_or_default(),
                id,
                tenant_id: tenant.clone(),
                transaction_id: text("transactionId").unwrap_or_default(),
                reference_id: text("referenceId"),
                notification_type: NotificationType::parse(&ty)
                    .ok_or_else(|| Error::Internal(format!("bad notification type {ty}")))?,
                accepted_at: Timestamp::from_ms(created_at),
            });
        }
        Ok(out)
    }

    pub(super) async fn pg_attempt_rollup(
        &self,
        tenant: Option<&TenantId>,
        since_ms: i64,
        recent_since_ms: i64,
    ) -> Result<AttemptRollup> {
        let tenant = tenant.map(TenantId::as_str);
        let minutes = sqlx::query_as::<_, (i64, String, i64, i64, i64)>(concat!(
            "SELECT a.started_at / 60000, d.subscription_id, SUM(",
            pg_succeeded!(),
            ")::int8, SUM(",
            pg_failed!(),
            ")::int8, COUNT(*)",
            pg_window!(),
            " GROUP BY 1, 2"
        ))
        .bind(since_ms)
        .bind(tenant)
        .fetch_all(self.pool());
        let durations = sqlx::query_as::<_, (i64, bool, i64)>(concat!(
            "SELECT a.duration_ms, a.started_at >= $3, COUNT(*)",
            pg_window!(),
            " GROUP BY 1, 2"
        ))
        .bind(since_ms)
        .bind(tenant)
        .bind(recent_since_ms)
        .fetch_all(self.pool());
        let (minutes, durations) = tokio::try_join!(minutes, durations).map_err(sql_err(R))?;
        let n = |v: i64| v.max(0) as u64;
        Ok(AttemptRollup {
            by_minute: minutes
                .into_iter()
                .map(|(m, sub, ok, failed, all)| MinuteRollup {
                    minute_ms: m * 60_000,
                    subscription: SubscriptionId::from(sub),
                    succeeded: n(ok),
                    failed: n(failed),
                    attempts: n(all),
                })
                .collect(),
            durations: durations
                .into_iter()
                .map(|(ms, recent, count)| DurationCount {
                    duration_ms: n(ms),
                    recent,
                    count: n(count),
                })
                .collect(),
        })
    }
}
