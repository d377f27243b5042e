//! The values that cross the storage seam besides the domain's own types.

use std::sync::Arc;

use crate::domain::{
    DeliveryId, DeliveryQuery, DeliveryStatus, EventId, NotificationType, SubscriptionId, TenantId,
};
use crate::error::{Error, Result};

/// What recovery found when a store was opened.
#[derive(Debug, Clone, Default)]
pub(crate) struct Recovery {
    /// Attempts that were in flight when the process stopped; they were recorded as interrupted.
    pub interrupted: u64,
    /// Subscriptions with pending deliveries, to be resumed.
    pub open_subscriptions: Vec<SubscriptionId>,
}

/// A change to a subscription's state flags; `None` leaves a flag as it is.
#[derive(Debug, Clone, Default)]
pub(crate) struct FlagChange {
    pub paused: Option<bool>,
    pub blocked_on: Option<Option<i64>>,
    pub disabled_reason: Option<Option<String>>,
    pub faulted_reason: Option<Option<String>>,
}

/// The outcome of one attempt and the delivery's new state, written together.
#[derive(Debug, Clone)]
pub(crate) struct AttemptRecord {
    pub delivery: DeliveryId,
    pub subscription: SubscriptionId,
    pub n: u32,
    pub started_at: i64,
    pub duration_ms: u64,
    pub status_code: Option<u16>,
    pub error_kind: Option<crate::policy::ErrorKind>,
    pub error: Option<String>,
    pub snippet: Option<String>,
    /// What the transform printed, if anything.
    pub transform_log: Option<String>,
    pub new_status: DeliveryStatus,
    pub budget_used: u32,
    pub next_at: Option<i64>,
    pub flags: Option<FlagChange>,
    /// The next delivery to mark in flight in the same commit: (delivery, attempt number, at).
    /// Saves one commit per delivery on a busy subscription.
    pub next_in_flight: Option<(DeliveryId, u32, i64)>,
    /// The delivery (keyed, failed under `onFailure: block`) holds its key from this commit on.
    pub holds_key: bool,
    /// Operational notifications (`notify`) published in the same commit, fanned out like any
    /// event: a crash cannot record the transition and lose its notification. A refusal of one
    /// (no system tenant) writes nothing for it and does not fail the record.
    pub notices: Vec<crate::domain::Event>,
}

impl AttemptRecord {
    /// No flag change, no key held, no notification: an outcome that changes only its
    /// delivery (and the next one's in-flight mark), which a store may record without a
    /// transaction of its own.
    pub(crate) fn is_plain(&self) -> bool {
        self.flags.is_none() && !self.holds_key && self.notices.is_empty()
    }
}

/// A pending delivery as a subscription actor needs it to make an attempt.
#[derive(Debug, Clone)]
pub(crate) struct QueuedDelivery {
    pub id: DeliveryId,
    /// The delivery's place in its subscription's order (see [`Queue`](super::Queue)).
    pub seq: i64,
    pub event_id: EventId,
    pub notification_type: NotificationType,
    pub body: Arc<str>,
    pub attempts: u32,
    pub budget_used: u32,
    pub next_at: Option<i64>,
    /// Already marked in flight in the store (by the commit of the previous outcome).
    pub marked: bool,
    /// The delivery's ordering key, computed at fan-out (see docs/ordering.md): `None` when
    /// its subscription had no ordering then (one sequence for all its deliveries).
    pub order_key: Option<Arc<str>>,
    /// The subscription's ordering epoch at fan-out.
    pub order_epoch: u32,
    /// Failed under `onFailure: block` with a key: its key's later deliveries wait for it.
    pub holds_key: bool,
}

/// Where a key's next delivery is looked for once an outcome ended its head: the group
/// `(order_epoch, order_key)` after `after_seq` (see [`Queue::record_attempt_following`]).
///
/// [`Queue::record_attempt_following`]: super::Queue::record_attempt_following
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyFollow {
    pub order_epoch: u32,
    pub order_key: Arc<str>,
    pub after_seq: i64,
}

/// A keyed delivery that failed under `onFailure: block`: its key's later deliveries wait until
/// it is resubmitted or skipped (see docs/ordering.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeldKey {
    pub delivery: DeliveryId,
    pub seq: i64,
    pub order_key: Arc<str>,
    pub order_epoch: u32,
}

/// A subscription's per-key state with ordering keys, for the API (docs/ordering.md).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeyState {
    /// The deliveries holding their key, in `seq` order: (key text, delivery, failed at ms).
    pub held: Vec<(String, DeliveryId, i64)>,
    /// Its deliveries in flight.
    pub in_flight: u32,
}

/// A compiled transform upload to store.
#[derive(Debug)]
pub(crate) struct NewTransformRow {
    pub tenant: TenantId,
    pub name: String,
    pub sha256: String,
    pub wasm: Vec<u8>,
    pub artifact: Option<Arc<[u8]>>,
    pub at: i64,
}

/// What a stored transform version needs to be loaded.
#[derive(Debug)]
pub(crate) struct StoredTransform {
    pub sha256: [u8; 32],
    pub artifact: Option<Vec<u8>>,
}

/// A [`DeliveryQuery`] checked: what every store's delivery listing reads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DeliveryPageBounds {
    /// Deliveries with a `seq` greater than this (0: from the start).
    pub after_seq: i64,
    /// Page size, 1 to 1000 (default 100).
    pub limit: u32,
    pub status: Option<DeliveryStatus>,
}

impl DeliveryPageBounds {
    /// Refuses a page size outside 1..=1000 and a cursor that no page ever returned.
    pub(crate) fn check(q: &DeliveryQuery) -> Result<Self> {
        let limit = q.limit.unwrap_or(100);
        if !(1..=1000).contains(&limit) {
            return Err(Error::invalid("limit", "must be between 1 and 1000"));
        }
        let after_seq =
            match &q.after {
                None => 0,
                Some(c) => c.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                    Error::invalid("after", "is not a cursor from a previous page")
                })?,
            };
        Ok(DeliveryPageBounds {
            after_seq,
            limit,
            status: q.status,
        })
    }
}
