//! The storage seam: what the engine, the actors and the transform registry ask of a store.
//!
//! Five traits by concern, one object ([`Store`]) implementing them all, held as
//! [`SharedStore`](super::SharedStore). Every method is a complete durable operation: when a
//! write returns `Ok`, it is committed (with the durability the store was opened with), and
//! when it returns an error it wrote nothing, unless its documentation says otherwise.
//!
//! # Invariants every implementation keeps
//! - **Durable accept**: [`Ingest::publish`] answers only after the events and all their
//!   deliveries are committed, in one commit (fan-out is atomic).
//! - **Order**: a delivery's `seq` orders its subscription's deliveries in the commit order of
//!   their events. `seq` values are compared only within one subscription: a store may number
//!   them globally (SQLite) or per subscription (a shared store), with gaps.
//! - **One writer per queue**: a subscription's delivery states change only through the holder
//!   of its [`Lease`]; a write with a stale lease is refused with [`Error::LeaseLost`] and
//!   writes nothing (see [`lease`](super::lease)).
//! - **Recovery**: attempts left in flight by a stop are logged as interrupted and their
//!   deliveries put back to pending, at open (all of them) and at [`Queue::acquire`] (those of
//!   the subscription's previous holder). They are retried without consuming retry budget.
//! - **Typed refusals**: a write refused for its input (an unknown tenant or subscription, a
//!   duplicate tenant, a transform still bound) answers `NotFound`, `Conflict` or `Invalid`
//!   without affecting any other caller's write.
//!
//! [`Error::LeaseLost`]: crate::error::Error::LeaseLost

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{
    AttemptRecord, Coordination, FlagChange, HeldKey, KeyFollow, KeyState, Lease, NewTransformRow,
    QueuedDelivery, Retention, StoredTransform, SubscriptionRow,
};
use crate::domain::{
    Attempt, AttemptRollup, Delivery, DeliveryId, DeliveryPage, DeliveryQuery, DeliveryStatus,
    Event, EventId, EventKey, EventTrace, MinuteRollup, Principal, PublishReceipt, SubscriptionId,
    SubscriptionSpec, Tenant, TenantId, TransformVersion,
};
use crate::error::Result;
use crate::metrics::QueueStat;
use crate::policy::ratelimit::RateLimit;

/// Tenants, API keys, subscriptions' configurations and transforms: what changes at an
/// operator's request and is read by everyone.
#[async_trait]
pub(crate) trait Catalog: Send + Sync {
    /// Creates a tenant with its first API key (stored as its hash). `Conflict` if it exists.
    async fn create_tenant(
        &self,
        id: TenantId,
        name: String,
        rate_limit: Option<RateLimit>,
        key_hash: String,
    ) -> Result<Tenant>;

    /// Sets (or with `None` removes) a tenant's own rate limit. `NotFound` for no such tenant.
    async fn set_tenant_rate_limit(
        &self,
        id: TenantId,
        rate_limit: Option<RateLimit>,
    ) -> Result<Tenant>;

    async fn get_tenant(&self, id: &TenantId) -> Result<Option<Tenant>>;

    /// Every tenant's own rate limit, to be applied to the limiters at start-up.
    async fn tenant_rate_limits(&self) -> Result<Vec<(TenantId, RateLimit)>>;

    /// Stores an admin key's hash (a hash already stored is kept).
    async fn insert_admin_key(&self, key_hash: String) -> Result<()>;

    async fn principal_for_key_hash(&self, hash: &str) -> Result<Option<Principal>>;

    async fn has_admin_key(&self) -> Result<bool>;

    /// Creates a subscription; events published after this commit are routed to it.
    /// `NotFound` for an unknown tenant, `Invalid` for a transform the tenant does not have.
    async fn create_subscription(
        &self,
        id: SubscriptionId,
        tenant: TenantId,
        spec: SubscriptionSpec,
    ) -> Result<SubscriptionRow>;

    /// Replaces a subscription's spec (its routing changes with the same commit).
    async fn update_spec(
        &self,
        id: SubscriptionId,
        spec: SubscriptionSpec,
    ) -> Result<SubscriptionRow>;

    /// Changes state flags without holding the queue's lease: for a subscription whose queue
    /// has no live holder (the supervisor marking it faulted after its actor kept failing).
    /// The holder's own changes go through [`Queue::set_queue_flags`].
    async fn set_flags(&self, id: SubscriptionId, flags: FlagChange) -> Result<SubscriptionRow>;

