//! Deliveries: one (event, subscription) pair each, its attempts, how they are listed and
//! replayed, and what an endpoint test found.
//!
//! A delivery's status moves `pending` → `in_flight` → a terminal status (`delivered`, `failed`,
//! `skipped`, `dropped`); only an operator (resubmit, replay) puts a terminal delivery back to
//! `pending`. The journal stores the status as [`DeliveryStatus::as_str`].

use serde::{Deserialize, Serialize};

use crate::domain::time::{Timestamp, TimestampError};
use crate::domain::{DeliveryId, EventId, SubscriptionId, TenantId};
use crate::error::{Error, Result};

/// A delivery's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting for its turn (or for a retry).
    Pending,
    /// An attempt is under way.
    InFlight,
    /// The receiver answered 2xx.
    Delivered,
    /// Given up on; see the attempts. Under `onFailure: block` it holds the queue.
    Failed,
    /// Skipped by an operator.
    Skipped,
    /// Dropped by a transform.
    Dropped,
}

impl DeliveryStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::InFlight => "in_flight",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Skipped => "skipped",
            DeliveryStatus::Dropped => "dropped",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        [
            DeliveryStatus::Pending,
            DeliveryStatus::InFlight,
            DeliveryStatus::Delivered,
            DeliveryStatus::Failed,
            DeliveryStatus::Skipped,
            DeliveryStatus::Dropped,
        ]
        .into_iter()
        .find(|d| d.as_str() == s)
    }

    /// Whether the delivery will not be attempted again without an operator.
    pub fn is_terminal(self) -> bool {
        !matches!(self, DeliveryStatus::Pending | DeliveryStatus::InFlight)
    }
}

/// One (event, subscription) pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// The delivery id.
    pub id: DeliveryId,
    /// The event delivered.
    pub event_id: EventId,
    /// The subscription delivered to.
    pub subscription_id: SubscriptionId,
    /// The tenant both belong to.
    pub tenant_id: TenantId,
    /// The event's journal sequence number: the delivery order.
    pub seq: i64,
    /// Current status.
    pub status: DeliveryStatus,
    /// Attempts made so far.
    pub attempts: u32,
    /// Status code of the last attempt, if it got a response (a timeout is recorded as 500).
    pub last_status_code: Option<u16>,
    /// Error of the last attempt, if any.
    pub last_error: Option<String>,
    /// When the next retry is due, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub next_attempt_at: Option<Timestamp>,
    /// Last change, RFC 3339.
    #[schema(value_type = String)]
    pub updated_at: Timestamp,
}

/// One HTTP try of a delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    /// 1 for the first attempt.
    pub n: u32,
    /// Start time, RFC 3339.
    #[schema(value_type = String)]
    pub started_at: Timestamp,
    /// Duration in ms.
    pub duration_ms: u64,
    /// The response status (a timeout is recorded as 500, as the seeds do).
    pub status_code: Option<u16>,
    /// The kind of error: `timeout`, `connect`, `dns`, `reset`, `http_status`, `interrupted`, ….
    pub error_kind: Option<String>,
    /// A description of the error.
    pub error: Option<String>,
    /// The first bytes (at most 4 KiB) of the response body.
    pub response_snippet: Option<String>,
    /// What the subscription's transform printed during this attempt (bounded), if it printed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform_log: Option<String>,
}

/// A delivery with its attempt log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryDetail {
    /// The delivery.
    pub delivery: Delivery,
    /// Its attempts, oldest first.
    pub attempt_log: Vec<Attempt>,
}

/// Which deliveries of a subscription to list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeliveryQuery {
    /// Only this status.
    pub status: Option<DeliveryStatus>,
    /// At most this many (1 to 1000, default 100).
    pub limit: Option<u32>,
    /// Only after this cursor (from a previous page's `next`).
    pub after: Option<String>,
}

/// A page of deliveries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryPage {
    /// The deliveries, in `seq` order.
    pub items: Vec<Delivery>,
    /// The cursor of the next page, or `None` at the end.
    pub next: Option<String>,
}

/// A replay window (`POST /v1/subscriptions/{id}/replay`): the subscription's finished
/// deliveries of events accepted from `since` (inclusive) until `until` (exclusive; default
/// now), both RFC 3339.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplayWindow {
    pub since: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

impl ReplayWindow {
    /// The window in journal milliseconds, checked: both RFC 3339, `since` before `until`.
    pub(crate) fn to_ms(&self, now_ms: i64) -> Result<(i64, i64)> {
        let parse = |field: &str, s: &str| -> Result<i64> {
            match Timestamp::parse(s) {
                Ok(t) => Ok(t.as_ms()),
                Err(TimestampError::Syntax(e)) => Err(Error::invalid(
                    field,
                    format!("must be an RFC 3339 time ({e})"),
                )),
                Err(TimestampError::OutOfRange) => Err(Error::invalid(field, "out of range")),
            }
        };
        let since = parse("since", &self.since)?;
        let until = match &self.until {
            Some(u) => parse("until", u)?,
            None => now_ms.saturating_add(1),
        };
        if until <= since {
            return Err(Error::invalid("until", "must be after since"));
        }
        Ok((since, until))
    }
}

/// The answer to a replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplayReceipt {
    /// Deliveries put back to pending.
    pub replayed: u64,
}

/// What an endpoint test (the lending seed's "Test button") found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointTest {
    /// The receiver's status code, if it answered (a timeout is reported as 500, as the seeds do).
    pub status_code: Option<u16>,
    /// How long the request took.
    pub duration_ms: u64,
    /// What went wrong, if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Whether the endpoint accepted the signed test event with a 2xx.
    pub verified: bool,
}
