//! What the journal says across deliveries: what happened to an event everywhere it went
//! ([`EventTrace`], found by an [`EventKey`]), and how attempts went over a time window
//! ([`AttemptStats`]).
//!
//! The statistics count **attempts** (every try, manual resubmits and replays included), not
//! events or deliveries, in the window in which each attempt *started*; an attempt succeeded when
//! its receiver answered 2xx. Latency is the attempt's duration as logged.

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

#[cfg(test)]
mod tests {
    use super::*;

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
