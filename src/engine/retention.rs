//! The engine's background tasks around its store: forwarding wakes to the supervisor, and
//! the retention pruner.
//!
//! Both run until the engine's shutdown aborts them; neither holds anything a shutdown must
//! wait for (a prune batch is one store write, committed or not as a whole).

use std::sync::Arc;

use ractor::ActorRef;
use tokio::task::JoinHandle;

use crate::actors::supervisor::SupervisorMsg;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::store::{Retention, SharedStore, WakeReceiver};

/// Hands the store's wakes to the supervisor, which wakes each subscription's actor once
/// however many wakes it had (see `actors::supervisor`).
pub(super) fn forward_wakes(
    mut wakes: WakeReceiver,
    supervisor: ActorRef<SupervisorMsg>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(subs) = wakes.recv().await {
            if supervisor.cast(SupervisorMsg::Wake(subs)).is_err() {
                return;
            }
        }
    })
}

/// Spawns the pruner: a pass every `interval`, batch after batch until a batch comes back
/// short. Each batch is one store write, so deliveries' commits are interleaved with it and
/// never wait for a whole pass.
pub(super) fn spawn_pruner(
    store: SharedStore,
    r: Retention,
    metrics: Arc<Metrics>,
) -> Option<JoinHandle<()>> {
    if !r.enabled {
        return None;
    }
    Some(tokio::spawn(async move {
        loop {
            tokio::time::sleep(r.interval).await;
            loop {
                match store.prune(&r).await {
                    Ok(n) => {
                        metrics.pruned(n);
                        if n >= u64::from(r.batch_size) {
                            tokio::task::yield_now().await;
                            continue;
                        }
                        if n > 0 {
                            tracing::debug!(pruned = n, "retention pass done");
                        }
                        break;
                    }
                    Err(Error::ShuttingDown) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "retention pass failed; retrying later");
                        break;
                    }
                }
            }
        }
    }))
}
