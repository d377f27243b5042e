//! The queue of a subscription with ordering keys, in memory: the key heads it knows, the keys
//! held by a failed delivery, and the one rule that says which head may start (see
//! docs/ordering.md, guarantee 12).
//!
//! Invariants:
//! - every head with a `seq` up to `horizon` is known (a store read of heads is complete up to
//!   the last `seq` it returns, or up to the subscription's tail when it returns fewer than
//!   asked); a head beyond the horizon never starts, because an unknown earlier head could
//!   conflict with it;
//! - a head starts only if no earlier known head conflicts with it (another ordering epoch, or
//!   a NULL key on either side) and no earlier held delivery conflicts with it (another epoch,
//!   the same key, or a NULL key): two heads of one key never exist, so at most one delivery of
//!   a key is in flight;
//! - like the prefetch, it is never the truth and changes only after the store committed: an
//!   operator's change makes it start over from the store ([`Lanes::rebuild`]);
//! - memory is bounded: no read of more heads while `cap` heads up to the horizon are known,
//!   and a followed head beyond the horizon is kept only while fewer than twice `cap` heads
//!   are (else a later read finds it again), so at most about `2 * cap + limit` heads are held.
//!
//! Plain data, no I/O: the actor does the reads and writes it is told to.

use std::collections::BTreeMap;

use crate::domain::id::DeliveryMap;
use crate::domain::{DeliveryId, DeliveryStatus};
use crate::store::{HeldKey, QueuedDelivery};

/// What may happen next on an ordered subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pick {
    /// Start this head now.
    Start(DeliveryId),
    /// Nothing may start before `at` (ms since the epoch); `delivery` is the head that waits.
    Wait { delivery: DeliveryId, at: i64 },
    /// Nothing to start; `read` when a store read may find more heads.
    Nothing { read: bool },
}

/// Whether an outcome of a keyed head ends it, so that its key moves on to its next delivery:
/// the rule by which [`Lanes::settle`] answers [`After::NextOf`] (a retry keeps the head, a
/// failure that holds the key keeps the key). The record asks the store for the next delivery
/// by the same rule (`keyed::follow_for`).
pub(super) fn ends_key_head(status: DeliveryStatus, holds_key: bool) -> bool {
    status != DeliveryStatus::Pending && !holds_key
}

/// What the actor must do after a delivery's outcome was settled here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum After {
    /// Nothing more.
    Done,
    /// The head of a key ended: read the next delivery of that key after `seq`.
    NextOf { epoch: u32, key: String, seq: i64 },
}

#[derive(Debug)]
pub(super) struct Lanes {
    /// The known heads by `seq`, those in flight included.
    heads: BTreeMap<i64, QueuedDelivery>,
    /// The `seq` of each known head, by delivery (every lookup by id is one probe).
    seq_of: DeliveryMap<i64>,
    /// Keyed deliveries failed under `onFailure: block`, by `seq`.
    held: Vec<HeldKey>,
    /// Every head with a `seq` up to here is known.
    horizon: i64,
    /// A store read may find heads beyond the horizon.
    more: bool,
    /// Start over from the store before the next pick.
    stale: bool,
    /// The receiver asked the whole subscription to slow down (`Retry-After`, 429) until then.
    hold_until: Option<i64>,
    /// The most heads up to the horizon before a read of more (see the module's invariants).
    cap: usize,
    /// The head marked in flight by the commit of another outcome, not started yet: it starts
    /// before any other (the store shows it in flight; a head followed in the same commit
    /// must not take its lane).
    marked: Option<DeliveryId>,
}

impl Lanes {
    /// An empty queue that reads its heads (and held keys) from the store first; at most `cap`
    /// heads are kept.
    pub(super) fn new(cap: usize) -> Lanes {
        Lanes {
            heads: BTreeMap::new(),
            seq_of: DeliveryMap::default(),
            held: Vec::new(),
            horizon: 0,
            more: true,
            stale: true,
            hold_until: None,
            cap: cap.max(1),
            marked: None,
        }
    }

