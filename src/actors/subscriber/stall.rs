//! Waiting out a journal that cannot write.
//!
//! A store write that fails with `Unavailable` (disk full, I/O error) or `Overloaded` says
//! nothing about this subscription: failing the actor for it would restart it in a loop until
//! the supervisor marks the subscription faulted, for a condition that clears by itself. So the
//! actor keeps what it could not write and tries again after a backoff (doubling from
//! [`FIRST_WAIT`] up to [`MAX_WAIT`]), starting nothing meanwhile:
//! - an attempt's outcome that could not be recorded is kept as it is ([`Unrecorded`]) and
//!   recorded first, so the queue's order and the attempt log are those of an uneventful run
//!   (a receiver's 2xx is never sent again for it, unless the process dies meanwhile); with
//!   ordering keys there may be one per key that was in flight, each recorded before its key
//!   moves on;
//! - an in-flight mark or a queue refill that failed is simply done again by `advance`.

use std::time::Duration;

use ractor::ActorRef;

use super::{AbortOnDrop, SubscriberMsg, SubscriberState};
use crate::error::Error;
use crate::store::AttemptRecord;

/// First wait after a failed write.
const FIRST_WAIT: Duration = Duration::from_millis(100);
/// Longest wait between two tries.
const MAX_WAIT: Duration = Duration::from_secs(5);

/// An attempt's outcome the journal could not take yet.
pub(super) struct Unrecorded {
    pub record: AttemptRecord,
    pub span: tracing::Span,
    pub duration: Duration,
}

/// The actor's state of waiting for the journal.
pub(super) struct Stall {
    /// The timer that sends [`SubscriberMsg::RetryStore`], while one is set.
    retry: Option<AbortOnDrop>,
    wait: Duration,
    /// The outcome to record before anything else happens.
    pub unrecorded: Option<Unrecorded>,
    /// The same with ordering keys: at most one per key (see `keyed`).
    pub unrecorded_keyed: Vec<Unrecorded>,
}

impl Default for Stall {
    fn default() -> Self {
        Stall {
            retry: None,
            wait: FIRST_WAIT,
            unrecorded: None,
            unrecorded_keyed: Vec::new(),
        }
    }
}

impl Stall {
    /// Whether the actor waits for the journal (and so starts nothing).
    pub(super) fn stalled(&self) -> bool {
        self.retry.is_some() || self.unrecorded.is_some() || !self.unrecorded_keyed.is_empty()
    }

    /// Whether the timer of the next try is set (no write should be tried before it fires).
    pub(super) fn retry_set(&self) -> bool {
        self.retry.is_some()
    }

    /// A write went through: the next failure starts from the first wait again.
    pub(super) fn cleared(&mut self) {
        self.wait = FIRST_WAIT;
    }

    /// The timer fired.
    pub(super) fn fired(&mut self) {
        self.retry = None;
    }
}

/// Whether a failed store write is the journal's condition, which passes, rather than this
/// subscription's.
pub(super) fn waits_for_journal(e: &Error) -> bool {
    matches!(e, Error::Unavailable { .. } | Error::Overloaded)
}

/// The next wait after `wait`.
fn next_wait(wait: Duration) -> Duration {
    (wait * 2).min(MAX_WAIT)
}

impl SubscriberState {
    /// Sets the timer that makes the actor try its writes again.
    pub(super) fn retry_store_later(&mut self, myself: &ActorRef<SubscriberMsg>, e: &Error) {
        let wait = self.stall.wait;
        self.stall.wait = next_wait(wait);
        tracing::debug!(subscription = %self.row.id, error = %e, ?wait, "journal write failed; trying again");
        let me = myself.clone();
        let task = self.ctx.tasks.spawn(async move {
            tokio::time::sleep(wait).await;
            let _ = me.cast(SubscriberMsg::RetryStore);
        });
        self.stall.retry = Some(AbortOnDrop(task.abort_handle()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_bound() {
        let mut w = FIRST_WAIT;
        let mut seen = vec![w];
        for _ in 0..8 {
            w = next_wait(w);
            seen.push(w);
        }
        assert_eq!(seen[1], Duration::from_millis(200));
        assert_eq!(*seen.last().expect("waits"), MAX_WAIT);
        assert!(seen.windows(2).all(|p| p[1] >= p[0]));
    }

    #[test]
    fn only_journal_conditions_are_waited_out() {
        assert!(waits_for_journal(&Error::Overloaded));
        assert!(waits_for_journal(&Error::Unavailable {
            message: "disk full".into(),
            source: None
        }));
        assert!(!waits_for_journal(&Error::ShuttingDown));
        assert!(!waits_for_journal(&Error::LeaseLost {
            subscription: "s".into()
        }));
    }
}
