//! The operator's commands on a subscription and its deliveries, carried out by the actor that
//! is the only writer of its state, and answered once their store write committed.
//!
//! A command never touches an attempt in flight: a skip of the delivery being attempted (on
//! any lane) is refused, and a skip, resubmit or replay make the queue (or the key heads, with
//! ordering keys) rebuild from the store before the next attempt. With ordering keys, a skip
//! or resubmit of a delivery that holds its key frees that key only (the store clears the hold
//! in the same commit).

use std::time::Duration;

use super::{Command, Reply, SubscriberState, held};
use crate::domain::clock::now_ms;
use crate::domain::{Delivery, DeliveryId, DeliveryStatus, Subscription, SubscriptionPatch};
use crate::error::{Error, Result};
use crate::metrics::Outcome;
use crate::store::{FlagChange, Tenure};

impl SubscriberState {
    /// Carries out `cmd` and answers it. Returns true when the subscription was deleted.
    pub(super) async fn command(&mut self, cmd: Command) -> bool {
        // Every command is the queue holder's: none is carried out without the lease. With a
        // shared store, a node that does not hold it takes it over, fencing the holder, whose
        // next write is refused (it stops at once) and which reloads the subscription when it
        // next claims it.
        if self.lease.is_none() && self.ctx.tenure == Tenure::Shared {
            let taken = match self.take_over().await {
                Ok(lease) => self.adopt(lease).await,
                Err(e) => Err(e),
            };
            if let Err(e) = taken {
                cmd.refuse(e);
                return false;
            }
        }
        if let Err(e) = held(&self.lease, &self.row.id) {
            cmd.refuse(e);
            return false;
        }
        match cmd {
            Command::Pause(reply) => answer(reply, self.pause().await),
            Command::Resume(reply) => answer(reply, self.resume().await),
            Command::Update(patch, reply) => answer(reply, self.update(*patch).await),
            Command::RotateSecret {
                secret,
                grace,
                reply,
            } => answer(reply, self.rotate_secret(secret, grace).await),
            Command::Delete(reply) => {
                let result = self.delete().await;
                let deleted = result.is_ok();
                answer(reply, result);
                return deleted;
            }
            Command::Skip(id, reply) => answer(reply, self.skip(id).await),
            Command::Resubmit(id, reply) => answer(reply, self.resubmit(id).await),
            Command::Replay {
                since_ms,
                until_ms,
                reply,
            } => answer(reply, self.replay(since_ms, until_ms).await),
        }
        false
    }

    async fn pause(&mut self) -> Result<Subscription> {
        let flags = FlagChange {
            paused: Some(true),
            ..FlagChange::default()
        };
        let lease = held(&self.lease, &self.row.id)?;
        self.row = self.ctx.store.set_queue_flags(lease, flags).await?;
        Ok(self.row.to_public())
    }

    async fn resume(&mut self) -> Result<Subscription> {
        let flags = FlagChange {
            paused: Some(false),
            disabled_reason: Some(None),
            faulted_reason: Some(None),
            ..FlagChange::default()
        };
        let lease = held(&self.lease, &self.row.id)?;
        self.row = self.ctx.store.set_queue_flags(lease, flags).await?;
        Ok(self.row.to_public())
    }

    async fn update(&mut self, patch: SubscriptionPatch) -> Result<Subscription> {
        let spec = self.row.spec.apply(patch, self.ctx.sender.policy())?;
        // A changed token endpoint or credentials must not reuse a cached token.
        self.ctx.sender.forget(&self.row.id);
        self.row = self
            .ctx
            .store
            .update_spec(self.row.id.clone(), spec)
            .await?;
        self.pacer.reconfigure(self.row.spec.rate_limit.clone());
        if let Some(l) = self.keyed.as_mut() {
            l.set_cap(super::keyed::read_limit(
                self.row.spec.lanes(),
                self.ctx.config.actor_prefetch,
            ));
        }
        Ok(self.row.to_public())
    }

    async fn rotate_secret(
        &mut self,
        secret: Option<String>,
        grace: Duration,
    ) -> Result<Subscription> {
        let mut spec = self.row.spec.clone();
        spec.signing = spec
            .signing
            .rotate(secret.as_deref(), grace, now_ms())
            .map_err(|e| Error::invalid("secret", e))?;
        self.row = self
            .ctx
            .store
            .update_spec(self.row.id.clone(), spec)
            .await?;
        let mut public = self.row.to_public();
        public.secret = Some(self.row.spec.signing.secret.clone());
        Ok(public)
    }

