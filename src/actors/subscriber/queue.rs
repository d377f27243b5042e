//! A subscription's queue in memory: the open deliveries fetched from the store, in `seq`
//! order, head first.
//!
//! Invariants:
//! - it is a bounded prefetch, never the truth: whatever it holds was read from the store, and
//!   a change it cannot follow in place (a delivery put back behind the head by a resubmit or a
//!   replay) makes it start over from the store ([`Prefetch::rebuild`]);
//! - it changes only after the store committed: [`Prefetch::settle`] applies an outcome that
//!   was recorded, never one about to be;
//! - the order is the store's: fetches append, nothing is inserted or reordered here.
//!
//! Plain data, no I/O: the actor does the reads and writes it is told to.

use std::collections::VecDeque;

use crate::domain::{DeliveryId, DeliveryStatus};
use crate::store::{AttemptRecord, QueuedDelivery};

/// The prefetched open deliveries of one subscription.
#[derive(Debug, Default)]
pub(super) struct Prefetch {
    items: VecDeque<QueuedDelivery>,
    /// Highest `seq` fetched; the next fetch continues after it.
    fetched_upto: i64,
    /// The queue must be rebuilt from the store before it is used again.
    stale: bool,
}

/// What the queue keeps of a committed attempt record (the record itself goes to the store).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Settled {
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub budget_used: u32,
    pub next_at: Option<i64>,
    /// The delivery the same commit marked in flight.
    pub marked_next: Option<DeliveryId>,
}

impl Settled {
    pub(super) fn of(r: &AttemptRecord) -> Settled {
        Settled {
            status: r.new_status,
            attempts: r.n,
            budget_used: r.budget_used,
            next_at: r.next_at,
            marked_next: r.next_in_flight.map(|(id, _, _)| id),
        }
    }
}

impl Prefetch {
    /// Where the next store read continues (after this `seq`), if the head cannot be known
    /// without one: the queue is empty, or was marked for a rebuild (it then starts over).
    pub(super) fn fetch_after(&mut self) -> Option<i64> {
        if self.stale {
            self.stale = false;
            self.items.clear();
            self.fetched_upto = 0;
        }
        self.items.is_empty().then_some(self.fetched_upto)
    }

    /// Appends what a store read returned (in `seq` order, after what is held).
    pub(super) fn extend(&mut self, more: Vec<QueuedDelivery>) {
        if let Some(last) = more.last() {
            self.fetched_upto = last.seq;
        }
        self.items.extend(more);
    }

    pub(super) fn head(&self) -> Option<&QueuedDelivery> {
        self.items.front()
    }

    /// Where `id` is in the queue, if it was fetched.
    pub(super) fn position(&self, id: DeliveryId) -> Option<usize> {
        self.items.iter().position(|d| d.id == id)
    }

    pub(super) fn get(&self, pos: usize) -> Option<&QueuedDelivery> {
        self.items.get(pos)
    }

    /// Forgets `id` (it was skipped).
    pub(super) fn remove(&mut self, id: DeliveryId) {
        self.items.retain(|q| q.id != id);
    }

    /// Starts over from the store before the next attempt: a delivery went back to pending
    /// somewhere behind the head, where a fetch continuing after `fetched_upto` would miss it.
    pub(super) fn rebuild(&mut self) {
        self.stale = true;
    }

    pub(super) fn is_stale(&self) -> bool {
        self.stale
    }

    /// The delivery that may be marked in flight by the commit of the outcome of the delivery
    /// at `pos`: the one right behind it when that outcome ends the head (`terminal`) and it is
    /// due by `now`. Whether the subscription may run and the rate limit allows it is the
    /// caller's to check.
    pub(super) fn next_ready(
        &self,
        pos: usize,
        terminal: bool,
        now: i64,
    ) -> Option<&QueuedDelivery> {
        if !terminal || pos != 0 {
            return None;
        }
        self.items
            .get(1)
            .filter(|next| next.next_at.is_none_or(|t| t <= now))
    }

