//! Which node works which subscription: node membership, claiming due subscriptions, and the
//! life of a lease (renew, release, take over) when several processes share one store.
//!
//! # Why this shape
//! - **One store, two tenures.** A store says how it is shared ([`Tenure`]). The SQLite journal
//!   is [`Tenure::Exclusive`]: one process owns the file, so every subscription is this node's,
//!   its leases never expire, and a wake spawns the subscription's actor, which keeps its lease
//!   for its whole life (today's delivery path, unchanged and without one more store call). A
//!   shared store (PostgreSQL) is [`Tenure::Shared`]: nodes **claim** due subscriptions, leases
//!   expire on the store's clock unless renewed, and a holder **releases** a subscription as soon
//!   as its head must wait, so no node sits on a subscription for a retry that is hours away.
//! - **Claims are batched and skip what is taken** ([`Coordination::claim_due`]): a node asks
//!   for up to `limit` subscriptions that have due work and no live holder, in one round trip;
//!   two nodes racing for the same rows each get a disjoint part (PostgreSQL: `FOR UPDATE SKIP
//!   LOCKED`). A claim is an acquire: it fences every earlier holder and interrupts the attempt
//!   that holder left in flight, exactly as [`Queue::acquire`](super::Queue::acquire) does.
//! - **The local deadline.** A lease carries the instant, on this process's monotonic clock, by
//!   which it surely expired on the store's clock ([`Lease::deadline`]): the store takes the
//!   instant *before* sending the claim or renewal and adds the TTL it asked for, so the local
//!   deadline is never later than the real one (only clock *rate* drift matters). The holder
//!   starts an attempt only if the lease outlives the attempt's whole budget plus a margin, and
//!   renews first otherwise ([`Coordination::renew`]); that is what makes a lost lease stop
//!   sending before anyone else may start.
//! - **Taking over** ([`Coordination::take_over`]): an operator action (pause, skip, resubmit,
//!   replay, update) arriving on a node that does not hold the subscription takes the lease by
//!   force, bumping the fencing token, so the holder's next write is refused and it stops. The
//!   new lease says until when the fenced holder may still be sending ([`Lease::quiet_until`]:
//!   its lease's expiry, measured on this side); no attempt starts before then, so even a forced
//!   takeover never puts two requests in flight for one subscription (short of a frozen process:
//!   see the residual window in docs/cluster.md).
//! - **Durations cross the seam, not wall-clock times**: a TTL, a `due_in`. Only the store's
//!   clock decides expiry and due times, so nodes' clocks may disagree.
//! - **Membership** ([`Coordination::register`], [`heartbeat`](Coordination::heartbeat),
//!   [`nodes`](Coordination::nodes), [`release_all`](Coordination::release_all)) is for
//!   operators (`GET /v1/cluster`) and for a clean hand-over at shutdown. Correctness never
//!   depends on heartbeats: a dead node's subscriptions come back when their leases expire.
//!
//! - **A tenant's rate limit** holds across the nodes through
//!   [`Coordination::reserve_tenant_slots`]: the store keeps one schedule per tenant and grants
//!   each slot to one node (see `policy::cluster_pace`). An exclusive store keeps tenants'
//!   limits in the engine's memory and is never asked.
//!
//! Every write here is fenced like the queue's: a renew or release with a stale token answers
//! [`Error::LeaseLost`](crate::error::Error::LeaseLost) and writes nothing.

use std::time::Duration;

use async_trait::async_trait;

use super::Lease;
use crate::domain::{SubscriptionId, TenantId};
use crate::error::Result;
use crate::policy::cluster_pace::SlotGrant;
use crate::policy::ratelimit::RateLimit;

/// How a store is shared between processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tenure {
    /// One process owns the store: every subscription is this node's, leases never expire and
    /// are kept for an actor's whole life; [`Coordination::claim_due`] finds nothing and
    /// [`Coordination::release`] keeps the lease (a wake is what starts a subscription's actor).
    Exclusive,
    /// Several nodes share the store: subscriptions are claimed when due, leases expire unless
    /// renewed, and a subscription whose head must wait is released with its due time.
    Shared,
}

/// A node's identity in a cluster: `HOOKLINE_NODE_ID`, by default the host name and process id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct NodeId(String);