    /// Starts over from the store before the next pick (the hold of the whole subscription is
    /// kept: it is the receiver's, not the queue's).
    pub(super) fn rebuild(&mut self) {
        self.stale = true;
    }

    /// Takes a new bound on the heads kept (the subscription's `lanes` changed).
    pub(super) fn set_cap(&mut self, cap: usize) {
        self.cap = cap.max(1);
    }

    pub(super) fn is_stale(&self) -> bool {
        self.stale
    }

    /// Forgets everything and takes `held` as the keys held now: the store is read again.
    pub(super) fn restart(&mut self, held: Vec<HeldKey>) {
        self.heads.clear();
        self.seq_of.clear();
        self.marked = None;
        self.held = held;
        self.horizon = 0;
        self.more = true;
        self.stale = false;
    }

    /// Where the next read of heads continues.
    pub(super) fn read_after(&self) -> i64 {
        self.horizon
    }

    /// Takes a store read of heads after [`read_after`](Self::read_after): `found` in `seq`
    /// order, asked for `limit`, when the subscription's last delivery had `seq` `tail`.
    pub(super) fn extend(&mut self, found: Vec<QueuedDelivery>, limit: usize, tail: i64) {
        let complete = found.len() < limit;
        let last = found.last().map(|d| d.seq);
        for d in found {
            self.insert(d);
        }
        if complete {
            self.horizon = self.horizon.max(tail);
            self.more = false;
        } else if let Some(last) = last {
            self.horizon = self.horizon.max(last);
            self.more = true;
        }
    }

    /// New deliveries were journaled: a read may find new heads.
    pub(super) fn woken(&mut self) {
        self.more = true;
    }

    /// Takes the delivery that follows a finished head in its key (read by the actor).
    pub(super) fn follow(&mut self, next: QueuedDelivery) {
        if next.holds_key {
            if !self.held.iter().any(|h| h.delivery == next.id)
                && let Some(key) = next.order_key.clone()
            {
                self.held.push(HeldKey {
                    delivery: next.id,
                    seq: next.seq,
                    order_key: key,
                    order_epoch: next.order_epoch,
                });
                self.held.sort_by_key(|h| h.seq);
            }
            return;
        }
        if next.seq > self.horizon {
            self.more = true;
            if self.heads.len() >= self.cap.saturating_mul(2) {
                return; // a read after the horizon finds it: it is a head in the store
            }
        }
        self.insert(next);
    }

    /// Whether some key is held (its later deliveries wait for an operator).
    pub(super) fn any_held(&self) -> bool {
        !self.held.is_empty()
    }

    /// Holds every key until `at`: the receiver asked the subscription to slow down.
    pub(super) fn hold_until(&mut self, at: i64) {
        self.hold_until = Some(self.hold_until.map_or(at, |h| h.max(at)));
    }

    pub(super) fn get(&self, id: DeliveryId) -> Option<&QueuedDelivery> {
        self.heads.get(self.seq_of.get(&id)?)
    }

    fn get_mut(&mut self, id: DeliveryId) -> Option<&mut QueuedDelivery> {
        self.heads.get_mut(self.seq_of.get(&id)?)
    }

    /// Keeps `d` as a head (a head already known stays as it is).
    fn insert(&mut self, d: QueuedDelivery) {
        if let std::collections::btree_map::Entry::Vacant(e) = self.heads.entry(d.seq) {
            self.seq_of.insert(d.id, d.seq);
            e.insert(d);
        }
    }

    /// Flags head `id` as marked in flight by the commit of another delivery's outcome: its
    /// attempt starts without another write (and its rate-limit slot is already taken).
    pub(super) fn mark(&mut self, id: DeliveryId) {
        if let Some(d) = self.get_mut(id) {
            d.marked = true;
            self.marked = Some(id);
        }
    }

    /// Head `id`'s attempt started: its mark is used up (a retry of it is marked again).
    pub(super) fn started(&mut self, id: DeliveryId) {
        if self.marked == Some(id) {
            self.marked = None;
        }
        if let Some(d) = self.get_mut(id) {
            d.marked = false;
        }
    }

