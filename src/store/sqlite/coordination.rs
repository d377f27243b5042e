//! The cluster seam on the SQLite journal: one process owns the file, so it is the only node
//! and every subscription is its own ([`Tenure::Exclusive`]).
//!
//! Nothing here touches the delivery path: leases never expire (no deadline, so the actor never
//! renews), a release keeps the lease (the actor of an exclusive store never gives its queue
//! up), claims find nothing (wakes start actors), and a takeover is the acquire the actor has
//! always made. Membership is this one process, kept in memory for `GET /v1/cluster`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;

use super::Journal;
use crate::domain::clock::now_ms;
use crate::domain::{SubscriptionId, TenantId};
use crate::error::{Error, Result};
use crate::policy::cluster_pace::SlotGrant;
use crate::policy::ratelimit::RateLimit;
use crate::store::{Coordination, Lease, NodeId, NodeRow, Queue, Tenure};

#[async_trait]
impl Coordination for Journal {
    fn tenure(&self) -> Tenure {
        Tenure::Exclusive
    }

    async fn register(&self, node: &NodeId, version: &str) -> Result<()> {
        let now = now_ms();
        *self.node_row()? = Some(NodeRow {
            id: node.clone(),
            version: version.to_owned(),
            started_at_ms: now,
            heartbeat_at_ms: now,
            heartbeat_age_ms: 0,
            leases: 0,
        });
        Ok(())
    }

    async fn heartbeat(&self, node: &NodeId) -> Result<()> {
        if let Some(row) = self.node_row()?.as_mut().filter(|r| &r.id == node) {
            row.heartbeat_at_ms = now_ms();
        }
        Ok(())
    }

    async fn claim_due(&self, _node: &NodeId, _limit: u32, _ttl: Duration) -> Result<Vec<Lease>> {
        Ok(Vec::new())
    }

    async fn take_over(
        &self,
        _node: &NodeId,
        sub: &SubscriptionId,
        _ttl: Duration,
    ) -> Result<Lease> {
        self.acquire(sub).await
    }

    async fn renew(&self, lease: &Lease, _ttl: Duration) -> Result<Lease> {
        Ok(lease.clone())
    }

    async fn release(&self, _lease: &Lease, _due_in: Duration, _pace: Duration) -> Result<()> {
        Ok(())
    }

    async fn release_after(
        &self,
        _lease: &Lease,
        _due_in: Duration,
        _pace_ahead: Duration,
        _seen: i64,
    ) -> Result<()> {
        Ok(())
    }

    async fn release_all(&self, node: &NodeId) -> Result<u64> {
        let mut row = self.node_row()?;
        if row.as_ref().is_some_and(|r| &r.id == node) {
            *row = None;
        }
        // Nothing to hand over: nobody else can open the file while this process has it.
        Ok(0)
    }

    async fn nodes(&self) -> Result<Vec<NodeRow>> {
        let now = now_ms();
        let held = self.inner.leases_held.load(Ordering::Relaxed);
        Ok(self
            .node_row()?
            .iter()
            .map(|r| NodeRow {
                heartbeat_age_ms: u64::try_from(now - r.heartbeat_at_ms).unwrap_or(0),
                leases: held,
                ..r.clone()
            })
            .collect())
    }

    async fn reserve_tenant_slots(
        &self,
        _tenant: &TenantId,
        _limit: &RateLimit,
        want: u32,
        _horizon: Duration,
    ) -> Result<SlotGrant> {
        Ok(SlotGrant::unlimited(want))
    }
}

impl Journal {
    fn node_row(&self) -> Result<std::sync::MutexGuard<'_, Option<NodeRow>>> {
        self.inner
            .node
            .lock()
            .map_err(|_| Error::Internal("node registry poisoned".into()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::domain::TenantId;
    use crate::domain::{NewSubscription, RetryPolicy, SubscriptionDefaults, SubscriptionSpec};
    use crate::metrics::Metrics;
    use crate::security::secretbox::{MasterKey, SecretBox};
    use crate::security::ssrf::IpPolicy;
    use crate::store::{Durability, StoreOptions};

    #[tokio::test]
    async fn the_only_node_owns_every_subscription_and_its_leases_never_expire() {
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions {
            durability: Durability::Os,
            reader_connections: 1,
            intake_queue: 16,
            commit_batch_max: 16,
        };
        let key = SecretBox::new(MasterKey::generate());
        let store = Journal::open(
            &dir.path().join("j.db"),
            &opts,
            key,
            Arc::new(Metrics::new(1)),
        )
        .await
        .unwrap()
        .store;
        assert_eq!(store.tenure(), Tenure::Exclusive);
        let me = NodeId::new("solo");
        store.register(&me, "1.2.3").await.unwrap();
        let tenant = TenantId::from("t1");
        store
            .create_tenant(tenant.clone(), "T".into(), None, "hash".into())
            .await
            .unwrap();
        let defaults = SubscriptionDefaults {
            retry: RetryPolicy::default(),
            timeout_ms: 30_000,
            ip_policy: IpPolicy::new(Vec::new()),
        };
        let spec = SubscriptionSpec::from_new(
            NewSubscription::new("t1", "https://example.com/h"),
            &defaults,
        )
        .unwrap();
        let sub = store
            .create_subscription(SubscriptionId::generate(), tenant, spec)
            .await
            .unwrap()
            .id;
        let ttl = Duration::from_secs(1);
        let lease = store.take_over(&me, &sub, ttl).await.unwrap();
        assert_eq!(lease.deadline(), None, "never expires");
        assert_eq!(lease.quiet_until(), None);
        assert!(
            store.claim_due(&me, 10, ttl).await.unwrap().is_empty(),
            "wakes, not claims, start an exclusive store's actors"
        );
        let renewed = store.renew(&lease, ttl).await.unwrap();
        assert_eq!(renewed.token(), lease.token());
        store
            .release(&lease, Duration::ZERO, Duration::ZERO)
            .await
            .unwrap();
        store.heartbeat(&me).await.unwrap();
        let nodes = store.nodes().await.unwrap();
        assert_eq!(nodes.len(), 1);
        assert_eq!(
            (nodes[0].id.as_str(), nodes[0].version.as_str()),
            ("solo", "1.2.3")
        );
        assert_eq!(
            nodes[0].leases, 1,
            "a release keeps an exclusive store's lease"
        );
        // A second takeover fences the first lease, as an acquire does.
        let again = store.take_over(&me, &sub, ttl).await.unwrap();
        assert!(again.token() > lease.token());
        assert_eq!(store.release_all(&me).await.unwrap(), 0);
        assert!(store.nodes().await.unwrap().is_empty());
        store.close().await;
    }
}
