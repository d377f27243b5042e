//! When a subscriber actor keeps, renews or gives up its lease: pure decisions, no I/O.
//!
//! An exclusive store (SQLite) hands out leases that never expire, so every decision here is
//! "go on" and the delivery path is today's. With a shared store (guarantee 8):
//! - **Before an attempt** the lease must outlive the attempt's whole budget (its timeout, plus
//!   its transform's CPU time) plus [`LEASE_MARGIN`]; otherwise the actor renews first, and a
//!   lease it cannot renew is never used to send. A lease taken over from a live holder also
//!   waits until that holder's lease would have expired (its `quiet_until`), because that
//!   holder may still be sending until then.
//! - **When the head must wait** (a retry backoff, a `Retry-After`, a rate-limit slot) longer
//!   than [`HOLD_WAIT_MAX`], the actor releases the subscription with its due time, so no node
//!   sits on it and any node picks it up when due; a short wait is held (giving up and claiming
//!   a subscription back costs two store round trips, more than a rate-limit pause).
//! - **When it has nothing to do** (an empty queue, or paused, blocked, disabled, faulted), it
//!   releases at once.

use std::time::Duration;

use tokio::time::Instant;

use crate::store::{Lease, Tenure};

/// Slack between the end of an attempt's budget and the lease's local deadline: the store
/// round trips around the attempt (its in-flight mark, its record) and scheduling delays.
pub(crate) const LEASE_MARGIN: Duration = Duration::from_secs(2);

/// The longest wait for which a shared store's lease is held rather than released.
pub(crate) const HOLD_WAIT_MAX: Duration = Duration::from_secs(1);

/// What to do before starting an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BeforeAttempt {
    /// The lease outlives the attempt: start it.
    Go,
    /// Renew the lease first (for [`renew_ttl`]).
    Renew,
    /// A fenced holder may still be sending: wait this long, then decide again.
    Quiet(Duration),
}

/// Whether an attempt with `budget` may start under `lease` at `now`.
pub(crate) fn before_attempt(lease: &Lease, budget: Duration, now: Instant) -> BeforeAttempt {
    let Some(deadline) = lease.deadline() else {
        return BeforeAttempt::Go;
    };
    if let Some(quiet) = lease.quiet_until().filter(|q| *q > now) {
        return BeforeAttempt::Quiet(quiet - now);
    }
    if deadline.saturating_duration_since(now) >= budget + LEASE_MARGIN {
        BeforeAttempt::Go
    } else {
        BeforeAttempt::Renew
    }
}

/// The TTL to renew with: the node's, or longer when one attempt's budget needs more (a
/// subscription whose timeout exceeds the node's TTL must still be able to send).
pub(crate) fn renew_ttl(node_ttl: Duration, budget: Duration) -> Duration {
    node_ttl.max(budget + LEASE_MARGIN * 2)
}

/// The most one attempt may take: its timeout, plus its transform's CPU budget when it has one.
pub(crate) fn attempt_budget(timeout: Duration, transform_cpu: Option<Duration>) -> Duration {
    timeout + transform_cpu.unwrap_or_default()
}

/// What to do when the head must wait `wait` before its next attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnWait {
    /// Keep the lease and wake up after the wait.
    Hold,
    /// Give the subscription up, due again after `due_in`.
    Release { due_in: Duration },
}

/// Whether to hold the lease through a wait of `wait` at `now`.
pub(crate) fn on_wait(tenure: Tenure, lease: &Lease, wait: Duration, now: Instant) -> OnWait {
    if tenure == Tenure::Exclusive {
        return OnWait::Hold;
    }
    let outlives = lease
        .remaining(now)
        .is_none_or(|left| left >= wait + LEASE_MARGIN);
    if wait <= HOLD_WAIT_MAX && outlives {
        OnWait::Hold
    } else {
        OnWait::Release { due_in: wait }
    }
}

/// Whether a subscription with nothing to send (empty queue, or not runnable) is given up.
pub(crate) fn release_when_idle(tenure: Tenure) -> bool {
    tenure == Tenure::Shared
}

