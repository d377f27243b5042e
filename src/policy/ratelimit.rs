//! Rate limits: pace a subscription's deliveries, and a tenant's subscriptions together, without
//! reordering or dropping anything.
//!
//! A subscription may carry a [`RateLimit`] (`rateLimit: {perSecond, burst}`), and every tenant
//! may have one too (the engine's configured default, which [`Limiters::set_tenant_limit`]
//! overrides per tenant). Before starting an attempt, the subscriber actor asks its
//! [`SubscriptionPacer`] for the next slot: `Ok(())` means "go now" (a cell was taken from the
//! subscription's bucket and from the tenant's), `Err(wait)` means "ask again after `wait`". The
//! limiter never decides *what* goes next: the actor keeps the head of its queue and waits, so
//! pacing only ever delays a delivery.
//!
//! Invariants kept here:
//! - each bucket is a GCRA from `governor` (`burst` cells at once, then one every
//!   `1 / perSecond` seconds) that takes one cell per slot granted, so a subscription's slots
//!   follow its limit and the slots of all subscriptions of a tenant together follow the
//!   tenant's. A cell is dated at most a small lateness credit before its slot is granted (see
//!   below), never earlier than the caller was told to come: slots never run ahead of a punctual
//!   caller's, and the long-run rate never exceeds either limit;
//! - a refusal by a subscription's bucket takes nothing from its tenant's bucket;
//! - nothing is dropped or reordered: a refusal carries the wait, never a verdict on a delivery.
//!
//! ## Consumption order
//! `governor` has no non-consuming test: `check()` either takes a cell or refuses. A slot needs a
//! cell from two buckets, so [`SubscriptionPacer::next_slot`] decides in this order, all under the
//! [`Limiters`] mutex (no other subscription of the engine interleaves; the subscription's own
//! bucket belongs to one actor, hence `&mut self`):
//! 1. the tenant's *known* refusal: the earliest time of the tenant bucket's last refusal is kept,
//!    and while it is in the future the answer is "wait" without touching either bucket (GCRA's
//!    earliest time only moves forward while a bucket lives, so this is a sound, non-consuming
//!    test of the tenant);
//! 2. the subscription's bucket: a refusal returns its wait, the tenant bucket untouched;
//! 3. the tenant's bucket: a grant means go; a refusal returns the tenant's wait and the
//!    subscription cell taken in step 2 stays spent.
//!
//! That last case charges the subscription for a slot it did not use. It can only slow the
//! subscription down, never speed it up: the slots it actually uses are a subset of those its
//! bucket granted, and a subset of a conforming sequence conforms. The alternatives are worse:
//! tenant first would waste cells of the bucket *shared* by all the tenant's subscriptions (one
//! subscription's own limit would slow its siblings), and keeping the spent cell to use later
//! would let two deliveries go closer together than the limit allows (granted at 0 s, sent at
//! 0.9 s after the tenant's wait, next granted at 1 s on a 1/s limit). The cost is bounded: it
//! happens only when another subscription took the tenant's cells since the tenant's last refusal
//! (step 1 catches the rest), and then costs at most one interval of the subscription's own limit.
//!
//! ## Lateness credit
//! A caller told "wait 20 ms" comes back later than that: tokio's timers round up to the
//! millisecond and a busy runtime adds more. With `burst: 1` a GCRA forgets that lateness, so a
//! 50/s limit measured 46/s idle and under 40/s on a loaded machine. The pacer therefore
//! remembers when it was told to come back (`due`) and, when it comes back late, asks each bucket
//! first *as of* an earlier instant: `due`, or now less a credit (half an interval, at most
//! [`MAX_LATENESS_CREDIT`]) if it is later than that; then as of now. The bucket records the slot
//! no earlier than a punctual caller would have taken it, which is why slot *n* is never early;
//! the price is that a slot may follow a *late* one by less than an interval (never by less than
//! half of one). The waits returned are not shortened, and a caller that asks without having
//! been told to wait sees the plain GCRA.
//!
//! ## Several nodes
//! With a shared store ([`Limiters::across_cluster`]) a tenant's limit is kept by the store, not
//! here: a subscription asks [`SubscriptionPacer::pace`], which hands it a slot this node
//! reserved from the tenant's schedule in the store ([`cluster_pace`](super::cluster_pace)),
//! or tells it to reserve ([`Pace::Reserve`]) or to wait. The subscription's own bucket stays
//! here (one node sends for a subscription at a time), checked when its tenant slot has come;
//! if it refuses, the slot goes back to the node's pool for another subscription of the tenant.
//!
//! ## Clock
//! Buckets read time through [`CallerClock`], `governor`'s `Clock` over `std::time::Instant`
//! (the clock tokio's timers run on, so a wait computed here is the wait tokio sleeps) that lets
//! a check be dated as of `due`. It is real time: `tokio::time::pause` does not pause it, so
//! tests with a paused clock should leave rate limits unset.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use serde::{Deserialize, Serialize};

use super::cluster_pace::{NoSlot, SlotGrant, TenantSlots};
use crate::error::{Error, Result};

/// Upper bound of the lateness forgiven to a caller (see the module docs): a loaded runtime's
/// timer lateness, not an actor that went off to do something else.
const MAX_LATENESS_CREDIT: Duration = Duration::from_millis(20);

/// A rate limit: at most `burst` deliveries at once, then `perSecond` on average.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained rate, in deliveries per second; fractions allowed (`0.5` is one every 2 s).
    /// From one a day to 100,000.
    pub per_second: f64,
    /// How many deliveries may go back to back after a quiet period (1 to 10,000).
    pub burst: u32,
}

impl RateLimit {
    /// Lower bound of `perSecond`: one a day, the longest retry backoff. Slower is not a rate
    /// limit but an outage, and it keeps every interval far inside `governor`'s nanosecond range.
    pub(crate) const MIN_PER_SECOND: f64 = 1.0 / 86_400.0;
    /// Upper bound of `perSecond`.
    pub(crate) const MAX_PER_SECOND: f64 = 100_000.0;
    /// Upper bound of `burst`.
    pub(crate) const MAX_BURST: u32 = 10_000;

