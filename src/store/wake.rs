//! Wakes: which subscriptions have new deliveries, from the store to the supervisor.
//!
//! A store reports, after each commit that created deliveries, the subscriptions that received
//! them ([`WakeSender::wake`]); the engine hands the [`WakeReceiver`] to the supervisor's side,
//! which wakes those subscriptions' actors. The channel coalesces: the pending wakes are a set,
//! so a burst of commits for one subscription is one wake, and the memory it holds is bounded
//! by the number of subscriptions however far behind the receiver is. The sender never waits.
//!
//! A wake is a hint, never the source of truth: an actor reads its queue from the store, so a
//! wake that arrives late or twice costs a read, never a delivery. That is also what lets a
//! shared store feed this channel from other processes (e.g. PostgreSQL's LISTEN/NOTIFY).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

use crate::domain::SubscriptionId;

/// A channel of wakes: the store keeps the sender, the engine the receiver.
pub(crate) fn wake_channel() -> (WakeSender, WakeReceiver) {
    let shared = Arc::new(Shared {
        pending: Mutex::new(Pending {
            subs: HashSet::new(),
            closed: false,
        }),
        notify: Notify::new(),
    });
    (WakeSender(shared.clone()), WakeReceiver(shared))
}

struct Shared {
    pending: Mutex<Pending>,
    notify: Notify,
}

struct Pending {
    subs: HashSet<SubscriptionId>,
    /// The sender is gone: no wake will ever come again.
    closed: bool,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        // Only sets are swapped or extended under the lock: a panic cannot leave it torn.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The store's end: reports subscriptions with new deliveries.
pub(crate) struct WakeSender(Arc<Shared>);

impl WakeSender {
    /// Adds `subs` to the pending wakes (taking the set without copying when none are pending).
    pub(crate) fn wake(&self, subs: HashSet<SubscriptionId>) {
        if subs.is_empty() {
            return;
        }
        {
            let mut p = self.0.lock();
            if p.subs.is_empty() {
                p.subs = subs;
            } else {
                p.subs.extend(subs);
            }
        }
        self.0.notify.notify_one();
    }
}

impl Drop for WakeSender {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.notify.notify_one();
    }
}

impl std::fmt::Debug for WakeSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WakeSender")
    }
}

/// The engine's end: every subscription woken since the last call, once each.
pub(crate) struct WakeReceiver(Arc<Shared>);

impl WakeReceiver {
    /// Waits for wakes and takes all that are pending; `None` once the store closed and every
    /// wake was taken.
    pub(crate) async fn recv(&mut self) -> Option<Vec<SubscriptionId>> {
        loop {
            {
                let mut p = self.0.lock();
                if !p.subs.is_empty() {
                    return Some(std::mem::take(&mut p.subs).into_iter().collect());
                }
                if p.closed {
                    return None;
                }
            }
            // `notify_one` keeps a permit when nobody waits, so a wake sent between the check
            // above and this await is not missed.
            self.0.notify.notified().await;
        }
    }
}

impl std::fmt::Debug for WakeReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WakeReceiver")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[&str]) -> HashSet<SubscriptionId> {
        ids.iter().map(|s| SubscriptionId::from(*s)).collect()
    }

    #[tokio::test]
    async fn a_burst_is_one_wake_per_subscription_and_close_ends_the_stream() {
        let (tx, mut rx) = wake_channel();
        tx.wake(set(&["a", "b"]));
        tx.wake(set(&["a"]));
        tx.wake(HashSet::new());
        let mut got = rx.recv().await.expect("wakes");
        got.sort();
        assert_eq!(
            got,
            vec![SubscriptionId::from("a"), SubscriptionId::from("b")]
        );
        tx.wake(set(&["c"]));
        drop(tx);
        assert_eq!(rx.recv().await, Some(vec![SubscriptionId::from("c")]));
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken() {
        let (tx, mut rx) = wake_channel();
        let waiter = tokio::spawn(async move { rx.recv().await });
        tokio::task::yield_now().await;
        tx.wake(set(&["a"]));
        let got = waiter.await.expect("task");
        assert_eq!(got, Some(vec![SubscriptionId::from("a")]));
    }
}
