//! Durable state behind every promise hookline makes: the storage seam and its implementations.
//!
//! The engine, the actors and the transform registry do everything durable through the traits
//! of [`traits`] ([`Catalog`], [`Ingest`], [`Queue`], [`Reads`], [`Upkeep`]) and
//! [`coordination`] ([`Coordination`]: which node works which subscription), on one
//! [`SharedStore`]. The traits' documentation lists the invariants every implementation keeps;
//! [`lease`] says how a subscription's queue is owned and fenced, and [`wake`] how a store
//! tells the engine which subscriptions have new deliveries.
//!
//! Implementations: [`sqlite`], the single-node journal (one SQLite file), and [`postgres`],
//! the store several nodes share. Nothing outside an implementation's folder names its driver
//! or its concrete type, except the engine's builder that opens it.

use std::sync::Arc;
use std::time::Duration;

#[allow(
    dead_code,
    reason = "the seam is committed first; the actors use it next"
)]
pub(crate) mod coordination;
#[allow(
    dead_code,
    reason = "the seam is committed first; the actors use it next"
)]
pub(crate) mod lease;
pub(crate) mod postgres;
pub(crate) mod sqlite;
#[cfg(test)]
mod suite;
pub(crate) mod traits;
mod types;
pub(crate) mod wake;

pub(crate) use crate::domain::SubscriptionRow;
pub(crate) use coordination::{Coordination, NodeId, NodeRow, Tenure};
pub(crate) use lease::Lease;
pub(crate) use traits::{Catalog, Ingest, Queue, Reads, Store, Upkeep};
pub(crate) use types::*;
pub(crate) use wake::{WakeReceiver, WakeSender, wake_channel};

/// The store every part of an engine shares.
pub(crate) type SharedStore = Arc<dyn Store>;

/// An opened store, with what its opening found and where its wakes arrive.
#[derive(Debug)]
pub(crate) struct Opened {
    pub store: SharedStore,
    /// What crash recovery did; its open subscriptions are to be woken.
    pub recovery: Recovery,
    /// Subscriptions with new deliveries, after each commit that created some.
    pub wakes: WakeReceiver,
    /// A shared store only: changes when another node (or this one) may have changed a
    /// tenant's rate limit, so the engine reads the limits again
    /// ([`Catalog::tenant_rate_limits`]). The value means nothing; a change is the news.
    pub tenant_limits: Option<tokio::sync::watch::Receiver<u64>>,
}

/// How hard the journal pushes commits to stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=FULL`: a commit survives power loss and kernel crashes (the default).
    #[default]
    Fsync,
    /// `synchronous=NORMAL`: a commit survives a process crash (`kill -9`) but the last commits
    /// before a power loss may be lost.
    Os,
}

/// What opening a store needs besides its location.
#[derive(Debug, Clone)]
pub(crate) struct StoreOptions {
    pub durability: Durability,
    /// Reader connections.
    pub reader_connections: u32,
    /// Write operations that may wait for the writer.
    pub intake_queue: usize,
    /// Most write operations grouped into one commit.
    pub commit_batch_max: usize,
}

/// Background pruning of finished events (see [`Upkeep::prune`]).
///
/// An event is pruned, with its deliveries and attempt log, once every one of its deliveries
/// has been terminal for the configured age. An event with a delivery still pending or in
/// flight, or a failed delivery its subscription is blocked on, is never pruned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    /// Whether the pruner runs at all. Default true.
    pub enabled: bool,
    /// Age (since its last delivery ended) after which an event whose deliveries were all
    /// delivered, skipped or dropped is pruned. Default 7 days.
    pub delivered_after: Duration,
    /// Age after which an event with a failed delivery (one no subscription is blocked on) is
    /// pruned. Default 30 days.
    pub failed_after: Duration,
    /// Pause between prune passes. Default 60 s.
    pub interval: Duration,
    /// Events pruned per write transaction; small so delivery commits never wait long.
    /// Default 500.
    pub batch_size: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            enabled: true,
            delivered_after: Duration::from_secs(7 * 24 * 3600),
            failed_after: Duration::from_secs(30 * 24 * 3600),
            interval: Duration::from_secs(60),
            batch_size: 500,
        }
    }
}
