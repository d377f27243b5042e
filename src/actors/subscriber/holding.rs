//! Holding the subscription's lease: taking it, adopting a claimed one, renewing it before an
//! attempt, giving it up, and stopping all work when it is lost (guarantee 8).
//!
//! The decisions are `tenure`'s pure functions; this file carries them out against the store.
//! With an exclusive store none of it runs on the delivery path: its leases never expire, so
//! no renewal, and are never given up.

use std::time::Duration;

use ractor::ActorRef;
use tokio::time::Instant;

use super::queue::Prefetch;
use super::tenure::{self, BeforeAttempt, OnWait};
use super::{SubscriberMsg, SubscriberState, held};
use crate::actors::supervisor::SupervisorMsg;
use crate::domain::DeliveryId;
use crate::error::{Error, Result};
use crate::store::Lease;

/// How long a subscription whose open deliveries all wait behind held keys stays unclaimed,
/// unless a publish or an operator's command wakes it first (see [`SubscriberState::idle_held`]).
pub(super) const HELD_RECHECK: Duration = Duration::from_secs(3600);

/// Whether an attempt may start now, after whatever the lease needed.
pub(super) enum Cleared {
    Go,
    /// Not now: a timer (or nothing, when the lease is gone) takes it up again.
    NotNow,
}

impl SubscriberState {
    /// Advances the queue, turning a lost lease into an idle actor rather than a failure.
    pub(super) async fn step(&mut self, myself: &ActorRef<SubscriberMsg>) -> Result<()> {
        match self.advance(myself).await {
            Err(Error::LeaseLost { .. }) => {
                self.lost(myself);
                Ok(())
            }
            other => other,
        }
    }

    /// Takes the subscription's lease by force (fencing any holder), as this node.
    pub(super) async fn take_over(&mut self) -> Result<Lease> {
        let budget = self.attempt_budget();
        let ttl = tenure::renew_ttl(self.ctx.lease_ttl, budget);
        self.ctx
            .store
            .take_over(&self.ctx.node, &self.row.id, ttl)
            .await
    }

    /// Starts working under a new lease: the subscription may have changed while another node
    /// held it, so its settings and queue are read again.
    pub(super) async fn adopt(&mut self, lease: Lease) -> Result<()> {
        if let Some(held) = &self.lease
            && held.token() > lease.token()
        {
            // A claim that lost to this actor's own takeover (for a command) on its way here:
            // already fenced, and the lease held is the newer one.
            return Ok(());
        }
        let pace = lease.pace_ahead();
        self.lease = Some(lease);
        if let Some(row) = self.ctx.store.get_subscription(&self.row.id).await? {
            self.pacer.reconfigure(row.spec.rate_limit.clone());
            self.row = row;
        }
        // Another node may have sent for it since this actor last did.
        self.pacer.resume(pace);
        self.queue = Prefetch::default();
        // Read again under the new lease; attempts still in flight from the old one keep
        // their keys busy until they end, and are not recorded (see `keyed`).
        self.keyed = None;
        self.cancel_timer();
        Ok(())
    }

    /// The longest one attempt of this subscription may take.
    pub(super) fn attempt_budget(&self) -> Duration {
        let spec = &self.row.spec;
        let cpu = spec
            .transform
            .as_ref()
            .map(|_| self.ctx.config.transform_limits.cpu);
        tenure::attempt_budget(Duration::from_millis(spec.timeout_ms), cpu)
    }

    /// Whether the head (`delivery`) may be attempted under the lease now: renews it first when
    /// it would not outlive the attempt, and waits while a fenced holder may still be sending.
    pub(super) async fn clear_for_attempt(
        &mut self,
        myself: &ActorRef<SubscriberMsg>,
        delivery: DeliveryId,
    ) -> Result<Cleared> {
        let lease = held(&self.lease, &self.row.id)?;
        if lease.deadline().is_none() {
            return Ok(Cleared::Go); // an exclusive store's lease: nothing to check
        }
        let budget = self.attempt_budget();
        match tenure::before_attempt(lease, budget, Instant::now()) {
            BeforeAttempt::Go => Ok(Cleared::Go),
            BeforeAttempt::Quiet(wait) => {
                self.wake_later(myself, delivery, wait);
                Ok(Cleared::NotNow)
            }
            BeforeAttempt::Renew => {
                let ttl = tenure::renew_ttl(self.ctx.lease_ttl, budget);
                match self.ctx.store.renew(lease, ttl).await {
                    Ok(renewed) => {
                        self.lease = Some(renewed);
                        Ok(Cleared::Go)
                    }
                    Err(e @ Error::LeaseLost { .. }) => Err(e),
                    Err(e) => match tenure::after_failed_renewal(lease, Instant::now()) {
                        Some(wait) => {
                            tracing::warn!(subscription = %self.row.id, error = %e, "lease renewal failed; not sending until it succeeds");
                            self.wake_later(myself, delivery, wait);
                            Ok(Cleared::NotNow)
                        }
                        None => Err(Error::LeaseLost {
                            subscription: self.row.id.to_string(),
                        }),
                    },
                }
            }
        }
    }

