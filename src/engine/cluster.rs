//! This node in the cluster: its heartbeat task, the cluster view operators read
//! (`GET /v1/cluster`), following the tenants' rate limits other nodes change, and the
//! hand-over of its leases at shutdown.
//!
//! The heartbeat is for operators only: no lease depends on it (a node that stops renewing
//! loses its subscriptions when their leases expire, heartbeat or not), so a missed beat is
//! logged and nothing else happens.

use std::time::Duration;

use tokio::task::JoinHandle;

use super::EngineHandle;
use crate::actors::SharedCtx;
use crate::domain::{ClusterNode, ClusterView, Timestamp};
use crate::error::Result;
use crate::policy::ratelimit::Limiters;
use crate::store::{SharedStore, Tenure};

/// How often a node beats: a third of the lease TTL, between 1 s and 10 s.
pub(crate) fn heartbeat_every(lease_ttl: Duration) -> Duration {
    (lease_ttl / 3).clamp(Duration::from_secs(1), Duration::from_secs(10))
}

/// A node is shown silent after three missed beats.
pub(crate) fn silent_after(lease_ttl: Duration) -> Duration {
    heartbeat_every(lease_ttl) * 3
}

/// Reads the tenants' rate limits again whenever the store says one may have changed (a
/// `PATCH /v1/tenants/{id}` or a tenant created with a limit, on any node), until the engine's
/// shutdown aborts it. A read that fails is tried again after a second: a node keeps the
/// limits it knew meanwhile.
pub(super) fn follow_tenant_limits(
    store: SharedStore,
    limiters: Limiters,
    mut changes: tokio::sync::watch::Receiver<u64>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        while changes.changed().await.is_ok() {
            loop {
                match store.tenant_rate_limits().await {
                    Ok(limits) => {
                        limiters.set_tenant_limits(
                            limits
                                .into_iter()
                                .map(|(t, l)| (t.as_str().to_owned(), l))
                                .collect(),
                        );
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not read tenants' rate limits; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }
    })
}

/// Beats until the engine's shutdown aborts it.
pub(super) fn spawn_heartbeat(ctx: SharedCtx) -> JoinHandle<()> {
    tokio::spawn(async move {
        let every = heartbeat_every(ctx.lease_ttl);
        loop {
            tokio::time::sleep(every).await;
            if let Err(e) = ctx.store.heartbeat(&ctx.node).await {
                tracing::warn!(node = %ctx.node, error = %e, "heartbeat failed");
            }
        }
    })
}

impl EngineHandle {
    /// The nodes sharing this engine's store, with their heartbeats and the subscriptions each
    /// holds. With SQLite, this process alone.
    pub async fn cluster(&self) -> Result<ClusterView> {
        let ctx = &self.inner.ctx;
        let silent = silent_after(ctx.lease_ttl);
        let silent_ms = u64::try_from(silent.as_millis()).unwrap_or(u64::MAX);
        let nodes = ctx
            .store
            .nodes()
            .await?
            .into_iter()
            .map(|n| ClusterNode {
                this_node: n.id == ctx.node,
                id: n.id.to_string(),
                version: n.version,
                started_at: Timestamp::from_ms(n.started_at_ms),
                heartbeat_at: Timestamp::from_ms(n.heartbeat_at_ms),
                heartbeat_age_ms: n.heartbeat_age_ms,
                alive: n.heartbeat_age_ms <= silent_ms,
                subscriptions_held: n.leases,
            })
            .collect();
        Ok(ClusterView {
            node: ctx.node.to_string(),
            store: match ctx.tenure {
                Tenure::Exclusive => "exclusive",
                Tenure::Shared => "shared",
            }
            .to_owned(),
            lease_ttl_ms: u64::try_from(ctx.lease_ttl.as_millis()).unwrap_or(u64::MAX),
            silent_after_ms: silent_ms,
            nodes,
        })
    }

    /// Hands this node's subscriptions over at once (a clean stop): only when no attempt was
    /// abandoned, since another node may start as soon as the leases are released.
    pub(super) async fn release_leases(&self, drained: bool) {
        let ctx = &self.inner.ctx;
        if !drained {
            if ctx.tenure == Tenure::Shared {
                tracing::warn!("attempts were abandoned: leaving this node's leases to expire");
            }
            return;
        }
        match ctx.store.release_all(&ctx.node).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(released = n, "handed this node's subscriptions over"),
            Err(e) => {
                tracing::warn!(error = %e, "could not release this node's leases; they expire on their own")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_follow_the_lease_within_bounds() {
        let s = Duration::from_secs;
        assert_eq!(heartbeat_every(s(45)), s(10));
        assert_eq!(heartbeat_every(s(6)), s(2));
        assert_eq!(heartbeat_every(s(1)), s(1));
        assert_eq!(silent_after(s(45)), s(30));
    }
}