    pub(crate) fn validate(&self) -> Result<()> {
        // Written so that NaN fails too: every comparison with NaN is false.
        if !(self.per_second > 0.0 && self.per_second <= Self::MAX_PER_SECOND) {
            return Err(Error::invalid(
                "rateLimit.perSecond",
                format!(
                    "must be greater than 0 and at most {}",
                    Self::MAX_PER_SECOND
                ),
            ));
        }
        if self.per_second < Self::MIN_PER_SECOND {
            return Err(Error::invalid(
                "rateLimit.perSecond",
                "must be at least one a day (0.0000116)",
            ));
        }
        if !(1..=Self::MAX_BURST).contains(&self.burst) {
            return Err(Error::invalid(
                "rateLimit.burst",
                format!("must be between 1 and {}", Self::MAX_BURST),
            ));
        }
        Ok(())
    }

    /// The interval between two cells once the burst is spent.
    pub(crate) fn interval(&self) -> Duration {
        // Clamped rather than trusted: a limit that skipped `validate` (a bug, an old journal row)
        // must still pace, not panic in `from_secs_f64`. NaN takes the slowest rate, the one
        // that cannot exceed whatever was meant.
        let per_second = if self.per_second.is_nan() {
            Self::MIN_PER_SECOND
        } else {
            self.per_second
                .clamp(Self::MIN_PER_SECOND, Self::MAX_PER_SECOND)
        };
        Duration::from_secs_f64(1.0 / per_second)
    }

    /// The `governor` quota: one cell per [`interval`](Self::interval), `burst` at once.
    fn quota(&self) -> Quota {
        let burst =
            NonZeroU32::new(self.burst.clamp(1, Self::MAX_BURST)).unwrap_or(NonZeroU32::MIN);
        // `with_period` refuses only a zero interval, and `interval` is at least 10 µs.
        Quota::with_period(self.interval())
            .unwrap_or(Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst)
    }
}

/// `governor`'s clock for our buckets: real time, unless a check is being dated as of an earlier
/// instant (the lateness credit). Only [`Bucket::check_at`] sets it, and only for one check.
#[derive(Debug, Default)]
struct CallerClock {
    // A mutex rather than a Cell so the pacer is Sync (actor state is borrowed across awaits);
    // it is uncontended: one bucket is checked by one caller at a time.
    at: std::sync::Mutex<Option<Instant>>,
}

impl Clock for CallerClock {
    type Instant = Instant;

    fn now(&self) -> Instant {
        self.at
            .lock()
            .ok()
            .and_then(|g| *g)
            .unwrap_or_else(Instant::now)
    }
}

type DirectLimiter = RateLimiter<NotKeyed, InMemoryState, CallerClock, NoOpMiddleware<Instant>>;

/// One token bucket for one limit.
#[derive(Debug)]
struct Bucket {
    limit: RateLimit,
    limiter: DirectLimiter,
}

impl Bucket {
    fn new(limit: RateLimit) -> Self {
        let limiter = RateLimiter::direct_with_clock(limit.quota(), CallerClock::default());
        Bucket { limit, limiter }
    }

    /// Takes one cell as of `at`, or returns the earliest instant one is available.
    fn check_at(&self, at: Instant) -> Result<(), Instant> {
        let clock = self.limiter.clock();
        let set = |v: Option<Instant>| {
            if let Ok(mut g) = clock.at.lock() {
                *g = v;
            }
        };
        set(Some(at));
        let outcome = self
            .limiter
            .check()
            .map_err(|not_until| not_until.earliest_possible());
        set(None);
        outcome
    }

    /// Takes one cell for a caller asking at `now` that was told to come back at `due`: as of
    /// `now` less its lateness credit (but not before `due`) if it is late, otherwise (or if that
    /// is refused) as of `now`. A refusal takes nothing, so trying twice is safe.
    fn take(&self, due: Option<Instant>, now: Instant) -> Result<(), Instant> {
        if let Some(due) = due
            && due < now
        {
            // Forgive lateness up to the credit; beyond it, only the excess is lost.
            let at = now
                .checked_sub(self.lateness_credit())
                .map_or(due, |earliest| earliest.max(due));
            if self.check_at(at).is_ok() {
                return Ok(());
            }
        }
        self.check_at(now)
    }

    /// Half an interval, so that a slot never follows a late one by less than half an interval,
    /// and at most [`MAX_LATENESS_CREDIT`].
    fn lateness_credit(&self) -> Duration {
        (self.limit.interval() / 2).min(MAX_LATENESS_CREDIT)
    }

    #[cfg_attr(not(test), allow(dead_code))] // per-tenant overrides and pruning: no API yet
    /// How long after its last grant the bucket is full again: `burst` intervals (the theoretical
    /// arrival time is at most `burst` intervals past the last grant).
    fn refill_time(&self) -> Duration {
        self.limit.quota().burst_size_replenished_in()
    }
}

/// A tenant's bucket and what is known about it without taking a cell.
#[derive(Debug)]
struct TenantBucket {
    bucket: Bucket,
    /// The earliest instant of the bucket's last refusal: no cell can be granted before it
    /// (GCRA's earliest time only moves forward while the bucket lives), so it is a non-consuming
    /// test.
    not_before: Option<Instant>,
    /// When a cell was last granted (real time, however the check was dated). Once
    /// `refill_time` has passed since, the bucket is full and indistinguishable from a fresh one,
    /// so dropping it loses nothing.
    last_grant: Instant,
}

