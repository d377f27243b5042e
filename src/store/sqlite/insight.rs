//! Reads across deliveries for the dashboard and `GET /v1/events`: an event's envelope, a
//! tenant's events by an envelope identifier with their deliveries, and attempt statistics over
//! a time window.
//!
//! Each is a bounded query on the read-only pool: events by `transactionId` or `referenceId`
//! use the expression indexes of migration 0007 (the query's expression is the index's, word
//! for word), events by id the `(tenant_id, id)` key; statistics are two grouped scans of the
//! window's attempts (one row per minute and subscription, one per distinct duration).

use sqlx::Row;

use super::open::sql_err;
use super::{Journal, rows};
use crate::domain::{
    AttemptRollup, DurationCount, EventId, EventKey, EventTrace, MinuteRollup, NotificationType,
    SubscriptionId, TenantId, Timestamp,
};
use crate::error::{Error, Result};

// SQL is literal for sqlx (no runtime strings): the shared fragments are macros.

/// Whether an attempt counts as failed: neither a 2xx nor a transform's drop nor an attempt cut
/// short by a stop (those are retried without counting).
macro_rules! failed {
    () => {
        "CASE WHEN a.status_code BETWEEN 200 AND 299 \
         OR a.error_kind IN ('dropped', 'interrupted') THEN 0 ELSE 1 END"
    };
}

macro_rules! succeeded {
    () => {
        "CASE WHEN a.status_code BETWEEN 200 AND 299 THEN 1 ELSE 0 END"
    };
}

/// The attempts of the window, optionally of one tenant's subscriptions (`?2`, NULL for all).
macro_rules! window {
    () => {
        " FROM attempts a JOIN deliveries d ON d.id = a.delivery_id \
         WHERE a.started_at >= ?1 AND (?2 IS NULL OR d.subscription_id IN \
           (SELECT id FROM subscriptions WHERE tenant_id = ?2))"
    };
}

/// A tenant's events (`?1`) matching `?2` by the given condition, newest first, at most `?3`.
macro_rules! events_where {
    ($cond:literal) => {
        concat!(
            "SELECT seq, id, notification_type, body, created_at FROM events \
             WHERE tenant_id = ?1 AND ",
            $cond,
            " ORDER BY seq DESC LIMIT ?3"
        )
    };
}

impl Journal {
    pub(super) async fn read_event_body(
        &self,
        tenant: &TenantId,
        id: &EventId,
    ) -> Result<Option<String>> {
        sqlx::query_scalar("SELECT body FROM events WHERE tenant_id = ?1 AND id = ?2")
            .bind(tenant.as_str())
            .bind(id.as_str())
            .fetch_optional(&self.inner.readers)
            .await
            .map_err(sql_err("read"))
    }

    pub(super) async fn read_events_by_key(
        &self,
        tenant: &TenantId,
        key: &EventKey,
        limit: u32,
    ) -> Result<Vec<EventTrace>> {
        let (sql, value) = match key {
            EventKey::TransactionId(v) => (
                events_where!("json_extract(body, '$.transactionId') = ?2"),
                v,
            ),
            EventKey::ReferenceId(v) => {
                (events_where!("json_extract(body, '$.referenceId') = ?2"), v)
            }
            EventKey::EventId(v) => (events_where!("id = ?2"), v),
        };
        let found = sqlx::query(sql)
            .bind(tenant.as_str())
            .bind(value.as_str())
            .bind(i64::from(limit))
            .fetch_all(&self.inner.readers)
            .await
            .map_err(sql_err("read"))?;
        let mut out = Vec::with_capacity(found.len());
        for r in &found {
            let seq: i64 = r.get(0);
            let ty: String = r.get(2);
            let body: String = r.get(3);
            let envelope: serde_json::Value = serde_json::from_str(&body)
                .map_err(|e| Error::Internal(format!("event {seq}: journaled body: {e}")))?;
            let text = |k: &str| envelope.get(k).and_then(|v| v.as_str()).map(str::to_owned);
            let deliveries = sqlx::query(concat!(
                delivery_select!(),
                " WHERE d.event_seq = ?1 ORDER BY d.subscription_id"
            ))
            .bind(seq)
            .fetch_all(&self.inner.readers)
            .await
            .map_err(sql_err("read"))?
            .iter()
            .map(|d| rows::delivery(d, sql_err("read")))
            .collect::<Result<Vec<_>>>()?;
            out.push(EventTrace {
                id: EventId::from(r.get::<String, _>(1)),
                tenant_id: tenant.clone(),
                transaction_id: text("transactionId").unwrap_or_default(),
                reference_id: text("referenceId"),
                notification_type: NotificationType::parse(&ty)
                    .ok_or_else(|| Error::Internal(format!("bad notification type {ty}")))?,
                accepted_at: Timestamp::from_ms(r.get(4)),
                deliveries,
            });
        }
        Ok(out)
    }

    pub(super) async fn read_attempt_rollup(
        &self,
        tenant: Option<&TenantId>,
        since_ms: i64,
        recent_since_ms: i64,
    ) -> Result<AttemptRollup> {
        let tenant = tenant.map(TenantId::as_str);
        // The two scans run side by side on two of the pool's connections.
        let minutes = sqlx::query_as::<_, (i64, String, i64, i64, i64)>(concat!(
            "SELECT a.started_at / 60000, d.subscription_id, SUM(",
            succeeded!(),
            "), SUM(",
            failed!(),
            "), COUNT(*)",
            window!(),
            " GROUP BY 1, 2"
        ))
        .bind(since_ms)
        .bind(tenant)
        .fetch_all(&self.inner.readers);
        let durations = sqlx::query_as::<_, (i64, bool, i64)>(concat!(
            "SELECT a.duration_ms, a.started_at >= ?3, COUNT(*)",
            window!(),
            " GROUP BY 1, 2"
        ))
        .bind(since_ms)
        .bind(tenant)
        .bind(recent_since_ms)
        .fetch_all(&self.inner.readers);
        let (minutes, durations) = tokio::try_join!(minutes, durations).map_err(sql_err("read"))?;
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