    /// Applies the committed outcome of the delivery at `pos`: a delivery still pending keeps
    /// its place with its new counters and due time, a finished one leaves the queue, and the
    /// one the same commit marked in flight is flagged so its attempt starts without another
    /// write.
    pub(super) fn settle(&mut self, pos: usize, s: Settled) {
        if let Some(next) = s.marked_next
            && let Some(entry) = self.items.iter_mut().find(|q| q.id == next)
        {
            entry.marked = true;
        }
        if s.status == DeliveryStatus::Pending {
            if let Some(entry) = self.items.get_mut(pos) {
                entry.attempts = s.attempts;
                entry.budget_used = s.budget_used;
                entry.next_at = s.next_at;
                // Its mark was used by the attempt that just ended: the retry is paced and
                // marked in flight again.
                entry.marked = false;
            }
        } else {
            self.items.remove(pos);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::domain::{EventId, NotificationType};

    fn queued(id: i64, seq: i64) -> QueuedDelivery {
        QueuedDelivery {
            id: DeliveryId(id),
            seq,
            event_id: EventId::from(format!("evt-{id}")),
            notification_type: NotificationType::WorkflowEvent,
            body: Arc::from("{}"),
            attempts: 0,
            budget_used: 0,
            next_at: None,
            marked: false,
            order_key: None,
            order_epoch: 0,
            holds_key: false,
        }
    }

    fn ids(q: &Prefetch) -> Vec<i64> {
        q.items.iter().map(|d| d.id.raw()).collect()
    }

    fn settled(status: DeliveryStatus) -> Settled {
        Settled {
            status,
            attempts: 1,
            budget_used: 1,
            next_at: None,
            marked_next: None,
        }
    }

    #[test]
    fn fetches_continue_after_the_last_seq_and_only_when_empty() {
        let mut q = Prefetch::default();
        assert_eq!(q.fetch_after(), Some(0));
        q.extend(vec![queued(1, 10), queued(2, 12)]);
        assert_eq!(q.fetch_after(), None, "a head is known");
        assert_eq!(q.head().map(|d| d.id), Some(DeliveryId(1)));
        q.settle(0, settled(DeliveryStatus::Delivered));
        q.settle(0, settled(DeliveryStatus::Failed));
        assert_eq!(q.fetch_after(), Some(12));
        q.extend(Vec::new());
        assert_eq!(q.fetch_after(), Some(12), "an empty read keeps the cursor");
    }

    #[test]
    fn a_rebuild_starts_over_from_the_journal() {
        let mut q = Prefetch::default();
        q.extend(vec![queued(1, 10), queued(2, 12)]);
        q.rebuild();
        assert!(q.is_stale());
        assert_eq!(q.fetch_after(), Some(0));
        assert!(!q.is_stale());
        assert!(q.head().is_none());
    }

    #[test]
    fn a_retried_delivery_keeps_its_place_with_its_new_counters() {
        let mut q = Prefetch::default();
        let mut marked = queued(1, 1);
        marked.marked = true;
        q.extend(vec![marked, queued(2, 2)]);
        q.settle(
            0,
            Settled {
                status: DeliveryStatus::Pending,
                attempts: 3,
                budget_used: 2,
                next_at: Some(5_000),
                marked_next: None,
            },
        );
        assert_eq!(ids(&q), [1, 2]);
        let head = q.head().expect("head");
        assert_eq!(
            (head.attempts, head.budget_used, head.next_at),
            (3, 2, Some(5_000))
        );
        assert!(!head.marked, "a retry is paced and marked in flight again");
    }

    #[test]
    fn a_finished_delivery_leaves_and_the_marked_next_one_is_flagged() {
        let mut q = Prefetch::default();
        q.extend(vec![queued(1, 1), queued(2, 2), queued(3, 3)]);
        q.settle(
            0,
            Settled {
                marked_next: Some(DeliveryId(2)),
                ..settled(DeliveryStatus::Delivered)
            },
        );
        assert_eq!(ids(&q), [2, 3]);
        assert!(q.head().is_some_and(|d| d.marked));
        assert!(q.get(1).is_some_and(|d| !d.marked));
    }

    #[test]
    fn only_a_due_delivery_right_behind_a_finished_head_is_ready() {
        let mut q = Prefetch::default();
        let mut later = queued(3, 3);
        later.next_at = Some(2_000);
        q.extend(vec![queued(1, 1), queued(2, 2), later]);
        let ready =
            |q: &Prefetch, pos, terminal, now| q.next_ready(pos, terminal, now).map(|d| d.id.raw());
        assert_eq!(ready(&q, 0, true, 1_000), Some(2));
        assert_eq!(ready(&q, 0, false, 1_000), None, "the head is retried");
        assert_eq!(ready(&q, 1, true, 1_000), None, "not the head");
        q.remove(DeliveryId(2));
        assert_eq!(ready(&q, 0, true, 1_000), None, "not due yet");
        assert_eq!(ready(&q, 0, true, 2_000), Some(3));
        q.remove(DeliveryId(3));
        assert_eq!(ready(&q, 0, true, 2_000), None, "nothing behind");
    }
}