    async fn delete(&mut self) -> Result<()> {
        self.ctx
            .store
            .delete_subscription(self.row.id.clone())
            .await?;
        self.ctx.sender.forget(&self.row.id);
        Ok(())
    }

    async fn skip(&mut self, id: DeliveryId) -> Result<Delivery> {
        let d = self.own_delivery(id).await?;
        if self.in_flight.as_ref().is_some_and(|f| f.delivery == id)
            || self.attempts.contains_key(&id)
        {
            return Err(Error::Conflict(format!(
                "delivery {id} is being attempted right now; try again when the attempt ends"
            )));
        }
        if !matches!(d.status, DeliveryStatus::Pending | DeliveryStatus::Failed) {
            return Err(Error::Conflict(format!(
                "delivery {id} is {}; only pending or failed deliveries can be skipped",
                d.status.as_str()
            )));
        }
        let unblocking = self.row.blocked_on == Some(id.raw());
        let lease = held(&self.lease, &self.row.id)?;
        self.ctx
            .store
            .set_delivery_status(lease, id, DeliveryStatus::Skipped, false, unblocking)
            .await?;
        self.ctx.metrics.deliveries(Outcome::Skipped, 1);
        self.queue.remove(id);
        if let Some(l) = self.keyed.as_mut() {
            l.rebuild();
        }
        if self.timer.as_ref().is_some_and(|t| t.delivery == id) {
            self.cancel_timer();
        }
        if unblocking {
            self.row.blocked_on = None;
            self.recovering = Some(id);
        }
        self.own_delivery(id).await
    }

    async fn resubmit(&mut self, id: DeliveryId) -> Result<Delivery> {
        let d = self.own_delivery(id).await?;
        if d.status != DeliveryStatus::Failed {
            return Err(Error::Conflict(format!(
                "delivery {id} is {}; only failed deliveries can be resubmitted",
                d.status.as_str()
            )));
        }
        let unblocking = self.row.blocked_on == Some(id.raw());
        let lease = held(&self.lease, &self.row.id)?;
        self.ctx
            .store
            .set_delivery_status(lease, id, DeliveryStatus::Pending, true, unblocking)
            .await?;
        if unblocking {
            self.row.blocked_on = None;
            self.recovering = Some(id);
        }
        // It goes back in its place in the order: rebuild the queue from the store.
        self.cancel_timer();
        self.queue.rebuild();
        if let Some(l) = self.keyed.as_mut() {
            l.rebuild();
        }
        self.own_delivery(id).await
    }

    async fn replay(&mut self, since_ms: i64, until_ms: i64) -> Result<u64> {
        let store = &self.ctx.store;
        let lease = held(&self.lease, &self.row.id)?;
        let n = store.replay(lease, since_ms, until_ms).await?;
        self.ctx.metrics.deliveries(Outcome::Replayed, n);
        if n > 0 {
            // Replayed deliveries take their places in `seq` order, ahead of the pending ones
            // after them: rebuild the queue (and the blocked flag) from the store.
            if let Some(row) = store.get_subscription(&self.row.id).await? {
                self.row.blocked_on = row.blocked_on;
            }
            self.cancel_timer();
            self.queue.rebuild();
            if let Some(l) = self.keyed.as_mut() {
                l.rebuild();
            }
        }
        Ok(n)
    }

    /// A delivery of this subscription, as the store has it now.
    async fn own_delivery(&self, id: DeliveryId) -> Result<Delivery> {
        match self.ctx.store.get_delivery(id).await? {
            Some(d) if d.subscription_id == self.row.id => Ok(d),
            _ => Err(Error::not_found("delivery", id)),
        }
    }
}

impl Command {
    /// Answers the command with `e` without carrying it out.
    fn refuse(self, e: Error) {
        match self {
            Command::Pause(reply) | Command::Resume(reply) => answer(reply, Err(e)),
            Command::Update(_, reply) | Command::RotateSecret { reply, .. } => {
                answer(reply, Err(e))
            }
            Command::Delete(reply) => answer(reply, Err(e)),
            Command::Skip(_, reply) | Command::Resubmit(_, reply) => answer(reply, Err(e)),
            Command::Replay { reply, .. } => answer(reply, Err(e)),
        }
    }
}

/// Sends a command's answer; a caller that gave up waiting no longer needs it.
fn answer<T>(reply: Reply<T>, result: Result<T>) {
    let _ = reply.send(result);
}
