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

use std::sync::Arc;

use crate::domain::SubscriptionId;

/// A held lease on a subscription's queue. Cheap to clone (one reference count), so a write can
/// carry it through a channel without an allocation.
#[derive(Clone)]
pub(crate) struct Lease(Arc<Held>);

struct Held {
    subscription: SubscriptionId,
    token: u64,
}

impl Lease {
    /// Made only by stores, as the answer to an acquire.
    pub(super) fn new(subscription: SubscriptionId, token: u64) -> Lease {
        Lease(Arc::new(Held {
            subscription,
            token,
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
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("subscription", &self.0.subscription)
            .field("token", &self.0.token)
            .finish()
    }
}
