//! Ownership of one subscription's queue: a lease with a fencing token.
//!
//! A subscription's deliveries change state only through the holder of its lease (its actor):
//! that is what lets the holder write absolute values without read-modify-write races, and what
//! keeps strict order. A store hands a lease out with [`Queue::acquire`](super::Queue::acquire);
//! each acquire of the same subscription gets a higher token and **fences** every earlier one:
//! a queue write carrying a token that is no longer the current one is refused with
//! [`Error::LeaseLost`](crate::error::Error::LeaseLost) and writes nothing. The check is made by
//! the store, inside the write's own commit, so it needs no timing assumption (a paused or
//! partitioned holder can never record an outcome after it lost the lease).
//!
//! In a shared store a lease also expires: [`Lease::deadline`] is the instant (this process's
//! monotonic clock) by which it surely expired on the store's clock, and
//! [`Lease::quiet_until`] the instant before which a holder fenced by a takeover may still be
//! sending (see [`coordination`](super::coordination)). An exclusive store's leases have
//! neither: they never expire.
//!
//! A shared store's lease also carries what the subscription's previous holder left of its own
//! rate limit ([`Lease::pace_ahead`]), so that a subscription moving between nodes keeps its
//! pace instead of starting from a full bucket on each node.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::domain::SubscriptionId;

/// A held lease on a subscription's queue. Cheap to clone (one reference count), so a write can
/// carry it through a channel without an allocation.
#[derive(Clone)]
pub(crate) struct Lease(Arc<Held>);

struct Held {
    subscription: SubscriptionId,
    token: u64,
    /// `None`: never expires (exclusive store).
    deadline: Option<Instant>,
    quiet_until: Option<Instant>,
    /// How far ahead of the lease's start the subscription's own rate limit had no cell left, as
    /// its previous holder released it (zero: a full bucket, or no limit).
    pace_ahead: Duration,
}

impl Lease {
    /// Made only by stores, as the answer to an acquire.
    pub(super) fn new(subscription: SubscriptionId, token: u64) -> Lease {
        Lease(Arc::new(Held {
            subscription,
            token,
            deadline: None,
            quiet_until: None,
            pace_ahead: Duration::ZERO,
        }))
    }

    /// A lease of a shared store: it expires at `deadline` (taken before the claim was sent,
    /// plus the TTL asked for); `quiet_until` is when the holder it fenced may have stopped
    /// sending (a takeover of a live lease).
    #[allow(dead_code, reason = "made by the shared (PostgreSQL) store")]
    pub(super) fn expiring(
        subscription: SubscriptionId,
        token: u64,
        deadline: Instant,
        quiet_until: Option<Instant>,
    ) -> Lease {
        Lease(Arc::new(Held {
            subscription,
            token,
            deadline: Some(deadline),
            quiet_until,
            pace_ahead: Duration::ZERO,
        }))
    }

    /// The same lease, carrying the pace its previous holder left (see [`Lease::pace_ahead`]).
    #[allow(dead_code, reason = "made by the shared (PostgreSQL) store")]
    pub(super) fn with_pace_ahead(&self, pace_ahead: Duration) -> Lease {
        Lease(Arc::new(Held {
            subscription: self.0.subscription.clone(),
            pace_ahead,
            ..*self.0
        }))
    }

    /// The same lease with a later deadline (after a renewal).
    #[allow(dead_code, reason = "made by the shared (PostgreSQL) store")]
    pub(super) fn renewed(&self, deadline: Instant) -> Lease {
        Lease(Arc::new(Held {
            subscription: self.0.subscription.clone(),
            token: self.0.token,
            deadline: Some(deadline),
            quiet_until: self.0.quiet_until,
            pace_ahead: self.0.pace_ahead,
        }))
    }

    /// Any lease, for the actors' unit tests of lease decisions.
    #[cfg(test)]
    pub(crate) fn for_test(
        subscription: SubscriptionId,
        token: u64,
        deadline: Option<Instant>,
        quiet_until: Option<Instant>,
    ) -> Lease {
        Lease(Arc::new(Held {
            subscription,
            token,
            deadline,
            quiet_until,
            pace_ahead: Duration::ZERO,
        }))
    }

    /// The subscription whose queue this lease owns.
    pub(crate) fn subscription(&self) -> &SubscriptionId {
        &self.0.subscription
    }

    /// The fencing token: strictly greater than every token handed out for this subscription
    /// before it.
    pub(crate) fn token(&self) -> u64 {
        self.0.token
    }

    /// When the lease surely expired on the store's clock; `None` for a lease that never does.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.0.deadline
    }

    /// How long the lease still surely holds at `now`; `None` for a lease that never expires.
    pub(crate) fn remaining(&self, now: Instant) -> Option<Duration> {
        self.0.deadline.map(|d| d.saturating_duration_since(now))
    }

    /// Before this instant the holder this lease fenced may still be sending: start no attempt.
    pub(crate) fn quiet_until(&self) -> Option<Instant> {
        self.0.quiet_until
    }

    /// How long after the lease was taken the subscription's own rate limit still had no cell,
    /// as its previous holder left it at its release (zero when it left a full bucket, had no
    /// limit, or was lost without releasing: a crash, a takeover).
    pub(crate) fn pace_ahead(&self) -> Duration {
        self.0.pace_ahead
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("subscription", &self.0.subscription)
            .field("token", &self.0.token)
            .field("deadline", &self.0.deadline)
            .finish()
    }
}