#[derive(Debug, Default)]
struct Tenants {
    /// The limit of every tenant without an override; `None`: tenants are unlimited.
    default: Option<RateLimit>,
    /// Per-tenant limits that replace the default.
    overrides: HashMap<String, RateLimit>,
    /// Live buckets, created on first use, only for tenants with a limit. A bucket's limit is
    /// always the tenant's current effective limit (changing the limit drops the bucket).
    buckets: HashMap<String, TenantBucket>,
    /// The tenants' limits are kept by a shared store: `slots` instead of `buckets`.
    shared: bool,
    /// With a shared store: the slots this node reserved, per tenant with a limit. Like a
    /// bucket, dropped when the tenant's limit changes.
    slots: HashMap<String, TenantSlots>,
}

impl Tenants {
    fn effective(&self, tenant: &str) -> Option<&RateLimit> {
        self.overrides.get(tenant).or(self.default.as_ref())
    }
}

/// The engine's per-tenant rate limiters; one per engine, cheap to clone (the clones share state).
#[derive(Debug, Clone, Default)]
pub(crate) struct Limiters {
    inner: Arc<Mutex<Tenants>>,
}

impl Limiters {
    /// Limiters where every tenant gets `default_per_tenant` (`None`: tenants are unlimited)
    /// until [`set_tenant_limit`](Self::set_tenant_limit) says otherwise.
    pub(crate) fn new(default_per_tenant: Option<RateLimit>) -> Self {
        Limiters {
            inner: Arc::new(Mutex::new(Tenants {
                default: default_per_tenant,
                ..Tenants::default()
            })),
        }
    }

    /// Limiters for a store shared by several nodes: tenants' limits hold cluster-wide, from
    /// slots reserved in the store (see the module docs), and subscriptions' limits here.
    pub(crate) fn across_cluster(default_per_tenant: Option<RateLimit>) -> Self {
        let l = Limiters::new(default_per_tenant);
        l.lock().shared = true;
        l
    }

    fn lock(&self) -> MutexGuard<'_, Tenants> {
        // Every critical section leaves the table consistent (single map operations and
        // `governor` checks, which do not panic on validated or clamped quotas), so the data
        // behind a poisoned lock is still sound.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Overrides the default limit of `tenant`; `None` removes the override, so the engine
    /// default applies again. A changed limit starts from a fresh (full) bucket; setting the
    /// limit the tenant already has keeps its bucket, so a no-op update grants no extra burst.
    pub(crate) fn set_tenant_limit(&self, tenant: &str, limit: Option<RateLimit>) {
        let mut t = self.lock();
        let before = t.effective(tenant).cloned();
        match limit {
            Some(limit) => t.overrides.insert(tenant.to_owned(), limit),
            None => t.overrides.remove(tenant),
        };
        if t.effective(tenant) != before.as_ref() {
            t.buckets.remove(tenant);
            t.slots.remove(tenant);
        }
    }

    /// Replaces every tenant's own limit with `limits` (tenants not in it get the default), as
    /// [`set_tenant_limit`](Self::set_tenant_limit) would one by one: what another node changed.
    pub(crate) fn set_tenant_limits(&self, limits: HashMap<String, RateLimit>) {
        let mut t = self.lock();
        let mut tenants: Vec<String> = t.overrides.keys().cloned().collect();
        tenants.extend(limits.keys().cloned());
        let before: HashMap<String, Option<RateLimit>> = tenants
            .into_iter()
            .map(|id| {
                let l = t.effective(&id).cloned();
                (id, l)
            })
            .collect();
        t.overrides = limits;
        for (id, was) in before {
            if t.effective(&id) != was.as_ref() {
                t.buckets.remove(&id);
                t.slots.remove(&id);
            }
        }
    }

    /// Queues for a reservation of `tenant`'s slots (shared store, tenant with a limit only).
    pub(crate) fn queue_for_slots(&self, tenant: &str) -> Option<SlotQueue> {
        let mut t = self.lock();
        if !t.shared {
            return None;
        }
        let limit = t.effective(tenant).cloned()?;
        let gate = t.slots.entry(tenant.to_owned()).or_default().queue();
        Some(SlotQueue {
            limiters: self.clone(),
            tenant: tenant.to_owned(),
            limit,
            gate,
            queued: true,
        })
    }

    #[cfg_attr(not(test), allow(dead_code))] // per-tenant overrides and pruning: no API yet
    /// Forgets everything about `tenant` (its override and its bucket), e.g. when it is deleted.
    pub(crate) fn forget_tenant(&self, tenant: &str) {
        let mut t = self.lock();
        t.overrides.remove(tenant);
        t.buckets.remove(tenant);
    }

    #[cfg_attr(not(test), allow(dead_code))] // per-tenant overrides and pruning: no API yet
    /// Drops the buckets that are full again: they would be recreated exactly as they are, so
    /// this bounds memory to the tenants active in the last `burst / perSecond` seconds without
    /// changing any decision. Meant to be called now and then (e.g. by the supervisor).
    pub(crate) fn prune_idle(&self) {
        let now = Instant::now();
        self.lock()
            .buckets
            .retain(|_, b| now < b.last_grant + b.bucket.refill_time());
    }

    /// Steps 1 to 3 of the module docs, under the lock; `Err` is the earliest instant to ask
    /// again.
    fn admit(
        &self,
        tenant: &str,
        subscription: Option<&Bucket>,
        due: Option<Instant>,
        now: Instant,
    ) -> Result<(), Instant> {
        let mut t = self.lock();
        let Some(limit) = t.effective(tenant).cloned() else {
            // An unlimited tenant: only the subscription's own bucket counts.
            drop(t);
            return subscription.map_or(Ok(()), |b| b.take(due, now));
        };
        let entry = t
            .buckets
            .entry(tenant.to_owned())
            .or_insert_with(|| TenantBucket {
                bucket: Bucket::new(limit),
                not_before: None,
                last_grant: now,
            });
        if let Some(not_before) = entry.not_before
            && not_before > now
        {
            return Err(not_before);
        }
        if let Some(subscription) = subscription {
            subscription.take(due, now)?;
        }
        match entry.bucket.take(due, now) {
            Ok(()) => {
                // Read after the grant, so that `prune_idle` never sees the bucket full early.
                entry.last_grant = Instant::now();
                Ok(())
            }
            Err(earliest) => {
                entry.not_before = Some(earliest);
                Err(earliest)
            }
        }
    }
}