    /// Whether the lease lets the next delivery be marked in flight in the commit of the
    /// previous outcome (its attempt starts right after, without another check).
    pub(super) fn lease_allows_next(&self) -> bool {
        self.lease.as_ref().is_some_and(|l| {
            tenure::before_attempt(l, self.attempt_budget(), Instant::now()) == BeforeAttempt::Go
        })
    }

    /// The head (`delivery`) must wait `wait`: a timer if the lease is held through it, else
    /// the subscription is given up, due again after the wait.
    pub(super) async fn wait_for(
        &mut self,
        myself: &ActorRef<SubscriberMsg>,
        delivery: DeliveryId,
        wait: Duration,
    ) -> Result<()> {
        let lease = held(&self.lease, &self.row.id)?;
        match tenure::on_wait(self.ctx.tenure, lease, wait, Instant::now()) {
            OnWait::Hold => {
                self.wake_later(myself, delivery, wait);
                Ok(())
            }
            OnWait::Release { due_in } => self.give_up(myself, due_in).await,
        }
    }

    /// Nothing to send (empty queue, or the subscription may not run): a shared store's lease
    /// is given up so the subscription is claimed wherever its next work arrives.
    pub(super) async fn idle(&mut self, myself: &ActorRef<SubscriberMsg>) -> Result<()> {
        if self.draining || self.lease.is_none() || !tenure::release_when_idle(self.ctx.tenure) {
            return Ok(());
        }
        self.give_up(myself, Duration::ZERO).await
    }

    /// Nothing may start until an operator frees a held key or new events arrive (ordering
    /// keys: every open delivery waits behind a held key). A shared store's lease is given up
    /// due only after [`HELD_RECHECK`]: due at once, the open deliveries would have it claimed
    /// and given up again in a loop; a publish to a keyed subscription makes it due again, and
    /// an operator's command takes it over.
    pub(super) async fn idle_held(&mut self, myself: &ActorRef<SubscriberMsg>) -> Result<()> {
        if self.draining || self.lease.is_none() || !tenure::release_when_idle(self.ctx.tenure) {
            return Ok(());
        }
        self.give_up(myself, HELD_RECHECK).await
    }

    /// Releases the lease, due again after `due_in`, and reports the actor idle.
    async fn give_up(&mut self, myself: &ActorRef<SubscriberMsg>, due_in: Duration) -> Result<()> {
        if let Some(lease) = self.lease.take() {
            let pace = self.pacer.ahead(std::time::Instant::now());
            // With ordering keys, work may remain that new events of other keys need not wait
            // for: a publish racing this release makes the subscription due at once.
            let seen = self.keyed.as_ref().map(super::lanes::Lanes::read_after);
            let released = match seen {
                Some(seen) if !due_in.is_zero() => {
                    let store = &self.ctx.store;
                    store.release_after(&lease, due_in, pace, seen).await
                }
                _ => self.ctx.store.release(&lease, due_in, pace).await,
            };
            match released {
                Ok(()) | Err(Error::LeaseLost { .. }) => {}
                // It expires on its own; a claim after that takes the subscription up.
                Err(e) => {
                    tracing::warn!(subscription = %self.row.id, error = %e, "could not release a lease")
                }
            }
        }
        self.lost(myself);
        Ok(())
    }

    /// The lease is gone (given up, fenced or expired): nothing more is written or sent under
    /// it. Once no attempt is in flight (on any lane) the actor reports itself idle; the
    /// supervisor stops it unless a new lease is on its way.
    pub(super) fn lost(&mut self, myself: &ActorRef<SubscriberMsg>) {
        if let Some(lease) = self.lease.take() {
            tracing::info!(subscription = %self.row.id, token = lease.token(), "lease lost; stopping work on this subscription");
        }
        self.cancel_timer();
        self.pacer
            .forfeit(&self.ctx.limiters, self.row.tenant_id.as_str());
        self.queue = Prefetch::default();
        self.keyed = None;
        if !self.busy() {
            let _ = self.supervisor.cast(SupervisorMsg::Idle {
                sub: self.row.id.clone(),
                actor: myself.get_id(),
                grants: self.grants,
            });
        }
    }
}
