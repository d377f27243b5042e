//! A tenant's rate limit across a cluster: slots reserved from one schedule per tenant that the
//! shared store keeps, and handed out by each node to its own subscriptions.
//!
//! With several nodes a tenant's subscriptions are spread over them, and move between them
//! (leases are released whenever a head must wait). In-memory buckets per node would give the
//! tenant up to N times its rate. So with a shared store the tenant's bucket is a row in the
//! store: a GCRA whose state is one number, the *theoretical arrival time* (`tat`) on the
//! store's clock. A node **reserves** slots from it: the store grants up to `want` consecutive
//! slots of the schedule, each at a definite time (`max(now, tat - tau)`, then one interval
//! apart; `tau` is `burst - 1` intervals), never one further than [`HORIZON`] ahead, and moves
//! `tat` past them in the same statement under the row's lock. Slots are granted once,
//! cluster-wide, so the sum of what all nodes use follows the tenant's limit exactly as one
//! bucket would, whatever the nodes' number and however the subscriptions are spread.
//!
//! Why not per-node shares of the rate (limit / live nodes)? A share is only right when the
//! tenant's work is spread evenly; a tenant with one busy subscription would get a third of its
//! rate on three nodes, and a node's share would have to follow every claim and release.
//! Why not one store round trip per delivery? That is what this does when a node's
//! subscriptions of the tenant come one at a time, but a node reserves for every subscription
//! waiting at that moment in one statement ([`TenantSlots::want`]), so a node with k
//! subscriptions of a saturated tenant pays one round trip per k deliveries. Tenants without a
//! limit never reach the store, and a rate-limited tenant makes at most as many reservations as
//! it has deliveries: the cost is bounded by the limits operators set.
//!
//! Invariants kept here (the store keeps the schedule itself):
//! - a node maps a slot's store time onto its own monotonic clock from the instant the answer
//!   *arrived*, which is after the store read its clock: a slot is never used before its time;
//! - a slot is used by one subscription once. A slot that is not used within [`LATE_MAX`] of its
//!   time is dropped: slots used late may bunch up, and this bounds by how much. Over any window
//!   of `w` the tenant's subscriptions together start at most `burst + rate × (w + LATE_MAX)`
//!   attempts (plus the clocks' *rate* difference);
//! - slots reserved and not used (a subscription paused or lost between its reservation and its
//!   slot) are lost: the cluster then sends a little less than the limit, never more.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How far ahead a reservation may reach. No longer than the wait a subscriber holds its lease
/// through (`actors::subscriber::tenure::HOLD_WAIT_MAX`), so that a subscription holding a
/// reserved slot keeps its lease until it uses it.
pub(crate) const HORIZON: Duration = Duration::from_secs(1);

/// How late a reserved slot may still be used (see the module docs for the bound it gives).
pub(crate) const LATE_MAX: Duration = Duration::from_millis(250);

/// Most slots one reservation asks for.
pub(crate) const WANT_MAX: u32 = 64;

/// What a shared store answers a reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SlotGrant {
    /// When each reserved slot may be used, from the moment of the answer, in ascending order.
    pub offsets: Vec<Duration>,
    /// Fewer slots than asked for: how long until the next slot enters the horizon.
    pub retry_in: Option<Duration>,
}

impl SlotGrant {
    /// Everything asked for, at once: a store with no cluster-wide schedule (an exclusive store
    /// keeps tenants' limits in memory and is never asked).
    pub(crate) fn unlimited(want: u32) -> SlotGrant {
        SlotGrant {
            offsets: vec![Duration::ZERO; want as usize],
            retry_in: None,
        }
    }