/// A subscription's place in the queue for a reservation of its tenant's slots (see
/// [`Pace::Reserve`]): wait at [`gate`](Self::gate), then ask [`request`](Self::request) what to
/// reserve, reserve it from the store, and [`deposit`](Self::deposit) the answer. Leaving
/// without reserving (an error, a cancelled handler) takes the subscription out of the count.
#[derive(Debug)]
pub(crate) struct SlotQueue {
    limiters: Limiters,
    tenant: String,
    limit: RateLimit,
    gate: Arc<tokio::sync::Mutex<()>>,
    queued: bool,
}

impl SlotQueue {
    /// The gate: one reservation of the tenant at a time on this node.
    pub(crate) fn gate(&self) -> Arc<tokio::sync::Mutex<()>> {
        self.gate.clone()
    }

    /// Once through the gate: what to reserve (the tenant's limit, and how many slots: for the
    /// caller and everyone still queued), or `None` when a reservation made meanwhile left
    /// slots (or a wait) to take.
    pub(crate) fn request(&mut self, now: Instant) -> Option<(RateLimit, u32)> {
        let mut t = self.limiters.lock();
        let slots = t.slots.entry(self.tenant.clone()).or_default();
        if self.queued {
            slots.leave();
            self.queued = false;
        }
        if slots.stocked(now) {
            return None;
        }
        Some((self.limit.clone(), slots.want()))
    }

    /// Adds the store's answer to this node's slots of the tenant, unless its limit changed
    /// meanwhile (slots of the old schedule are dropped with it).
    pub(crate) fn deposit(&self, grant: &SlotGrant, answered: Instant) {
        let mut t = self.limiters.lock();
        if t.effective(&self.tenant) != Some(&self.limit) {
            return;
        }
        t.slots
            .entry(self.tenant.clone())
            .or_default()
            .deposit(grant, answered);
    }
}

impl Drop for SlotQueue {
    fn drop(&mut self) {
        if self.queued
            && let Some(slots) = self.limiters.lock().slots.get_mut(&self.tenant)
        {
            slots.leave();
        }
    }
}

/// What a subscription may do about its next attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pace {
    /// Start it now (a slot was taken from each limit).
    Go,
    /// Ask again after this wait.
    Wait(Duration),
    /// This node holds no slot of the tenant (shared store): reserve some through
    /// [`Limiters::queue_for_slots`], then ask again.
    Reserve,
}

/// The rate limit of one subscription, owned by its actor.
#[derive(Debug)]
pub(crate) struct SubscriptionPacer {
    bucket: Option<Bucket>,
    /// When the last refusal told the actor to come back; cleared by a grant.
    due: Option<Instant>,
    /// Shared store: the tenant slot handed to this subscription, not yet used.
    reserved: Option<Instant>,
    /// Until when the subscription's own bucket has no cell left, as far as its grants tell
    /// (GCRA's theoretical arrival time, never earlier than `governor`'s): what a release hands
    /// to the subscription's next holder ([`ahead`](Self::ahead), [`resume`](Self::resume)).
    spent_until: Option<Instant>,
}

impl SubscriptionPacer {
    /// A pacer for `limit` (`None`: only the tenant's limit applies).
    pub(crate) fn new(limit: Option<RateLimit>) -> Self {
        SubscriptionPacer {
            bucket: limit.map(Bucket::new),
            due: None,
            reserved: None,
            spent_until: None,
        }
    }

    /// A cell of the subscription's own bucket was taken at `now`.
    fn spent(&mut self, now: Instant) {
        if let Some(b) = &self.bucket {
            self.spent_until =
                Some(self.spent_until.map_or(now, |t| t.max(now)) + b.limit.interval());
        }
    }

    /// How long from `now` the subscription's own bucket is spent: zero when full (or no
    /// limit). What a shared store carries to the subscription's next holder.
    pub(crate) fn ahead(&self, now: Instant) -> Duration {
        match (&self.bucket, self.spent_until) {
            (Some(b), Some(t)) => {
                // A GCRA is full again once its arrival time is `burst` intervals behind it.
                let left = t.saturating_duration_since(now);
                let full_after = b.limit.interval() * b.limit.burst.max(1);
                left.min(full_after)
            }
            _ => Duration::ZERO,
        }
    }

    /// Takes over the pace another holder of the subscription left (`ahead` from now, see
    /// [`ahead`](Self::ahead)): the bucket is spent by as many cells as that covers, rounded up
    /// (so at most one interval stricter than the previous holder was). A pace this pacer
    /// already knows to be at least as strict is kept.
    pub(crate) fn resume(&mut self, ahead: Duration) {
        let now = Instant::now();
        let Some(limit) = self.limit().cloned() else {
            return;
        };
        if ahead.is_zero() || ahead <= self.ahead(now) {
            return;
        }
        let interval = limit.interval();
        let cells = ahead
            .as_nanos()
            .div_ceil(interval.as_nanos().max(1))
            .min(u128::from(limit.burst.max(1))) as u32;
        let bucket = Bucket::new(limit);
        for _ in 0..cells {
            // A fresh bucket grants `burst` cells at once; `cells` is at most that.
            let _ = bucket.check_at(now);
        }
        self.bucket = Some(bucket);
        self.due = None;
        self.spent_until = Some(now + interval * cells);
    }

    /// The limit in force.
    pub(crate) fn limit(&self) -> Option<&RateLimit> {
        self.bucket.as_ref().map(|b| &b.limit)
    }

    /// Applies a new limit. A changed limit starts from a fresh (full) bucket, which is simple
    /// and at worst grants one extra burst per change; an unchanged limit keeps its bucket, so
    /// updating some other field of the subscription does not reset its pace.
    pub(crate) fn reconfigure(&mut self, limit: Option<RateLimit>) {
        if self.limit() != limit.as_ref() {
            let reserved = self.reserved.take();
            *self = SubscriptionPacer::new(limit);
            self.reserved = reserved;
        }
    }

