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
use crate::store::AttemptRecord;

impl SubscriberState {
    /// Attaches to `record` (the outcome of the delivery at `pos`) the notification of the
    /// transition it records, if any.
    pub(super) fn attach_notices(&mut self, pos: usize, record: &mut AttemptRecord, now: i64) {
        if !notify::notifies(&self.row.tenant_id) {
            return;
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
            return;
        };
        let Some(head) = self.queue.get(pos) else {
            return;
        };
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
            tenant: &self.row.tenant_id,
            subscription: &self.row.id,
            url: &self.row.spec.url,
        };
        record.notices.push(notify::notice(
            kind,
            about,
            Some(&attempted),
            reason.as_deref(),
            now,
        ));
    }
}
