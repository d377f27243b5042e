//! Reads for the dashboard: what holds a subscription's queue, and how deep every queue is.
//!
//! Each read is one or two indexed store queries and never goes through an actor, like every
//! other read (see `docs/ARCHITECTURE.md`, "Reads"). What they return may be a moment old when
//! it reaches a page: the actor keeps working meanwhile.

use std::collections::HashMap;
use std::time::Duration;

use crate::domain::{Delivery, Subscription, SubscriptionId};
use crate::error::Result;

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
}