impl NodeId {
    pub(crate) fn new(id: impl Into<String>) -> NodeId {
        NodeId(id.into())
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One node as the store knows it (for `GET /v1/cluster`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NodeRow {
    pub id: NodeId,
    /// The hookline version the node runs.
    pub version: String,
    /// When it registered, milliseconds since the epoch (store clock).
    pub started_at_ms: i64,
    /// Its last heartbeat, milliseconds since the epoch (store clock).
    pub heartbeat_at_ms: i64,
    /// How long ago that was, measured by the store, so nodes' clocks may disagree.
    pub heartbeat_age_ms: u64,
    /// Subscriptions whose lease it holds now (unexpired).
    pub leases: u64,
}

/// Node membership and the life of leases (see the module docs).
#[async_trait]
pub(crate) trait Coordination: Send + Sync {
    /// How this store is shared; fixed for the store's life.
    fn tenure(&self) -> Tenure;

    /// Records `node` (running `version`) as a member, with a first heartbeat. A node that
    /// registers again (a restart with the same id) replaces its row; the leases it held stay
    /// fenced by their tokens.
    async fn register(&self, node: &NodeId, version: &str) -> Result<()>;

    /// Refreshes `node`'s heartbeat. Only for operators: no lease depends on it.
    async fn heartbeat(&self, node: &NodeId) -> Result<()>;

    /// Claims for `node` up to `limit` subscriptions that are runnable (active, not paused,
    /// blocked, disabled or faulted), have an open delivery, are due (their release's `due_in`
    /// elapsed) and have no live lease, oldest due first, each with a fresh token and a lease
    /// of `ttl`. Like an acquire, a claim fences every earlier holder and logs the attempt it
    /// left in flight as interrupted (its delivery goes back to pending, budget untouched), in
    /// the claim's commit. Concurrent claims from several nodes never return the same
    /// subscription twice while a lease is live. An exclusive store returns nothing.
    async fn claim_due(&self, node: &NodeId, limit: u32, ttl: Duration) -> Result<Vec<Lease>>;

    /// Takes `sub` for `node` whether or not another node holds it (an operator action): a new
    /// token fences the holder; its in-flight attempt is logged interrupted as by an acquire.
    /// The lease's [`quiet_until`](Lease::quiet_until) is when the fenced lease would have
    /// expired (none if it had, or if `node` held it: node ids are unique among live processes
    /// and a node takes its own lease over only from a dead actor). `NotFound` for no such
    /// subscription.
    async fn take_over(&self, node: &NodeId, sub: &SubscriptionId, ttl: Duration) -> Result<Lease>;

    /// Extends a held lease to `ttl` from now (store clock); the answer carries the new local
    /// deadline. `LeaseLost` if the lease was fenced or expired and claimed since; a lease that
    /// expired but nobody claimed is renewed. An exclusive store answers the same lease.
    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease>;

    /// Gives a held lease up; the subscription is due again `due_in` from now (store clock), or
    /// at once with `Duration::ZERO`. `pace_ahead` is how long the subscription's own rate
    /// limit has no cell from now: the next lease of the subscription, on any node, carries it
    /// ([`Lease::pace_ahead`], less the time that passed), so the limit holds across nodes. If the queue has due work at the release's commit (a
    /// delivery committed after the holder last read it), the store wakes the nodes as after a
    /// publish, so no wake is lost between the holder's last read and its release. `LeaseLost`
    /// if it was fenced (nothing written). An exclusive store keeps the lease (no-op).
    async fn release(&self, lease: &Lease, due_in: Duration, pace_ahead: Duration) -> Result<()>;

    /// Like [`release`](Coordination::release), for a holder that read its queue up to `seq`
    /// `seen` (ordering keys: the work it leaves may not be the only work): if a delivery above
    /// `seen` is committed (a publish committing meanwhile is waited for), the subscription is
    /// due at once and the nodes are woken, else after `due_in`. So a publish that raced the
    /// release is never left waiting for `due_in`.
    async fn release_after(
        &self,
        lease: &Lease,
        due_in: Duration,
        pace_ahead: Duration,
        seen: i64,
    ) -> Result<()>;

    /// Releases every lease `node` holds, due at once (a clean shutdown hands its work over
    /// without waiting for expiry), and removes `node` from [`nodes`](Coordination::nodes).
    /// Returns how many leases it released.
    async fn release_all(&self, node: &NodeId) -> Result<u64>;

    /// The registered nodes, by id, with their heartbeats and the leases they hold.
    async fn nodes(&self) -> Result<Vec<NodeRow>>;

    /// Reserves for this node up to `want` slots of `tenant`'s rate limit `limit` from the one
    /// schedule the store keeps for the tenant, none further than `horizon` ahead; each slot is
    /// granted to one caller only, cluster-wide (see `policy::cluster_pace`). A `limit` other
    /// than the one the schedule was kept for starts a fresh (full) schedule. Not a promise:
    /// a reservation lost in a crash of the store may grant its slots again. An exclusive
    /// store grants everything at once (it is never asked: its engine keeps tenants' limits in
    /// memory).
    async fn reserve_tenant_slots(
        &self,
        tenant: &TenantId,
        limit: &RateLimit,
        want: u32,
        horizon: Duration,
    ) -> Result<SlotGrant>;
}
