//! The actor layer: one supervised actor per subscription.
//!
//! ```text
//! Supervisor (one per engine)
//!  ├── SubscriberActor sub_A   — owns sub_A's queue cursor; at most one attempt in flight
//!  ├── SubscriberActor sub_B
//!  └── …                        spawned on first wake (publish, recovery, operator command)
//! ```
//!
//! - The **supervisor** keeps the registry of subscriber actors, forwards coalesced wakes, and
//!   restarts a failed actor with backoff; past `restart_limit` failures in `restart_window` it
//!   marks the subscription faulted in the store instead (visible in the API) and stops trying.
//! - With a **shared store** (guarantee 8) the supervisor does not spawn on a wake: the
//!   [`claimer`] claims due subscriptions from the store (woken by the store's wakes and a
//!   jittered poll) and hands their leases to the supervisor; an actor gives its subscription
//!   up when its head must wait or its queue is empty, and stops on a lost lease (see
//!   `subscriber::tenure`). An operator command on a subscription this node does not hold
//!   takes it over, fencing the holder.
//! - A **subscriber actor** is the only writer of its subscription's delivery states. It never
//!   awaits the network in a handler: the HTTP attempt runs in a tracked task whose result comes
//!   back as a message, so pause, resume, reconfiguration and shutdown are handled promptly.
//!   Strict order (guarantee 3) holds because the next attempt starts only after the previous
//!   delivery's terminal state was committed to the journal.
//!
//! Message types are private to the crate; the public door is [`EngineHandle`](crate::EngineHandle).

pub(crate) mod claimer;
pub(crate) mod subscriber;
pub(crate) mod supervisor;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::task::TaskTracker;

use crate::config::EngineConfig;
use crate::outbound::Sender;
use crate::policy::ratelimit::Limiters;
use crate::store::{NodeId, SharedStore, Tenure};

/// What every actor of an engine shares.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub store: SharedStore,
    pub sender: Sender,
    pub config: EngineConfig,
    /// Tracks attempt and timer tasks so shutdown can wait for them.
    pub tasks: TaskTracker,
    /// Per-tenant rate limits shared by the tenant's subscriptions.
    pub limiters: Limiters,
    /// Tenants' transforms, loaded once and shared by their subscriptions.
    pub transforms: Arc<crate::transform::TransformRegistry>,
    /// The engine's metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// This process in the cluster (the only node of an exclusive store).
    pub node: NodeId,
    /// How the store is shared, read once from it.
    pub tenure: Tenure,
    /// How long a claim or renewal holds a subscription (shared store).
    pub lease_ttl: Duration,
    /// Asks the claimer for a claim round now (a wake arrived for a subscription with no actor).
    pub claims: Arc<tokio::sync::Notify>,
}

pub(crate) type SharedCtx = Arc<Ctx>;