    /// The grant of the store's schedule arithmetic: `granted` slots, the first at `first_us`
    /// on the store's clock (less `tau`, so possibly before `now_us`), one `interval_us` apart,
    /// read at `now_us`; fewer than `want` means the next slot is beyond `horizon`.
    pub(crate) fn from_schedule(
        now_us: i64,
        first_us: i64,
        interval_us: i64,
        granted: u32,
        want: u32,
        horizon: Duration,
    ) -> SlotGrant {
        let at = |i: i64| {
            let offset = first_us
                .saturating_add(interval_us.saturating_mul(i))
                .saturating_sub(now_us);
            Duration::from_micros(u64::try_from(offset).unwrap_or(0))
        };
        let offsets = (0..i64::from(granted)).map(at).collect();
        let retry_in = (granted < want).then(|| {
            at(i64::from(granted))
                .saturating_sub(horizon)
                // Never sooner than a millisecond: a slot exactly at the horizon is not a spin.
                .max(Duration::from_millis(1))
        });
        SlotGrant { offsets, retry_in }
    }
}

/// What a subscription is told when this node holds no slot for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoSlot {
    /// The store said no slot is within the horizon before this instant.
    Until(Instant),
    /// Reserve from the store.
    Reserve,
}

/// One tenant's slots on this node.
#[derive(Debug, Default)]
pub(crate) struct TenantSlots {
    /// Slots reserved by this node and not yet handed to a subscription, earliest first.
    pool: VecDeque<Instant>,
    /// No slot within the horizon before this (the store's last answer).
    retry_at: Option<Instant>,
    /// Subscriptions queued for the next reservation (see [`TenantSlots::want`]).
    waiting: u32,
    /// One reservation at a time per tenant on this node: those queued behind it take from what
    /// it brought, or reserve for all of them at once. An async mutex because the holder awaits
    /// the store; it guards no data (the data is under the limiters' own lock).
    gate: Arc<tokio::sync::Mutex<()>>,
}

impl TenantSlots {
    /// The earliest usable slot, taken out of the pool; stale slots are dropped on the way.
    pub(crate) fn take(&mut self, now: Instant) -> Result<Instant, NoSlot> {
        while let Some(&slot) = self.pool.front() {
            self.pool.pop_front();
            if slot + LATE_MAX >= now {
                return Ok(slot);
            }
        }
        match self.retry_at {
            Some(at) if at > now => Err(NoSlot::Until(at)),
            _ => Err(NoSlot::Reserve),
        }
    }

    /// A slot handed out but not used (its subscription must wait for its own limit): another
    /// subscription of this node may use it.
    pub(crate) fn give_back(&mut self, slot: Instant) {
        let at = self.pool.partition_point(|s| *s <= slot);
        self.pool.insert(at, slot);
    }

    /// Whether a reservation would bring nothing new: slots are left, or the store said to wait.
    pub(crate) fn stocked(&self, now: Instant) -> bool {
        self.pool.iter().any(|s| *s + LATE_MAX >= now) || self.retry_at.is_some_and(|at| at > now)
    }

    /// The gate to queue at, counting the caller among those waiting for a reservation.
    pub(crate) fn queue(&mut self) -> Arc<tokio::sync::Mutex<()>> {
        self.waiting = self.waiting.saturating_add(1);
        self.gate.clone()
    }

    /// The caller left the queue (through the gate, or gone).
    pub(crate) fn leave(&mut self) {
        self.waiting = self.waiting.saturating_sub(1);
    }

    /// How many slots to ask for: one for the caller (who left the queue) and one for each
    /// subscription still queued behind it.
    pub(crate) fn want(&self) -> u32 {
        self.waiting.saturating_add(1).min(WANT_MAX)
    }

