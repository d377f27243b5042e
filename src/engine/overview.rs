//! Reads for the dashboard and `GET /v1/events`: what holds a subscription's queue, how deep
//! every queue is, an event's envelope, a tenant's events by transaction, reference or id with
//! their deliveries, and how attempts went over a window.
//!
//! Each read is one or two indexed store queries and never goes through an actor, like every
//! other read (see `docs/ARCHITECTURE.md`, "Reads"). What they return may be a moment old when
//! it reaches a page: the actor keeps working meanwhile.

use std::collections::HashMap;
use std::time::Duration;

use crate::domain::{
    AttemptStats, Delivery, EventId, EventKey, EventTrace, Subscription, SubscriptionId, TenantId,
};
use crate::error::{Error, Result};

use super::EngineHandle;

/// One subscription's open queue, as the dashboard shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct QueueDepth {
    /// Pending and in-flight deliveries.
    pub depth: u64,
    /// How long the oldest open delivery's event has been waiting since it was accepted.
    pub oldest_age: Duration,
}

impl EngineHandle {
    /// The open queue of every subscription that has one, by subscription id (one grouped
    /// query over the open-deliveries index; subscriptions with nothing open are absent).
    pub(crate) async fn queue_depths(&self) -> Result<HashMap<SubscriptionId, QueueDepth>> {
        Ok(self
            .store()
            .queue_stats()
            .await?
            .into_iter()
            .map(|q| {
                (
                    SubscriptionId::from(q.subscription),
                    QueueDepth {
                        depth: q.depth,
                        oldest_age: q.oldest_age,
                    },
                )
            })
            .collect())
    }

    /// How many keys each keyed subscription has held by a failed delivery, by subscription
    /// id (one grouped read of a small partial index; subscriptions holding none are absent).
    /// The subscription stays `active` meanwhile, so lists show this beside its state.
    pub(crate) async fn held_key_counts(&self) -> Result<HashMap<SubscriptionId, u64>> {
        Ok(self
            .store()
            .held_key_counts()
            .await?
            .into_iter()
            .map(|(sub, n)| (SubscriptionId::from(sub), n))
            .collect())
    }

    /// The delivery holding a subscription's queue: the one it is blocked on, else its first
    /// open (pending or in-flight) delivery in `seq` order, else `None` (nothing waiting).
    pub(crate) async fn head_of_line(&self, sub: &Subscription) -> Result<Option<Delivery>> {
        let head = match sub.blocked_on {
            Some(id) => Some(id),
            None => self
                .store()
                .next_deliveries(&sub.id, 0, 1)
                .await?
                .first()
                .map(|q| q.id),
        };
        match head {
            Some(id) => self.store().get_delivery(id).await,
            None => Ok(None),
        }
    }

    /// The envelope of a delivery's event (the JSON its receivers get), if the event is still
    /// kept (retention prunes finished events).
    pub(crate) async fn event_body(
        &self,
        tenant: &TenantId,
        id: &EventId,
    ) -> Result<Option<String>> {
        self.store().event_body(tenant, id).await
    }

    /// What happened to a tenant's events with this `transactionId`, `referenceId` or id: each
    /// event, newest first (at most `limit`, 1 to 100), with its delivery to every subscription.
    pub async fn find_events(
        &self,
        tenant: &TenantId,
        key: &EventKey,
        limit: u32,
    ) -> Result<Vec<EventTrace>> {
        if !(1..=100).contains(&limit) {
            return Err(Error::invalid("limit", "must be between 1 and 100"));
        }
        self.get_tenant(tenant).await?;
        self.store().events_by_key(tenant, key, limit).await
    }

    /// How the attempts of the last hour and of the last day went (of one tenant's
    /// subscriptions, or all): two grouped scans of the day's attempts, both windows derived
    /// from them.
    pub(crate) async fn attempt_stats(
        &self,
        tenant: Option<&TenantId>,
    ) -> Result<(AttemptStats, AttemptStats)> {
        let now = crate::domain::clock::now_ms();
        let hour_ago = now.saturating_sub(3_600_000);
        let rollup = self
            .store()
            .attempt_rollup(tenant, now.saturating_sub(86_400_000), hour_ago)
            .await?;
        Ok((rollup.stats(true, hour_ago), rollup.stats(false, hour_ago)))
    }

    /// Attempts per hour of each of `subs` over the last 24 hours (the subscriptions list's
    /// sparklines): `(hour start in ms, succeeded, failed)` by subscription, hours without
    /// attempts absent. One indexed read of those subscriptions' rollup rows.
    pub(crate) async fn attempt_hours(
        &self,
        subs: &[SubscriptionId],
    ) -> Result<HashMap<SubscriptionId, Vec<(i64, u64, u64)>>> {
        let since = crate::domain::clock::now_ms().saturating_sub(86_400_000);
        let mut out: HashMap<SubscriptionId, Vec<(i64, u64, u64)>> = HashMap::new();
        for h in self.store().attempt_hours(subs, since).await? {
            out.entry(h.subscription)
                .or_default()
                .push((h.minute_ms, h.succeeded, h.failed));
        }
        Ok(out)
    }
}