/// What to do when a renewal failed for a reason other than a lost lease (the store is
/// unreachable): wait and try again while the lease still holds, give it up once it does not.
pub(crate) fn after_failed_renewal(lease: &Lease, now: Instant) -> Option<Duration> {
    let left = lease.remaining(now)?;
    (!left.is_zero()).then(|| left.min(HOLD_WAIT_MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::SubscriptionId;

    fn sub() -> SubscriptionId {
        SubscriptionId::from("sub_1".to_owned())
    }

    fn expiring(now: Instant, left: Duration, quiet: Option<Duration>) -> Lease {
        Lease::for_test(sub(), 7, Some(now + left), quiet.map(|q| now + q))
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn a_lease_that_never_expires_always_goes_and_holds() {
        let now = Instant::now();
        let lease = Lease::for_test(sub(), 1, None, None);
        assert_eq!(before_attempt(&lease, S(3600), now), BeforeAttempt::Go);
        assert_eq!(
            on_wait(Tenure::Exclusive, &lease, S(3600), now),
            OnWait::Hold
        );
        assert!(!release_when_idle(Tenure::Exclusive));
        assert_eq!(after_failed_renewal(&lease, now), None);
    }

    #[test]
    fn an_attempt_starts_only_if_the_lease_outlives_its_budget_and_the_margin() {
        let now = Instant::now();
        let budget = S(30);
        assert_eq!(
            before_attempt(&expiring(now, S(45), None), budget, now),
            BeforeAttempt::Go
        );
        assert_eq!(
            before_attempt(&expiring(now, budget + LEASE_MARGIN, None), budget, now),
            BeforeAttempt::Go,
            "exactly enough"
        );
        assert_eq!(
            before_attempt(
                &expiring(now, budget + LEASE_MARGIN - Duration::from_millis(1), None),
                budget,
                now
            ),
            BeforeAttempt::Renew
        );
        assert_eq!(
            before_attempt(&expiring(now, Duration::ZERO, None), budget, now),
            BeforeAttempt::Renew,
            "an expired lease is renewed (or found lost), never used"
        );
    }

    #[test]
    fn a_takeover_waits_until_the_fenced_holder_cannot_be_sending() {
        let now = Instant::now();
        let lease = expiring(now, S(45), Some(S(12)));
        assert_eq!(
            before_attempt(&lease, S(1), now),
            BeforeAttempt::Quiet(S(12))
        );
        assert_eq!(before_attempt(&lease, S(1), now + S(12)), BeforeAttempt::Go);
    }

    #[test]
    fn renewals_cover_attempts_longer_than_the_ttl() {
        assert_eq!(renew_ttl(S(45), S(30)), S(45));
        assert_eq!(renew_ttl(S(45), S(120)), S(120) + LEASE_MARGIN * 2);
        assert_eq!(attempt_budget(S(30), None), S(30));
        assert_eq!(
            attempt_budget(S(30), Some(Duration::from_millis(100))),
            Duration::from_millis(30_100)
        );
    }

    #[test]
    fn a_shared_lease_is_held_only_through_short_waits_it_outlives() {
        let now = Instant::now();
        let lease = expiring(now, S(45), None);
        let shared = Tenure::Shared;
        assert_eq!(
            on_wait(shared, &lease, Duration::from_millis(200), now),
            OnWait::Hold
        );
        assert_eq!(on_wait(shared, &lease, HOLD_WAIT_MAX, now), OnWait::Hold);
        assert_eq!(
            on_wait(shared, &lease, S(10), now),
            OnWait::Release { due_in: S(10) },
            "a retry backoff is released with its due time"
        );
        let short = expiring(now, Duration::from_millis(500), None);
        assert_eq!(
            on_wait(shared, &short, Duration::from_millis(200), now),
            OnWait::Release {
                due_in: Duration::from_millis(200)
            },
            "a lease about to expire is not held through a wait"
        );
        assert!(release_when_idle(shared));
    }

    #[test]
    fn a_failed_renewal_is_retried_only_while_the_lease_holds() {
        let now = Instant::now();
        assert_eq!(
            after_failed_renewal(&expiring(now, S(10), None), now),
            Some(HOLD_WAIT_MAX)
        );
        assert_eq!(
            after_failed_renewal(&expiring(now, Duration::from_millis(300), None), now),
            Some(Duration::from_millis(300))
        );
        assert_eq!(
            after_failed_renewal(&expiring(now, S(10), None), now + S(10)),
            None
        );
    }
}