    /// Whether the next attempt may start now, under either kind of [`Limiters`]: the actor's
    /// entry point. With node-local limiters this is [`next_slot`](Self::next_slot).
    pub(crate) fn pace(&mut self, tenants: &Limiters, tenant_id: &str) -> Pace {
        let now = Instant::now();
        let mut t = tenants.lock();
        if !t.shared || t.effective(tenant_id).is_none() {
            drop(t);
            self.reserved = None;
            return match self.next_slot(tenants, tenant_id) {
                Ok(()) => Pace::Go,
                Err(wait) => Pace::Wait(wait),
            };
        }
        let slots = t.slots.entry(tenant_id.to_owned()).or_default();
        let slot = match self.reserved.take() {
            Some(s) if s + super::cluster_pace::LATE_MAX >= now => s,
            // Too late to use (see `cluster_pace`): dropped, the tenant sends less.
            _ => match slots.take(now) {
                Ok(s) => s,
                Err(NoSlot::Until(at)) => return Pace::Wait(at.saturating_duration_since(now)),
                Err(NoSlot::Reserve) => return Pace::Reserve,
            },
        };
        if slot > now {
            self.reserved = Some(slot);
            return Pace::Wait(slot - now);
        }
        if let Some(bucket) = &self.bucket
            && let Err(earliest) = bucket.take(self.due, now)
        {
            // The subscription's own limit says wait: another subscription may use the slot.
            slots.give_back(slot);
            self.due = Some(earliest);
            return Pace::Wait(earliest.saturating_duration_since(now));
        }
        self.due = None;
        self.spent(now);
        Pace::Go
    }

    /// The subscription stops working (its lease is gone): a tenant slot it was handed goes
    /// back to this node's pool.
    pub(crate) fn forfeit(&mut self, tenants: &Limiters, tenant_id: &str) {
        if let Some(slot) = self.reserved.take()
            && let Some(slots) = tenants.lock().slots.get_mut(tenant_id)
        {
            slots.give_back(slot);
        }
    }

