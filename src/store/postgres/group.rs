//! Group commit of publishes: concurrent publishes on this node share one transaction.
//!
//! Every publish locks the order counters (`sub_tail`) of the subscriptions it fans out to
//! until its commit, and a durable commit waits for PostgreSQL's WAL flush: publishes to the
//! same subscriptions would each wait for the previous one's flush, so a node could accept no
//! more events per second than flushes. Instead a publish queues its events, and a few
//! committer tasks each take everything queued (up to [`GROUP_EVENTS`]) into one transaction
//! ([`PgStore::publish_tx`]), then answer each publish with its own receipts. A lone publish
//! is a group of one; nothing waits for a group to fill.
//!
//! A publish whose caller goes away still commits with its group (as a publish whose `COMMIT`
//! was already sent would): an event id makes publishing again harmless. A group that fails
//! fails every publish in it, none of which committed.

use std::sync::{Arc, Weak};

use tokio::sync::{Mutex, mpsc, oneshot};

use super::{Inner, PgStore};
use crate::domain::{Event, PublishReceipt};
use crate::error::{Error, Result};

/// Committer tasks: while one waits for its commit, another gathers and writes the next group.
pub(super) const COMMITTERS: usize = 2;

/// Most events in one group (one publish larger than this is a group of its own).
const GROUP_EVENTS: usize = 1_000;

/// What a publish gets back: its events' receipts, in order.
type Receipts = Result<Vec<Result<PublishReceipt>>>;

/// One publish waiting for its group.
pub(super) struct Queued {
    events: Vec<Event>,
    reply: oneshot::Sender<Receipts>,
}

/// The publishing side of the queue.
pub(super) type Publishes = mpsc::UnboundedSender<Queued>;

/// The queue and its committer tasks, which hold the store weakly: they end with it.
pub(super) fn start() -> (Publishes, impl FnOnce(&Arc<Inner>)) {
    let (tx, rx) = mpsc::unbounded_channel();
    let spawn = move |inner: &Arc<Inner>| {
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..COMMITTERS {
            tokio::spawn(committer(rx.clone(), Arc::downgrade(inner)));
        }
    };
    (tx, spawn)
}

impl PgStore {
    /// Publishes `events` with whatever other publishes are queued; their receipts.
    pub(super) async fn grouped(&self, events: Vec<Event>) -> Receipts {
        let (reply, answer) = oneshot::channel();
        self.inner
            .publishes
            .send(Queued { events, reply })
            .map_err(|_| Error::ShuttingDown)?;
        answer.await.map_err(|_| Error::ShuttingDown)?
    }
}

async fn committer(queue: Arc<Mutex<mpsc::UnboundedReceiver<Queued>>>, store: Weak<Inner>) {
    loop {
        let mut group = Vec::new();
        {
            let mut rx = queue.lock().await;
            let Some(first) = rx.recv().await else { return };
            let mut n = first.events.len();
            group.push(first);
            while n < GROUP_EVENTS {
                let Ok(next) = rx.try_recv() else { break };
                n += next.events.len();
                group.push(next);
            }
        }
        let Some(inner) = store.upgrade() else { return };
        let store_now = PgStore { inner };
        let sizes: Vec<usize> = group.iter().map(|q| q.events.len()).collect();
        let (events, replies): (Vec<Vec<Event>>, Vec<oneshot::Sender<Receipts>>) =
            group.into_iter().map(|q| (q.events, q.reply)).unzip();
        let result = store_now
            .publish_tx(events.into_iter().flatten().collect())
            .await;
        drop(store_now);
        match result {
            Ok(receipts) => {
                let mut receipts = receipts.into_iter();
                for (size, reply) in sizes.into_iter().zip(replies) {
                    let _ = reply.send(Ok(receipts.by_ref().take(size).collect()));
                }
            }
            Err(e) => {
                let mut replies = replies.into_iter();
                // Every publish but the last gets a copy; the last, the error itself.
                let last = replies.next_back();
                for reply in replies {
                    let _ = reply.send(Err(again(&e)));
                }
                if let Some(reply) = last {
                    let _ = reply.send(Err(e));
                }
            }
        }
    }
}

/// A copy of a failed group's error for one of its publishes (errors are not `Clone`: the
/// copy keeps the kind and the whole message, causes included).
fn again(e: &Error) -> Error {
    match e {
        Error::ShuttingDown => Error::ShuttingDown,
        Error::Overloaded => Error::Overloaded,
        Error::Internal(m) => Error::Internal(m.clone()),
        _ => Error::Unavailable {
            message: crate::error::error_chain(e),
            source: None,
        },
    }
}