    /// Deletes a subscription with its deliveries and attempt log. A later write under its
    /// lease answers `LeaseLost` or `NotFound`.
    async fn delete_subscription(&self, id: SubscriptionId) -> Result<()>;

    async fn get_subscription(&self, id: &SubscriptionId) -> Result<Option<SubscriptionRow>>;

    /// All subscriptions (or a tenant's), by id.
    async fn list_subscriptions(&self, tenant: Option<&TenantId>) -> Result<Vec<SubscriptionRow>>;

    /// Stores a new version of `row.name` (versions 1, 2, 3, … per name), or finds the version
    /// with the same bytes. Returns the version and whether this call created it.
    async fn insert_transform(&self, row: NewTransformRow) -> Result<(TransformVersion, bool)>;

    /// Deletes every version of a transform; `Conflict` while a subscription is bound to it.
    async fn delete_transform(&self, tenant: TenantId, name: String) -> Result<()>;

    /// Replaces a version's precompiled artifact (after the running wasmtime refused the old one).
    async fn set_transform_artifact(
        &self,
        tenant: TenantId,
        name: String,
        version: u32,
        artifact: Arc<[u8]>,
    ) -> Result<()>;

    /// Every version of every transform of `tenant`, by name then version.
    async fn list_transform_versions(&self, tenant: &TenantId) -> Result<Vec<TransformVersion>>;

    /// The version of `name` whose module has this sha256, if it was uploaded before.
    async fn find_transform_by_hash(
        &self,
        tenant: &TenantId,
        name: &str,
        sha256: &str,
    ) -> Result<Option<TransformVersion>>;

    /// The hash and precompiled artifact of one version.
    async fn transform_artifact(
        &self,
        tenant: &TenantId,
        name: &str,
        version: u32,
    ) -> Result<Option<StoredTransform>>;

    /// The uploaded module of one version (to compile it again).
    async fn transform_module(
        &self,
        tenant: &TenantId,
        name: &str,
        version: u32,
    ) -> Result<Option<Vec<u8>>>;
}

/// Accepting events.
#[async_trait]
pub(crate) trait Ingest: Send + Sync {
    /// Stores events and their deliveries (one per matching subscription) in one commit; one
    /// result per event, in order. Publishing a (tenant, id) again returns the first receipt
    /// marked `duplicate` and creates nothing. The subscriptions that received deliveries are
    /// woken (see [`wake`](super::wake)) after the commit.
    ///
    /// Unlike other writes, which wait their turn, a publish finding the store's intake full
    /// waits at most `wait` and then refuses with `Overloaded`, having written nothing.
    async fn publish(
        &self,
        events: Vec<Event>,
        wait: Duration,
    ) -> Result<Vec<Result<PublishReceipt>>>;
}

/// A subscription's queue: its open deliveries in `seq` order, worked by the lease holder.
///
/// Every write here takes the holder's [`Lease`] and is refused with `LeaseLost` (writing
/// nothing) once another [`acquire`](Queue::acquire) fenced it.
#[async_trait]
pub(crate) trait Queue: Send + Sync {
    /// Takes ownership of `sub`'s queue with a new fencing token, fencing any earlier holder,
    /// and logs the attempts an earlier holder left in flight as interrupted (their deliveries
    /// go back to pending and are retried without consuming retry budget). An acquire that
    /// fails may still have fenced the earlier holder.
    async fn acquire(&self, sub: &SubscriptionId) -> Result<Lease>;