    /// Whether the next attempt may start now. `Ok(())` takes a cell from this subscription's
    /// bucket and from `tenant_id`'s; `Err(wait)` means ask again after `wait` (see the module
    /// docs for which bucket a refusal may have charged).
    pub(crate) fn next_slot(
        &mut self,
        tenants: &Limiters,
        tenant_id: &str,
    ) -> Result<(), Duration> {
        let now = Instant::now();
        match tenants.admit(tenant_id, self.bucket.as_ref(), self.due, now) {
            Ok(()) => {
                self.due = None;
                self.spent(now);
                Ok(())
            }
            Err(earliest) => {
                self.due = Some(earliest);
                Err(earliest.saturating_duration_since(now))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(per_second: f64, burst: u32) -> RateLimit {
        RateLimit { per_second, burst }
    }

    /// What the actor does: ask, sleep the wait, ask again.
    async fn slot(pacer: &mut SubscriptionPacer, tenants: &Limiters, tenant: &str) {
        loop {
            match pacer.next_slot(tenants, tenant) {
                Ok(()) => return,
                Err(wait) => tokio::time::sleep(wait).await,
            }
        }
    }

    /// Takes `n` slots and returns the rate measured after the first (which is free).
    async fn measure(
        n: u32,
        pacer: &mut SubscriptionPacer,
        tenants: &Limiters,
        tenant: &str,
    ) -> f64 {
        slot(pacer, tenants, tenant).await;
        let start = Instant::now();
        for _ in 1..n {
            slot(pacer, tenants, tenant).await;
        }
        f64::from(n - 1) / start.elapsed().as_secs_f64()
    }

    fn assert_rate(measured: f64, limit: f64) {
        assert!(
            (0.9 * limit..=1.05 * limit).contains(&measured),
            "measured {measured:.2}/s for a limit of {limit}/s"
        );
    }

    #[tokio::test]
    async fn paces_a_subscription_at_its_rate() {
        let tenants = Limiters::new(None);
        let mut pacer = SubscriptionPacer::new(Some(limit(50.0, 1)));
        let start = Instant::now();
        for _ in 0..100 {
            slot(&mut pacer, &tenants, "acme").await;
        }
        let elapsed = start.elapsed().as_secs_f64();
        // The first slot is free; the 99 after it are 20 ms apart.
        let rate = 99.0 / elapsed;
        eprintln!("50/s burst 1: 100 slots in {elapsed:.3} s, {rate:.2}/s");
        assert!(
            (99.0 / 50.0 / 1.05..=99.0 / 50.0 / 0.9).contains(&elapsed),
            "100 slots took {elapsed:.3} s"
        );
        assert_rate(rate, 50.0);
    }

    #[tokio::test]
    async fn the_pace_after_a_burst_is_the_rate() {
        // Once the burst is spent the bucket refills at the rate; lateness up to one interval is
        // absorbed by the burst itself, on top of the lateness credit.
        let tenants = Limiters::new(None);
        let mut pacer = SubscriptionPacer::new(Some(limit(50.0, 2)));
        for _ in 0..2 {
            assert_eq!(pacer.next_slot(&tenants, "acme"), Ok(()));
        }
        let start = Instant::now();
        for _ in 0..100 {
            slot(&mut pacer, &tenants, "acme").await;
        }
        let rate = 100.0 / start.elapsed().as_secs_f64();
        eprintln!("50/s burst 2: 100 slots after the burst at {rate:.2}/s");
        assert_rate(rate, 50.0);
    }

    /// Asks once right after a grant and returns the wait, in ms.
    fn wait_ms(pacer: &mut SubscriptionPacer, tenants: &Limiters) -> u128 {
        pacer
            .next_slot(tenants, "acme")
            .expect_err("just granted")
            .as_millis()
    }

    #[tokio::test]
    async fn a_late_caller_keeps_its_schedule_within_the_credit() {
        // 10/s: a 100 ms interval and a 20 ms credit.
        let tenants = Limiters::new(None);
        let mut pacer = SubscriptionPacer::new(Some(limit(10.0, 1)));
        assert_eq!(pacer.next_slot(&tenants, "acme"), Ok(()));
        let wait = pacer.next_slot(&tenants, "acme").expect_err("interval");
        tokio::time::sleep(wait + Duration::from_millis(10)).await;
        assert_eq!(pacer.next_slot(&tenants, "acme"), Ok(()));
        // The slot was recorded when it was due, so the 10 ms are not lost.
        let next = wait_ms(&mut pacer, &tenants);
        assert!((75..=90).contains(&next), "{next} ms");

        // Much later than the credit: only the credit is given back.
        tokio::time::sleep(Duration::from_millis(next as u64 + 60)).await;
        assert_eq!(pacer.next_slot(&tenants, "acme"), Ok(()));
        let next = wait_ms(&mut pacer, &tenants);
        assert!((75..=80).contains(&next), "{next} ms");
    }

    #[tokio::test]
    async fn a_caller_that_was_not_told_to_wait_gets_no_credit() {
        let tenants = Limiters::new(None);
        let mut pacer = SubscriptionPacer::new(Some(limit(10.0, 1)));
        assert_eq!(pacer.next_slot(&tenants, "acme"), Ok(()));
        tokio::time::sleep(Duration::from_millis(110)).await;
        assert_eq!(pacer.next_slot(&tenants, "acme"), Ok(()));
        let next = wait_ms(&mut pacer, &tenants);
        assert!((95..=100).contains(&next), "{next} ms");
    }

    #[tokio::test]
    async fn a_burst_goes_at_once_then_the_pace_resumes() {
        let tenants = Limiters::new(None);
        let mut pacer = SubscriptionPacer::new(Some(limit(10.0, 5)));
        for i in 0..5 {
            assert_eq!(
                pacer.next_slot(&tenants, "acme"),
                Ok(()),
                "slot {i} of the burst"
            );
        }
        let wait = pacer
            .next_slot(&tenants, "acme")
            .expect_err("the burst is spent");
        assert!(
            wait > Duration::from_millis(90) && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
    }

    #[test]
    fn a_fractional_rate_spaces_slots_by_its_interval() {
        let tenants = Limiters::new(None);
        let mut pacer = SubscriptionPacer::new(Some(limit(0.5, 1)));
        assert_eq!(pacer.next_slot(&tenants, "acme"), Ok(()));
        let wait = pacer
            .next_slot(&tenants, "acme")
            .expect_err("one every 2 s");
        assert!(
            wait > Duration::from_millis(1_990) && wait <= Duration::from_secs(2),
            "{wait:?}"
        );
        assert_eq!(limit(0.5, 1).interval(), Duration::from_secs(2));
    }

    #[tokio::test]
    async fn a_tenant_limit_caps_its_subscriptions_together_and_no_other_tenant() {
        // Every tenant gets 40/s. Tenant `a` has two subscriptions, one unlimited and one with a
        // high limit of its own; tenant `b` has one. Each tenant must get 40/s, not 20 or 80.
        let tenants = Limiters::new(Some(limit(40.0, 1)));
        let mut a1 = SubscriptionPacer::new(None);
        let mut a2 = SubscriptionPacer::new(Some(limit(1_000.0, 1)));
        let mut b = SubscriptionPacer::new(None);

        let tenant_a = async {
            // Both subscriptions compete for the first slot; count it as the free one.
            let start = Instant::now();
            tokio::join!(
                async {
                    for _ in 0..50 {
                        slot(&mut a1, &tenants, "a").await;
                    }
                },
                async {
                    for _ in 0..50 {
                        slot(&mut a2, &tenants, "a").await;
                    }
                }
            );
            99.0 / start.elapsed().as_secs_f64()
        };
        let tenant_b = measure(100, &mut b, &tenants, "b");
        let (rate_a, rate_b) = tokio::join!(tenant_a, tenant_b);
        eprintln!("tenant 40/s: a (two subscriptions) {rate_a:.2}/s, b (one) {rate_b:.2}/s");
        assert_rate(rate_a, 40.0);
        assert_rate(rate_b, 40.0);
    }

    #[test]
    fn a_subscription_refusal_takes_nothing_from_the_tenant() {
        // Tenant: 2 cells. Subscription `slow` takes one, then its own bucket refuses: the
        // tenant's second cell must still be there for `fast`.
        let tenants = Limiters::new(Some(limit(1.0, 2)));
        let mut slow = SubscriptionPacer::new(Some(limit(0.5, 1)));
        let mut fast = SubscriptionPacer::new(None);
        assert_eq!(slow.next_slot(&tenants, "acme"), Ok(()));
        assert!(slow.next_slot(&tenants, "acme").is_err());
        assert!(slow.next_slot(&tenants, "acme").is_err());
        assert_eq!(fast.next_slot(&tenants, "acme"), Ok(()));
        assert!(fast.next_slot(&tenants, "acme").is_err());
    }

    #[test]
    fn a_known_tenant_refusal_takes_nothing_from_the_subscription() {
        // Tenant: 1 cell, taken by `other`. `sub` (2 cells) asks twice: the first time the
        // tenant refuses after `sub`'s own cell was taken (documented), the second time the
        // tenant's known refusal answers without touching `sub`'s bucket, so one cell is left.
        let tenants = Limiters::new(None);
        tenants.set_tenant_limit("acme", Some(limit(0.5, 1)));
        let mut other = SubscriptionPacer::new(None);
        let mut sub = SubscriptionPacer::new(Some(limit(0.5, 2)));
        assert_eq!(other.next_slot(&tenants, "acme"), Ok(()));
        let first = sub.next_slot(&tenants, "acme").expect_err("tenant spent");
        let second = sub.next_slot(&tenants, "acme").expect_err("tenant spent");
        assert!(
            second <= first && second > Duration::from_millis(1_900),
            "{second:?}"
        );
        // Lift the tenant limit: `sub` has exactly one cell left.
        tenants.set_tenant_limit("acme", Some(limit(100_000.0, 10_000)));
        assert_eq!(sub.next_slot(&tenants, "acme"), Ok(()));
        assert!(sub.next_slot(&tenants, "acme").is_err());
    }

    #[test]
    fn no_limit_always_grants() {
        let tenants = Limiters::new(None);
        let mut pacer = SubscriptionPacer::new(None);
        for _ in 0..10_000 {
            assert_eq!(pacer.next_slot(&tenants, "acme"), Ok(()));
        }
        assert!(
            tenants.lock().buckets.is_empty(),
            "no bucket for unlimited tenants"
        );
    }

    #[test]
    fn overrides_replace_the_default_and_none_restores_it() {
        let tenants = Limiters::new(Some(limit(0.5, 1)));
        let mut pacer = SubscriptionPacer::new(None);
        assert_eq!(pacer.next_slot(&tenants, "acme"), Ok(()));
        assert!(
            pacer.next_slot(&tenants, "acme").is_err(),
            "default applies"
        );

        tenants.set_tenant_limit("acme", Some(limit(0.5, 3)));
        for _ in 0..3 {
            assert_eq!(
                pacer.next_slot(&tenants, "acme"),
                Ok(()),
                "fresh bucket, burst 3"
            );
        }
        assert!(pacer.next_slot(&tenants, "acme").is_err());
        // The same limit again keeps the (empty) bucket: no extra burst.
        tenants.set_tenant_limit("acme", Some(limit(0.5, 3)));
        assert!(pacer.next_slot(&tenants, "acme").is_err());

        tenants.set_tenant_limit("acme", None);
        assert_eq!(
            pacer.next_slot(&tenants, "acme"),
            Ok(()),
            "default again, fresh"
        );
        assert!(pacer.next_slot(&tenants, "acme").is_err());

        tenants.forget_tenant("acme");
        assert!(tenants.lock().buckets.is_empty());
        assert!(tenants.lock().overrides.is_empty());
    }

    #[tokio::test]
    async fn prune_drops_only_full_buckets() {
        let tenants = Limiters::new(Some(limit(100_000.0, 1)));
        tenants.set_tenant_limit("slow", Some(limit(0.5, 1)));
        let mut pacer = SubscriptionPacer::new(None);
        assert_eq!(pacer.next_slot(&tenants, "fast"), Ok(()));
        assert_eq!(pacer.next_slot(&tenants, "slow"), Ok(()));
        tokio::time::sleep(Duration::from_millis(5)).await;
        tenants.prune_idle();
        let t = tenants.lock();
        assert!(!t.buckets.contains_key("fast"), "refilled after 10 µs");
        assert!(
            t.buckets.contains_key("slow"),
            "still draining: dropping it would grant a cell"
        );
        assert!(
            t.overrides.contains_key("slow"),
            "pruning keeps configuration"
        );
    }

    #[test]
    fn reconfigure_replaces_a_changed_limit_only() {
        let tenants = Limiters::new(None);
        let mut pacer = SubscriptionPacer::new(Some(limit(0.5, 1)));
        assert_eq!(pacer.next_slot(&tenants, "acme"), Ok(()));
        pacer.reconfigure(Some(limit(0.5, 1)));
        assert!(
            pacer.next_slot(&tenants, "acme").is_err(),
            "same limit, same bucket"
        );
        pacer.reconfigure(Some(limit(0.5, 2)));
        assert_eq!(pacer.limit(), Some(&limit(0.5, 2)));
        assert_eq!(pacer.next_slot(&tenants, "acme"), Ok(()));
        pacer.reconfigure(None);
        assert_eq!(pacer.limit(), None);
        assert_eq!(pacer.next_slot(&tenants, "acme"), Ok(()));
    }

    #[test]
    fn validation_names_the_field() {
        let field_of = |l: RateLimit| match l.validate() {
            Err(Error::Invalid { field, .. }) => field,
            other => panic!("{l:?}: expected Invalid, got {other:?}"),
        };
        for per_second in [0.0, -1.0, f64::NAN, f64::INFINITY, 100_000.5, 1e-9] {
            assert_eq!(
                field_of(limit(per_second, 1)),
                "rateLimit.perSecond",
                "{per_second}"
            );
        }
        for burst in [0, 10_001] {
            assert_eq!(field_of(limit(1.0, burst)), "rateLimit.burst", "{burst}");
        }
        for ok in [
            limit(0.5, 1),
            limit(100_000.0, 10_000),
            limit(1.0 / 86_400.0, 1),
        ] {
            assert!(ok.validate().is_ok(), "{ok:?}");
        }
    }

    #[test]
    fn invalid_limits_are_clamped_not_trusted() {
        // A limit that skipped validation still paces instead of panicking.
        for l in [
            limit(0.0, 0),
            limit(f64::NAN, 1),
            limit(-5.0, 1),
            limit(1e300, u32::MAX),
        ] {
            let tenants = Limiters::new(Some(l.clone()));
            let mut pacer = SubscriptionPacer::new(Some(l));
            let _ = pacer.next_slot(&tenants, "acme");
            let _ = pacer.next_slot(&tenants, "acme");
        }
        assert_eq!(limit(0.0, 1).interval(), Duration::from_secs(86_400));
        assert_eq!(limit(1e9, 1).interval(), Duration::from_micros(10));
    }

    #[test]
    fn limiters_are_shared_across_threads_and_pacers_move_with_their_actor() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<Limiters>();
        send::<SubscriptionPacer>();
    }

    #[test]
    fn serde_is_camel_case_and_strict() -> Result<(), serde_json::Error> {
        let l: RateLimit = serde_json::from_str(r#"{"perSecond": 50, "burst": 5}"#)?;
        assert_eq!(l, limit(50.0, 5));
        assert_eq!(
            serde_json::to_value(limit(0.5, 1))?,
            serde_json::json!({"perSecond": 0.5, "burst": 1})
        );
        assert!(
            serde_json::from_str::<RateLimit>(r#"{"perSecond": 1, "burst": 1, "x": 1}"#).is_err()
        );
        assert!(serde_json::from_str::<RateLimit>(r#"{"perSecond": 1, "burst": -1}"#).is_err());
        Ok(())
    }

    #[test]
    fn a_pace_handed_to_the_next_holder_keeps_the_subscription_limit() {
        let tenants = Limiters::new(None);
        // 2/s: a grant spends the bucket for 500 ms.
        let mut first = SubscriptionPacer::new(Some(limit(2.0, 1)));
        assert_eq!(first.next_slot(&tenants, "acme"), Ok(()));
        let ahead = first.ahead(Instant::now());
        assert!(
            ahead > Duration::from_millis(400) && ahead <= Duration::from_millis(500),
            "{ahead:?}"
        );
        let mut next = SubscriptionPacer::new(Some(limit(2.0, 1)));
        next.resume(ahead);
        let wait = next.next_slot(&tenants, "acme").expect_err("spent");
        assert!(wait > Duration::from_millis(350), "{wait:?}");
        // A laxer pace than the one known is ignored.
        next.resume(Duration::from_millis(1));
        assert!(next.next_slot(&tenants, "acme").is_err());
        // A full bucket, or no limit, hands over nothing.
        let now = Instant::now();
        assert_eq!(
            SubscriptionPacer::new(Some(limit(2.0, 3))).ahead(now),
            Duration::ZERO
        );
        assert_eq!(SubscriptionPacer::new(None).ahead(now), Duration::ZERO);
        // A burst of 3 partly used hands over the part used.
        let mut burst = SubscriptionPacer::new(Some(limit(2.0, 3)));
        assert_eq!(burst.next_slot(&tenants, "acme"), Ok(()));
        let mut after = SubscriptionPacer::new(Some(limit(2.0, 3)));
        after.resume(burst.ahead(Instant::now()));
        assert_eq!(after.next_slot(&tenants, "acme"), Ok(()));
        assert_eq!(after.next_slot(&tenants, "acme"), Ok(()));
        assert!(
            after.next_slot(&tenants, "acme").is_err(),
            "two of three left"
        );
    }

    #[test]
    fn across_a_cluster_tenant_slots_come_from_reservations() {
        use super::super::cluster_pace::SlotGrant;
        let tenants = Limiters::across_cluster(None);
        tenants.set_tenant_limit("acme", Some(limit(10.0, 1)));
        let mut a = SubscriptionPacer::new(None);
        let mut b = SubscriptionPacer::new(Some(limit(1.0, 1)));
        assert_eq!(a.pace(&tenants, "acme"), Pace::Reserve);
        let mut queue = tenants.queue_for_slots("acme").expect("a limited tenant");
        let mut second = tenants.queue_for_slots("acme").expect("queued too");
        let t0 = Instant::now();
        assert_eq!(
            queue.request(t0),
            Some((limit(10.0, 1), 2)),
            "one slot each"
        );
        queue.deposit(
            &SlotGrant {
                offsets: vec![Duration::ZERO, Duration::from_millis(100)],
                retry_in: Some(Duration::from_millis(150)),
            },
            t0,
        );
        assert_eq!(second.request(t0), None, "slots were left");
        assert_eq!(a.pace(&tenants, "acme"), Pace::Go);
        // b gets the next slot, 100 ms ahead, and keeps it while it waits.
        match b.pace(&tenants, "acme") {
            Pace::Wait(w) => assert!(w <= Duration::from_millis(100), "{w:?}"),
            other => panic!("{other:?}"),
        }
        match a.pace(&tenants, "acme") {
            Pace::Wait(w) => assert!(w > Duration::from_millis(100), "the store's retry: {w:?}"),
            other => panic!("{other:?}"),
        }
        // An unlimited tenant never reserves; a local store never reserves.
        assert_eq!(
            SubscriptionPacer::new(None).pace(&tenants, "other"),
            Pace::Go
        );
        assert!(tenants.queue_for_slots("other").is_none());
        assert!(
            Limiters::new(Some(limit(1.0, 1)))
                .queue_for_slots("acme")
                .is_none()
        );
        // A changed limit drops the slots of the old schedule.
        tenants.set_tenant_limits(HashMap::from([("acme".to_owned(), limit(20.0, 1))]));
        assert_eq!(
            SubscriptionPacer::new(None).pace(&tenants, "acme"),
            Pace::Reserve
        );
    }

    #[tokio::test]
    async fn across_a_cluster_a_slot_refused_by_the_subscription_goes_back() {
        use super::super::cluster_pace::SlotGrant;
        let tenants = Limiters::across_cluster(Some(limit(100.0, 5)));
        let mut own = SubscriptionPacer::new(Some(limit(1.0, 1)));
        let mut other = SubscriptionPacer::new(None);
        let t0 = Instant::now();
        let mut queue = tenants.queue_for_slots("acme").expect("limited");
        assert!(queue.request(t0).is_some());
        queue.deposit(
            &SlotGrant {
                offsets: vec![Duration::ZERO],
                retry_in: Some(Duration::from_millis(900)),
            },
            t0,
        );
        drop(queue);
        // `own` spends its own bucket first (the slot), then its limit refuses: ...
        assert_eq!(own.pace(&tenants, "acme"), Pace::Go);
        let queue = tenants.queue_for_slots("acme").expect("limited");
        queue.deposit(
            &SlotGrant {
                offsets: vec![Duration::ZERO],
                retry_in: None,
            },
            Instant::now(),
        );
        drop(queue);
        assert!(matches!(own.pace(&tenants, "acme"), Pace::Wait(_)));
        // ... and the tenant slot it was handed is another subscription's to use.
        assert_eq!(other.pace(&tenants, "acme"), Pace::Go);
    }
}
