//! Reads across deliveries for the dashboard and `GET /v1/events`: an event's envelope, a
//! tenant's events by an envelope identifier with their deliveries, and attempt statistics over
//! a time window.
//!
//! Each is a bounded query on the read-only pool: events by `transactionId` or `referenceId`
//! use the expression indexes of migration 0007 (the query's expression is the index's, word
//! for word), events by id the `(tenant_id, id)` key; statistics read the per-minute rollup of
//! migration 0008 (a row per subscription, minute and duration), kept by a trigger on
//! `attempts`, never the attempts themselves; the newest operational notifications use the
//! partial indexes of migration 0009 over the system tenant's events.

use std::collections::HashMap;

use sqlx::Row;

use super::open::sql_err;
use super::{Journal, rows};
use crate::domain::{
    AttemptRollup, Delivery, DurationCount, EventId, EventKey, EventTrace, MinuteRollup,
    NotificationType, SubscriptionId, TenantId, Timestamp,
};
use crate::error::{Error, Result};
use crate::notify::SYSTEM_TENANT;

// SQL is literal for sqlx (no runtime strings): the shared fragments are macros.

/// The rollup rows (migration 0008) from minute `?1` on, optionally of one tenant's
/// subscriptions (`?2`, NULL for all); rows of deleted subscriptions are left out.
macro_rules! rollup_window {
    () => {
        " FROM attempt_minutes m WHERE m.minute >= ?1 AND m.subscription_id IN \
           (SELECT id FROM subscriptions WHERE ?2 IS NULL OR tenant_id = ?2)"
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

/// The newest notifications, through migration 0009's `events_of_system`. The tenant is
/// written literally, as the partial index's condition is, and the index is named: without
/// statistics the planner would rather take a `(tenant_id, …)` index and sort the system
/// tenant's events, whose number only retention bounds.
pub(super) const RECENT_NOTIFICATIONS: &str = "SELECT seq, id, notification_type, body, created_at \
     FROM events INDEXED BY events_of_system WHERE tenant_id = '_hookline' \
     ORDER BY seq DESC LIMIT ?1";

/// The newest notifications about one tenant's subscriptions (`events_of_system_by_about`).
pub(super) const RECENT_NOTIFICATIONS_ABOUT: &str = "SELECT seq, id, notification_type, body, \
     created_at FROM events INDEXED BY events_of_system_by_about WHERE tenant_id = '_hookline' \
     AND json_extract(body, '$.workflowId') = ?1 ORDER BY seq DESC LIMIT ?2";

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
        self.traces(tenant, &found).await
    }

    pub(super) async fn read_recent_notifications(
        &self,
        about: Option<&TenantId>,
        limit: u32,
    ) -> Result<Vec<EventTrace>> {
        let query = match about {
            None => sqlx::query(RECENT_NOTIFICATIONS).bind(i64::from(limit)),
            Some(t) => sqlx::query(RECENT_NOTIFICATIONS_ABOUT)
                .bind(t.as_str())
                .bind(i64::from(limit)),
        };
        let found = query
            .fetch_all(&self.inner.readers)
            .await
            .map_err(sql_err("read"))?;
        self.traces(&TenantId::from(SYSTEM_TENANT), &found).await
    }

    /// Each found event row (`seq, id, notification_type, body, created_at`) of `tenant` with
    /// its deliveries: one read of all of them (the events' seqs through `deliveries_by_event`),
    /// not one per event.
    async fn traces(
        &self,
        tenant: &TenantId,
        found: &[sqlx::sqlite::SqliteRow],
    ) -> Result<Vec<EventTrace>> {
        if found.is_empty() {
            return Ok(Vec::new());
        }
        let seqs: Vec<i64> = found.iter().map(|r| r.get(0)).collect();
        let seqs = serde_json::to_string(&seqs)
            .map_err(|e| Error::Internal(format!("event seqs: {e}")))?;
        let mut by_event: HashMap<EventId, Vec<Delivery>> = HashMap::new();
        for d in sqlx::query(concat!(
            delivery_select!(),
            " WHERE d.event_seq IN (SELECT value FROM json_each(?1)) ORDER BY d.subscription_id"
        ))
        .bind(seqs)
        .fetch_all(&self.inner.readers)
        .await
        .map_err(sql_err("read"))?
        .iter()
        {
            let d = rows::delivery(d, sql_err("read"))?;
            by_event.entry(d.event_id.clone()).or_default().push(d);
        }
        let mut out = Vec::with_capacity(found.len());
        for r in found {
            let seq: i64 = r.get(0);
            let id = EventId::from(r.get::<String, _>(1));
            let ty: String = r.get(2);
            let body: String = r.get(3);
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
                accepted_at: Timestamp::from_ms(r.get(4)),
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
        // Both read the per-minute rollup (migration 0008), never the attempts: at most a row
        // per subscription, minute and duration of the window. The window starts at the start
        // of `since_ms`'s minute. The two run side by side on two of the pool's connections.
        let minutes = sqlx::query_as::<_, (i64, String, i64, i64, i64)>(concat!(
            "SELECT m.minute, m.subscription_id, SUM(m.succeeded), SUM(m.failed), \
             SUM(m.attempts)",
            rollup_window!(),
            " GROUP BY 1, 2"
        ))
        .bind(since_ms.div_euclid(60_000))
        .bind(tenant)
        .fetch_all(&self.inner.readers);
        let durations = sqlx::query_as::<_, (i64, bool, i64)>(concat!(
            "SELECT m.duration_ms, m.minute >= ?3, SUM(m.attempts)",
            rollup_window!(),
            " GROUP BY 1, 2"
        ))
        .bind(since_ms.div_euclid(60_000))
        .bind(tenant)
        .bind(recent_since_ms.div_euclid(60_000))
        .fetch_all(&self.inner.readers);
        let (minutes, durations) = tokio::try_join!(minutes, durations).map_err(sql_err("read"))?;
        Ok(AttemptRollup {
            by_minute: minutes
                .into_iter()
                .map(|(m, sub, ok, failed, all)| minute_row(m * 60_000, sub, ok, failed, all))
                .collect(),
            durations: durations
                .into_iter()
                .map(|(ms, recent, count)| DurationCount {
                    duration_ms: count_of(ms),
                    recent,
                    count: count_of(count),
                })
                .collect(),
        })
    }

    /// Per hour, the rollup rows of `subs` since `since_ms`: one indexed range per
    /// subscription (the rollup's key starts with the subscription).
    pub(super) async fn read_attempt_hours(
        &self,
        subs: &[SubscriptionId],
        since_ms: i64,
    ) -> Result<Vec<MinuteRollup>> {
        if subs.is_empty() {
            return Ok(Vec::new());
        }
        let ids =
            serde_json::to_string(&subs.iter().map(SubscriptionId::as_str).collect::<Vec<_>>())
                .map_err(|e| Error::Internal(format!("subscription ids: {e}")))?;
        let rows = sqlx::query_as::<_, (String, i64, i64, i64, i64)>(
            "SELECT m.subscription_id, m.minute / 60, SUM(m.succeeded), SUM(m.failed), \
             SUM(m.attempts) FROM attempt_minutes m \
             WHERE m.subscription_id IN (SELECT value FROM json_each(?1)) AND m.minute >= ?2 \
             GROUP BY 1, 2",
        )
        .bind(ids)
        .bind(since_ms.div_euclid(60_000))
        .fetch_all(&self.inner.readers)
        .await
        .map_err(sql_err("read"))?;
        Ok(rows
            .into_iter()
            .map(|(sub, hour, ok, failed, all)| minute_row(hour * 3_600_000, sub, ok, failed, all))
            .collect())
    }
}

fn count_of(v: i64) -> u64 {
    v.max(0) as u64
}

fn minute_row(start_ms: i64, sub: String, ok: i64, failed: i64, all: i64) -> MinuteRollup {
    MinuteRollup {
        minute_ms: start_ms,
        subscription: SubscriptionId::from(sub),
        succeeded: count_of(ok),
        failed: count_of(failed),
        attempts: count_of(all),
    }
}