    /// Adds what the store granted, its offsets counted from `answered` (the instant the answer
    /// arrived: after the store read its clock, so never early).
    pub(crate) fn deposit(&mut self, grant: &SlotGrant, answered: Instant) {
        for offset in &grant.offsets {
            self.give_back(answered + *offset);
        }
        self.retry_at = grant.retry_in.map(|r| answered + r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    /// The store's arithmetic (`hookline_reserve_slots` in schemas/postgres), as a model.
    fn reserve(tat: &mut i64, now: i64, interval: i64, burst: i64, want: u32) -> SlotGrant {
        let tau = (burst - 1) * interval;
        let v = (*tat).max(now);
        let room = now + HORIZON.as_micros() as i64 + tau - v;
        let granted = if room < 0 {
            0
        } else {
            i64::from(want).min(room / interval + 1)
        };
        *tat = v + granted * interval;
        SlotGrant::from_schedule(now, v - tau, interval, granted as u32, want, HORIZON)
    }

    #[test]
    fn a_grant_spaces_slots_by_the_interval_after_the_burst() {
        // 10/s, burst 3, idle: three slots now, then 100 ms apart.
        let mut tat = 0;
        let g = reserve(&mut tat, 1_000_000, 100_000, 3, 5);
        assert_eq!(g.offsets, vec![MS(0), MS(0), MS(0), MS(100), MS(200)]);
        assert_eq!(g.retry_in, None);
        // The next caller continues the same schedule.
        let g = reserve(&mut tat, 1_000_000, 100_000, 3, 1);
        assert_eq!(g.offsets, vec![MS(300)]);
    }

    #[test]
    fn nothing_is_granted_beyond_the_horizon() {
        // 2/s, burst 1: the horizon (1 s) holds slots at 0, 500 and 1000 ms.
        let mut tat = 0;
        let g = reserve(&mut tat, 0, 500_000, 1, 10);
        assert_eq!(g.offsets, vec![MS(0), MS(500), MS(1000)]);
        assert_eq!(
            g.retry_in,
            Some(MS(500)),
            "1500 ms enters the horizon at 500 ms"
        );
        let g = reserve(&mut tat, 0, 500_000, 1, 1);
        assert!(g.offsets.is_empty());
        assert_eq!(g.retry_in, Some(MS(500)));
    }

    #[test]
    fn many_nodes_reserving_never_exceed_the_limit() {
        // Three nodes asking in turn for random amounts at random moments, each using every slot
        // at its time: over every window the slots follow burst + rate × window.
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(12);
        let (interval, burst) = (20_000i64, 4i64); // 50/s
        let mut tat = 0;
        let mut used: Vec<i64> = Vec::new();
        let mut now = 0i64;
        while now < 20_000_000 {
            now += rng.random_range(0..30_000);
            let g = reserve(&mut tat, now, interval, burst, rng.random_range(1..8));
            used.extend(g.offsets.iter().map(|o| now + o.as_micros() as i64));
        }
        used.sort_unstable();
        for (i, start) in used.iter().enumerate() {
            for window in [1_000_000i64, 10_000_000] {
                let n = used[i..]
                    .iter()
                    .take_while(|t| **t < start + window)
                    .count() as i64;
                assert!(
                    n <= burst + window / interval,
                    "{n} slots in {window} µs from {start}"
                );
            }
        }
        let rate = used.len() as f64 / 20.0;
        assert!(
            rate > 0.97 * 50.0,
            "a saturated tenant gets its rate: {rate}/s"
        );
    }

    #[test]
    fn the_pool_hands_out_each_slot_once_and_drops_stale_ones() {
        let t0 = Instant::now();
        let mut s = TenantSlots::default();
        assert_eq!(s.take(t0), Err(NoSlot::Reserve));
        s.deposit(
            &SlotGrant {
                offsets: vec![MS(0), MS(10), MS(500)],
                retry_in: Some(MS(700)),
            },
            t0,
        );
        assert!(s.stocked(t0));
        // 300 ms later the first two are stale (over LATE_MAX), the third is still ahead.
        let later = t0 + MS(300);
        assert_eq!(s.take(later), Ok(t0 + MS(500)));
        assert_eq!(s.take(later), Err(NoSlot::Until(t0 + MS(700))));
        s.give_back(t0 + MS(500));
        assert_eq!(s.take(later), Ok(t0 + MS(500)));
        assert_eq!(s.take(t0 + MS(800)), Err(NoSlot::Reserve));
    }

    #[test]
    fn a_reservation_asks_for_everyone_queued() {
        let mut s = TenantSlots::default();
        let _a = s.queue();
        let _b = s.queue();
        let _c = s.queue();
        s.leave(); // the first through the gate
        assert_eq!(s.want(), 3);
    }
}