    /// The next open (pending or in flight) deliveries of `sub` with a `seq` above `after_seq`,
    /// in `seq` order. A read: it needs no lease.
    async fn next_deliveries(
        &self,
        sub: &SubscriptionId,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<QueuedDelivery>>;

    /// The key heads of `sub` with a `seq` above `after_seq`, in `seq` order, at most `limit`:
    /// the open deliveries with no earlier open or key-holding delivery of the same
    /// `(order_epoch, order_key)`. A NULL key has no group: every open NULL-keyed delivery is
    /// returned (each is a barrier the caller applies; see docs/ordering.md). Because the
    /// result is in `seq` order, it holds every head up to the last `seq` it returns. A read.
    async fn next_heads(
        &self,
        sub: &SubscriptionId,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<QueuedDelivery>>;

    /// The first open delivery of `sub` with this key and epoch and a `seq` above `after_seq`:
    /// the next one of a key whose head just ended. A read.
    async fn next_in_group(
        &self,
        sub: &SubscriptionId,
        order_epoch: u32,
        order_key: &str,
        after_seq: i64,
    ) -> Result<Option<QueuedDelivery>>;

    /// The deliveries of `sub` holding their key, in `seq` order. A read.
    async fn held_keys(&self, sub: &SubscriptionId) -> Result<Vec<HeldKey>>;

    /// The highest `seq` of `sub`'s deliveries (0 when it has none): every delivery committed
    /// so far has a `seq` up to it, so a later [`next_heads`](Queue::next_heads) read that
    /// returns fewer than it was asked for holds every head up to it. A read.
    async fn last_seq(&self, sub: &SubscriptionId) -> Result<i64>;

    /// Marks `delivery` in flight with attempt number `attempt` started `at`.
    ///
    /// May return before the commit (SQLite does): if the process stops before it commits, the
    /// attempt is not counted and the delivery is retried all the same. A refusal (a lost
    /// lease) is then reported by the holder's next write that waits.
    async fn mark_in_flight(
        &self,
        lease: &Lease,
        delivery: DeliveryId,
        attempt: u32,
        at: i64,
    ) -> Result<()>;

    /// Records an attempt and its delivery's new state in one commit, with the record's flag
    /// changes and its `next_in_flight` mark. A delivery deleted meanwhile (with its
    /// subscription) records nothing: `Ok` for a plain outcome, `NotFound` when it carried flags.
    async fn record_attempt(&self, lease: &Lease, record: AttemptRecord) -> Result<()>;

    /// [`record_attempt`](Queue::record_attempt), then, if it committed and `follow` is given,
    /// the [`next_in_group`](Queue::next_in_group) of that key as read right after the commit:
    /// the record's result, and the read's (`None`: not made). A store that can make the read
    /// in the record's own step overrides this (SQLite: on the writer's connection, whose page
    /// cache the commit left warm, where a reader's starts cold after every commit).
    async fn record_attempt_following(
        &self,
        lease: &Lease,
        record: AttemptRecord,
        follow: Option<KeyFollow>,
    ) -> (Result<()>, Option<Result<Option<QueuedDelivery>>>) {
        record_then_read_next(self, lease, record, follow).await
    }

    /// The holder's own change of its subscription's state flags (pause, resume).
    async fn set_queue_flags(&self, lease: &Lease, flags: FlagChange) -> Result<SubscriptionRow>;

    /// Sets a delivery's status outside an attempt (operator skip or resubmit), optionally with
    /// a fresh retry budget; with `unblock`, a subscription blocked on this delivery is no
    /// longer blocked. `NotFound` for no such delivery.
    async fn set_delivery_status(
        &self,
        lease: &Lease,
        delivery: DeliveryId,
        status: DeliveryStatus,
        reset_budget: bool,
        unblock: bool,
    ) -> Result<()>;

    /// Puts the subscription's terminal deliveries of events accepted in
    /// `[since_ms, until_ms)` back to pending (same rows, fresh budget) and unblocks it if it
    /// was blocked on one of them. Returns how many.
    async fn replay(&self, lease: &Lease, since_ms: i64, until_ms: i64) -> Result<u64>;
}

/// Reads for the API and the metrics.
#[async_trait]
pub(crate) trait Reads: Send + Sync {
    async fn get_delivery(&self, id: DeliveryId) -> Result<Option<Delivery>>;

    /// A delivery's attempt log, by attempt number.
    async fn attempts(&self, id: DeliveryId) -> Result<Vec<Attempt>>;

    /// A page of a subscription's deliveries in `seq` order (see
    /// [`DeliveryPageBounds`](super::DeliveryPageBounds) for the query's checks).
    async fn list_deliveries(
        &self,
        sub: &SubscriptionId,
        q: &DeliveryQuery,
    ) -> Result<DeliveryPage>;

    /// With ordering keys: `sub`'s held keys and how many of its deliveries are in flight
    /// (both from small partial indexes).
    async fn key_state(&self, sub: &SubscriptionId) -> Result<KeyState>;

    /// How many keys each subscription has held by a failed delivery (`onFailure: block`
    /// with ordering keys), by subscription id; subscriptions holding none are absent. One
    /// grouped read of the small `deliveries_holding` index, for the dashboard's lists.
    async fn held_key_counts(&self) -> Result<Vec<(String, u64)>>;

    /// Every subscription's open queue: depth and age of the oldest open delivery's event.
    async fn queue_stats(&self) -> Result<Vec<QueueStat>>;

    /// A journaled event's body (the exact envelope receivers get), while it is kept.
    async fn event_body(&self, tenant: &TenantId, id: &EventId) -> Result<Option<String>>;

    /// A tenant's events with this `transactionId`, `referenceId` or id, newest first, at most
    /// `limit`, each with all its deliveries. Indexed: never a scan of the tenant's events.
    async fn events_by_key(
        &self,
        tenant: &TenantId,
        key: &EventKey,
        limit: u32,
    ) -> Result<Vec<EventTrace>>;

    /// The newest operational notifications (events of the system tenant, see `notify`), at
    /// most `limit`, each with its deliveries to the receivers; only those about `about`'s
    /// subscriptions (their `workflowId`) when given. Indexed by partial indexes on the system
    /// tenant's events only, so ordinary events pay nothing for them and the read costs `limit`
    /// rows whatever the journal's size.
    async fn recent_notifications(
        &self,
        about: Option<&TenantId>,
        limit: u32,
    ) -> Result<Vec<EventTrace>>;

    /// The attempts started at or after `since_ms` (of one tenant's subscriptions, or all),
    /// grouped by minute and subscription, with their durations split at `recent_since_ms`:
    /// two grouped scans of the window (see [`AttemptRollup`]).
    async fn attempt_rollup(
        &self,
        tenant: Option<&TenantId>,
        since_ms: i64,
        recent_since_ms: i64,
    ) -> Result<AttemptRollup>;

    /// The attempts of each of `subs` started at or after `since_ms`, grouped by hour
    /// (`minute_ms` is the hour's start): the dashboard's sparklines. The default derives them
    /// from [`attempt_rollup`](Self::attempt_rollup) over every subscription; a store with a
    /// per-subscription rollup answers from it, reading only these subscriptions' rows.
    async fn attempt_hours(
        &self,
        subs: &[SubscriptionId],
        since_ms: i64,
    ) -> Result<Vec<MinuteRollup>> {
        let rollup = self.attempt_rollup(None, since_ms, since_ms).await?;
        let wanted: std::collections::HashSet<&SubscriptionId> = subs.iter().collect();
        let mut hours = std::collections::BTreeMap::<(SubscriptionId, i64), MinuteRollup>::new();
        for m in rollup.by_minute {
            if !wanted.contains(&m.subscription) {
                continue;
            }
            let hour = m.minute_ms - m.minute_ms.rem_euclid(3_600_000);
            let slot = hours
                .entry((m.subscription.clone(), hour))
                .or_insert_with(|| MinuteRollup {
                    minute_ms: hour,
                    subscription: m.subscription.clone(),
                    succeeded: 0,
                    failed: 0,
                    attempts: 0,
                });
            slot.succeeded += m.succeeded;
            slot.failed += m.failed;
            slot.attempts += m.attempts;
        }
        Ok(hours.into_values().collect())
    }
}

/// Housekeeping.
#[async_trait]
pub(crate) trait Upkeep: Send + Sync {
    /// Prunes one batch (at most `r.batch_size`) of events whose deliveries have all been
    /// terminal for the retention's ages, with their deliveries and attempts; returns how many
    /// events. Never prunes an event with an open delivery, or with a failed delivery its
    /// subscription is blocked on.
    async fn prune(&self, r: &Retention) -> Result<u64>;

    /// Commits every write already handed in and stops; later calls fail with `ShuttingDown`.
    async fn close(&self);
}

/// A complete store.
pub(crate) trait Store:
    Catalog + Ingest + Queue + Reads + Upkeep + Coordination + std::fmt::Debug
{
}

impl<T: Catalog + Ingest + Queue + Reads + Upkeep + Coordination + std::fmt::Debug> Store for T {}

/// [`Queue::record_attempt_following`] in two store calls: the record, then, if it committed
/// and `follow` is given, the [`next_in_group`](Queue::next_in_group) read. The trait's default,
/// and what a store that overrides it does for the records it cannot make in one step.
pub(crate) async fn record_then_read_next<Q: Queue + ?Sized>(
    q: &Q,
    lease: &Lease,
    record: AttemptRecord,
    follow: Option<KeyFollow>,
) -> (Result<()>, Option<Result<Option<QueuedDelivery>>>) {
    let result = q.record_attempt(lease, record).await;
    let next = match (&result, follow) {
        (Ok(()), Some(f)) => Some(
            q.next_in_group(
                lease.subscription(),
                f.order_epoch,
                &f.order_key,
                f.after_seq,
            )
            .await,
        ),
        _ => None,
    };
    (result, next)
}
