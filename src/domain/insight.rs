//! What the journal says across deliveries: what happened to an event everywhere it went
//! ([`EventTrace`], found by an [`EventKey`]), and how attempts went over a time window
//! ([`AttemptStats`]).
//!
//! The statistics count **attempts** (every try, manual resubmits and replays included), not
//! events or deliveries, in the window in which each attempt *started*; an attempt succeeded when
//! its receiver answered 2xx, failed when it got anything else, except a transform's drop and an
//! attempt cut short by a stop, which count as neither. Latency is the attempt's duration as
//! logged. The store answers with an [`AttemptRollup`] (two grouped scans of the window); the
//! figures of a window are derived from it by the pure [`AttemptRollup::stats`].

use serde::{Deserialize, Serialize};

use crate::domain::time::Timestamp;
use crate::domain::{Delivery, EventId, NotificationType, SubscriptionId, TenantId};
use crate::error::{Error, Result};

/// How to find a tenant's events: by one of the envelope's identifiers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKey {
    /// The envelope's `transactionId`.
    TransactionId(String),
    /// The envelope's `referenceId`.
    ReferenceId(String),
    /// The event's id (the producer's, or `evt_…`).
    EventId(String),
}

impl EventKey {
    /// The key of a search from its three optional parts: exactly one must be given, 1 to 256
    /// characters.
    pub fn from_parts(
        transaction_id: Option<String>,
        reference_id: Option<String>,
        event_id: Option<String>,
    ) -> Result<EventKey> {
        let keys = [
            transaction_id.map(|v| ("transactionId", EventKey::TransactionId(v.clone()), v)),
            reference_id.map(|v| ("referenceId", EventKey::ReferenceId(v.clone()), v)),
            event_id.map(|v| ("eventId", EventKey::EventId(v.clone()), v)),
        ];
        let mut given = keys.into_iter().flatten();
        let (field, key, value) = given.next().ok_or_else(|| {
            Error::invalid(
                "transactionId",
                "give one of transactionId, referenceId or eventId",
            )
        })?;
        if given.next().is_some() {
            return Err(Error::invalid(
                field,
                "give only one of transactionId, referenceId or eventId",
            ));
        }
        if value.is_empty() || value.len() > 256 {
            return Err(Error::invalid(field, "must be 1 to 256 characters"));
        }
        Ok(key)
    }
}

/// One event and what became of it at every subscription it was fanned out to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventTrace {
    /// The event id.
    pub id: EventId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// The envelope's `transactionId`.
    pub transaction_id: String,
    /// The envelope's `referenceId`, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_id: Option<String>,
    /// What kind of notification it is.
    pub notification_type: NotificationType,
    /// When hookline accepted it, RFC 3339.
    #[schema(value_type = String)]
    pub accepted_at: Timestamp,
    /// Its deliveries, one per subscription it matched when it was published.
    pub deliveries: Vec<Delivery>,
}

/// Attempts in one minute of a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MinuteCount {
    /// The minute's start, ms since the epoch.
    pub minute_ms: i64,
    /// Attempts answered 2xx.
    pub succeeded: u64,
    /// Other attempts (non-2xx, network errors, transform failures).
    pub failed: u64,
}

/// A subscription's attempts in a window, for the "failing most" list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionFailures {
    pub subscription: SubscriptionId,
    /// Attempts that did not get a 2xx.
    pub failed: u64,
    /// All its attempts.
    pub attempts: u64,
}

/// How attempts went in a window (see the module docs for what is counted).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AttemptStats {
    /// Attempts started in the window.
    pub attempts: u64,
    /// Of those, answered 2xx.
    pub succeeded: u64,
    /// Median attempt duration in ms (`None` without attempts).
    pub p50_ms: Option<u64>,
    /// 95th percentile attempt duration in ms.
    pub p95_ms: Option<u64>,
    /// Minutes of the window that had attempts, oldest first.
    pub per_minute: Vec<MinuteCount>,
    /// The subscriptions with the most failed attempts (at most 10), most first.
    pub failing: Vec<SubscriptionFailures>,
}

/// A window's attempts grouped by minute and subscription, and their durations: what the store
/// reads in two grouped scans, from which [`AttemptStats`] are derived for any window inside it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AttemptRollup {
    /// Attempts per (minute, subscription), any order.
    pub by_minute: Vec<MinuteRollup>,
    /// How many attempts took each duration, split at the `recent_since` the store was given.
    pub durations: Vec<DurationCount>,
}

/// One minute of one subscription's attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MinuteRollup {
    pub minute_ms: i64,
    pub subscription: SubscriptionId,
    pub succeeded: u64,
    pub failed: u64,
    /// All attempts, neither succeeded nor failed included (drops, interruptions).
    pub attempts: u64,
}

/// How many attempts of the window took `duration_ms`, and whether they started in its recent
/// part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationCount {
    pub duration_ms: u64,
    pub recent: bool,
    pub count: u64,
}