    #[cfg(test)]
    pub(super) fn held(&self) -> &[HeldKey] {
        &self.held
    }

    /// The first head that may start now, else the earliest time one may, else whether a
    /// store read may help. `busy` tells the heads in flight; `now` is in ms.
    pub(super) fn pick(&self, now: i64, busy: impl Fn(DeliveryId) -> bool) -> Pick {
        if self.stale {
            return Pick::Nothing { read: true };
        }
        let mut earliest: Option<(DeliveryId, i64)> = None;
        // The first head that may start, while looking on for the marked one.
        let mut first: Option<DeliveryId> = None;
        // What the earlier heads were: their epochs (min, max) and whether one had no key.
        let mut epochs: Option<(u32, u32)> = None;
        let mut null_before = false;
        let mut known = 0;
        for (&seq, h) in &self.heads {
            if seq > self.horizon {
                break;
            }
            known += 1;
            let conflicts_earlier = null_before
                || epochs.is_some_and(|(lo, hi)| {
                    h.order_key.is_none() || lo != h.order_epoch || hi != h.order_epoch
                });
            let conflicts_held = self.held.iter().any(|x| {
                x.seq < seq
                    && (x.order_epoch != h.order_epoch
                        || h.order_key.as_deref().is_none_or(|k| k == &*x.order_key))
            });
            epochs = Some(epochs.map_or((h.order_epoch, h.order_epoch), |(lo, hi)| {
                (lo.min(h.order_epoch), hi.max(h.order_epoch))
            }));
            null_before |= h.order_key.is_none();
            if conflicts_earlier || conflicts_held || h.holds_key || busy(h.id) {
                continue;
            }
            let due = h.next_at.unwrap_or(0).max(self.hold_until.unwrap_or(0));
            if due > now {
                if earliest.is_none_or(|(_, at)| due < at) {
                    earliest = Some((h.id, due));
                }
                continue;
            }
            if self.marked.is_none_or(|m| m == h.id) {
                return Pick::Start(h.id);
            }
            first.get_or_insert(h.id);
        }
        if let Some(id) = first {
            return Pick::Start(id);
        }
        match earliest {
            Some((delivery, at)) => Pick::Wait { delivery, at },
            None => Pick::Nothing {
                read: self.more && known < self.cap,
            },
        }
    }

    /// Applies the committed outcome of head `id`: a retried delivery keeps its place with its
    /// new counters; a finished one leaves (and the actor reads what follows in its key); a
    /// failed one that holds its key moves to the held keys.
    pub(super) fn settle(
        &mut self,
        id: DeliveryId,
        status: DeliveryStatus,
        attempts: u32,
        budget_used: u32,
        next_at: Option<i64>,
        holds_key: bool,
    ) -> After {
        let Some(&seq) = self.seq_of.get(&id) else {
            // An attempt that started before the heads started over, whose delivery the new
            // reads have not reached yet. Its key, if it now holds it, must still hold back
            // everything after it (a NULL key or another epoch starts only once nothing
            // earlier is held): only the store knows that hold now, so read it again. Any
            // other outcome is found by the next read of heads.
            if holds_key {
                self.stale = true;
            }
            return After::Done;
        };
        if status == DeliveryStatus::Pending {
            if let Some(d) = self.heads.get_mut(&seq) {
                d.attempts = attempts;
                d.budget_used = budget_used;
                d.next_at = next_at;
            }
            return After::Done;
        }
        self.seq_of.remove(&id);
        let Some(d) = self.heads.remove(&seq) else {
            return After::Done;
        };
        let Some(key) = d.order_key else {
            return After::Done; // a NULL key has no group: the next one is a known head
        };
        if holds_key {
            self.held.push(HeldKey {
                delivery: d.id,
                seq,
                order_key: key,
                order_epoch: d.order_epoch,
            });
            self.held.sort_by_key(|h| h.seq);
            return After::Done;
        }
        After::NextOf {
            epoch: d.order_epoch,
            key: key.to_string(),
            seq,
        }
    }

    /// How many heads are known (in flight included).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.heads.len()
    }
}

#[cfg(test)]
mod tests;
