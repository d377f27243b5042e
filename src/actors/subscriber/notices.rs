//! Which operational notifications (`notify`) an attempt's record carries.
//!
//! The record's own changes decide: a subscription disabled (410 or the receiver's request),
//! blocked on this delivery, or a delivery failed for good while the queue moves on, is
//! notified in the same commit as the change. The first delivery delivered after an operator
//! cleared a block (resubmit or skip) is notified as `recovered`: the actor remembers the
//! cleared block in memory (`SubscriberState::recovering`), so a restart in between forgets
//! it and that one `recovered` is not sent. The system tenant's subscriptions are never
//! notified about.

use super::SubscriberState;
use crate::domain::DeliveryStatus;
use crate::notify::{self, About, Attempted, NoticeKind};
use crate::store::{AttemptRecord, QueuedDelivery, SubscriptionRow};

impl SubscriberState {
    /// Attaches to `record` (the outcome of the delivery at `pos`) the notification of the
    /// transition it records, if any.
    pub(super) fn attach_notices(&mut self, pos: usize, record: &mut AttemptRecord, now: i64) {
        let Some((kind, reason)) = self.notice_kind(record) else {
            return;
        };
        if let Some(head) = self.queue.get(pos) {
            push_notice(&self.row, head, record, kind, reason.as_deref(), now);
        }
    }

    /// The same for the outcome of `head`, a delivery with ordering keys: a delivery that now
    /// holds its key is notified as exhausted, saying that its key waits (the subscription
    /// itself is not blocked).
    pub(super) fn attach_keyed_notices(
        &mut self,
        head: &QueuedDelivery,
        record: &mut AttemptRecord,
        now: i64,
    ) {
        let found = if record.holds_key && notify::notifies(&self.row.tenant_id) {
            let why = "its ordering key is held: the key's later events wait until this \
                       delivery is resubmitted or skipped; other keys go on";
            Some((NoticeKind::Exhausted, Some(why.to_owned())))
        } else {
            self.notice_kind(record)
        };
        if let Some((kind, reason)) = found {
            push_notice(&self.row, head, record, kind, reason.as_deref(), now);
        }
    }

    /// The notification `record` calls for, if any, with its reason.
    fn notice_kind(&mut self, record: &AttemptRecord) -> Option<(NoticeKind, Option<String>)> {
        if !notify::notifies(&self.row.tenant_id) {
            return None;
        }
        let flags = record.flags.as_ref();
        let disabled = flags
            .and_then(|f| f.disabled_reason.as_ref())
            .and_then(|r| r.as_deref());
        let blocked = flags.is_some_and(|f| matches!(f.blocked_on, Some(Some(_))));
        let (kind, reason) = if let Some(why) = disabled {
            (NoticeKind::Disabled, Some(why.to_owned()))
        } else if blocked {
            (NoticeKind::Blocked, None)
        } else if record.new_status == DeliveryStatus::Failed {
            (NoticeKind::Exhausted, None)
        } else if record.new_status == DeliveryStatus::Delivered && self.recovering.is_some() {
            self.recovering = None;
            let why = "delivering again after the block was cleared";
            (NoticeKind::Recovered, Some(why.to_owned()))
        } else {
            return None;
        };
        Some((kind, reason))
    }
}

/// Pushes onto `record` the notification `kind` about `head`'s attempt.
fn push_notice(
    row: &SubscriptionRow,
    head: &QueuedDelivery,
    record: &mut AttemptRecord,
    kind: NoticeKind,
    reason: Option<&str>,
    now: i64,
) {
    let attempted = Attempted {
        delivery: record.delivery,
        attempt: record.n,
        status: record.new_status.as_str(),
        http_status: record.status_code,
        error_kind: record.error_kind.map(crate::policy::ErrorKind::as_str),
        error: record.error.as_deref(),
        event_id: &head.event_id,
        notification_type: head.notification_type,
        body: &head.body,
    };
    let about = About {
        tenant: &row.tenant_id,
        subscription: &row.id,
        url: &row.spec.url,
    };
    record
        .notices
        .push(notify::notice(kind, about, Some(&attempted), reason, now));
}