impl AttemptRollup {
    /// The figures of the rollup's whole window, or (`recent`) of its recent part starting at
    /// `recent_since_ms` (the same value the store was given).
    pub fn stats(&self, recent: bool, recent_since_ms: i64) -> AttemptStats {
        let minutes: Vec<&MinuteRollup> = self
            .by_minute
            .iter()
            .filter(|m| !recent || m.minute_ms >= recent_since_ms - recent_since_ms % 60_000)
            .collect();
        let mut per_minute = std::collections::BTreeMap::<i64, MinuteCount>::new();
        let mut per_sub = std::collections::BTreeMap::<&SubscriptionId, (u64, u64)>::new();
        for m in &minutes {
            let slot = per_minute.entry(m.minute_ms).or_insert(MinuteCount {
                minute_ms: m.minute_ms,
                ..MinuteCount::default()
            });
            slot.succeeded += m.succeeded;
            slot.failed += m.failed;
            let s = per_sub.entry(&m.subscription).or_default();
            s.0 += m.failed;
            s.1 += m.attempts;
        }
        let mut durations: Vec<(u64, u64)> = self
            .durations
            .iter()
            .filter(|d| !recent || d.recent)
            .map(|d| (d.duration_ms, d.count))
            .collect();
        durations.sort_unstable();
        let total: u64 = durations.iter().map(|d| d.1).sum();
        // Nearest rank: the smallest duration with at least q of the attempts at or below it.
        let percentile = |q: f64| {
            let rank = ((q * total as f64).ceil() as u64).max(1);
            let mut seen = 0;
            durations.iter().find_map(|(ms, n)| {
                seen += n;
                (seen >= rank).then_some(*ms)
            })
        };
        let mut failing: Vec<SubscriptionFailures> = per_sub
            .into_iter()
            .filter(|(_, (failed, _))| *failed > 0)
            .map(|(s, (failed, attempts))| SubscriptionFailures {
                subscription: s.clone(),
                failed,
                attempts,
            })
            .collect();
        failing.sort_by(|a, b| {
            b.failed
                .cmp(&a.failed)
                .then_with(|| a.subscription.cmp(&b.subscription))
        });
        failing.truncate(10);
        AttemptStats {
            attempts: minutes.iter().map(|m| m.attempts).sum(),
            succeeded: per_minute.values().map(|m| m.succeeded).sum(),
            p50_ms: percentile(0.5),
            p95_ms: percentile(0.95),
            per_minute: per_minute.into_values().collect(),
            failing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_derived_from_the_rollup() {
        let sub = |s: &str| SubscriptionId::from(s);
        let m = |minute: i64, s: &str, ok, failed| MinuteRollup {
            minute_ms: minute * 60_000,
            subscription: sub(s),
            succeeded: ok,
            failed,
            attempts: ok + failed,
        };
        let d = |ms, recent, count| DurationCount {
            duration_ms: ms,
            recent,
            count,
        };
        let r = AttemptRollup {
            by_minute: vec![
                m(1, "a", 10, 0),
                m(100, "a", 1, 3),
                m(100, "b", 5, 1),
                m(101, "b", 4, 0),
            ],
            // Old: 10 × 5 ms. Recent: 10 × 10 ms, 3 × 900 ms, 1 × 2000 ms.
            durations: vec![
                d(5, false, 10),
                d(10, true, 10),
                d(900, true, 3),
                d(2000, true, 1),
            ],
        };
        let day = r.stats(false, 100 * 60_000);
        assert_eq!((day.attempts, day.succeeded), (24, 20));
        assert_eq!(day.p50_ms, Some(10), "rank 12 of 24");
        assert_eq!(day.p95_ms, Some(900), "rank 23 of 24");
        assert_eq!(day.per_minute.len(), 3);
        let hour = r.stats(true, 100 * 60_000 + 5);
        assert_eq!((hour.attempts, hour.succeeded), (14, 10));
        assert_eq!(hour.p50_ms, Some(10), "rank 7 of 14");
        assert_eq!(hour.p95_ms, Some(2000), "rank 14 of 14");
        assert_eq!(
            hour.failing[0].subscription,
            sub("a"),
            "3 failed before b's 1"
        );
        assert_eq!(hour.failing[0].attempts, 4);
        assert_eq!(AttemptRollup::default().stats(false, 0).p50_ms, None);
    }

    #[test]
    fn exactly_one_key_is_given() {
        assert_eq!(
            EventKey::from_parts(Some("tx".into()), None, None).ok(),
            Some(EventKey::TransactionId("tx".into()))
        );
        assert!(EventKey::from_parts(None, None, None).is_err());
        assert!(EventKey::from_parts(Some("a".into()), Some("b".into()), None).is_err());
        assert!(EventKey::from_parts(None, None, Some(String::new())).is_err());
        assert!(EventKey::from_parts(None, Some("x".repeat(257)), None).is_err());
    }
}
