//! The writer's lease table: the current fencing token of every subscription's queue.
//!
//! One process owns the SQLite file, so leases live in the writer's memory and are checked
//! inside the writer, in the same serial order as the commits: a write checked here is exact,
//! with no timing assumption. Tokens come from one counter, so each is strictly greater than
//! every token handed out before it (for any subscription). The check is one hash lookup.
//! A token bumped by a batch that is then rolled back stays bumped: fencing an earlier holder
//! is always safe, and the caller of that acquire is answered with an error and acquires again.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::domain::SubscriptionId;
use crate::error::{Error, Result};
use crate::store::Lease;

#[derive(Default)]
pub(super) struct Leases {
    current: HashMap<SubscriptionId, u64>,
    issued: u64,
    /// How many subscriptions have a lease, for `Coordination::nodes` (read outside the writer).
    held: Arc<AtomicU64>,
}

impl Leases {
    /// An empty table that reports its size through `held`.
    pub(super) fn counted(held: Arc<AtomicU64>) -> Leases {
        Leases {
            held,
            ..Leases::default()
        }
    }

    /// A new lease on `sub`, fencing the previous one.
    pub(super) fn grant(&mut self, sub: &SubscriptionId) -> Lease {
        self.issued += 1;
        self.current.insert(sub.clone(), self.issued);
        self.held
            .store(self.current.len() as u64, Ordering::Relaxed);
        Lease::new(sub.clone(), self.issued)
    }

    /// `Ok` if `lease` is its subscription's current one.
    pub(super) fn check(&self, lease: &Lease) -> Result<()> {
        if self.current.get(lease.subscription()) == Some(&lease.token()) {
            Ok(())
        } else {
            Err(Error::LeaseLost {
                subscription: lease.subscription().to_string(),
            })
        }
    }

    /// Forgets a deleted subscription (its holder's later writes are refused).
    pub(super) fn forget(&mut self, sub: &SubscriptionId) {
        self.current.remove(sub);
        self.held
            .store(self.current.len() as u64, Ordering::Relaxed);
    }
}
