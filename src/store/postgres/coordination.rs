//! The cluster seam on PostgreSQL ([`Tenure::Shared`]): node membership, claims of due
//! subscriptions, and renewing, releasing and taking over leases.
//!
//! A lease is the subscription's `sub_cursor` row: `owner`, `epoch` (the fencing token) and
//! `lease_until` on PostgreSQL's clock. A claim takes rows that are free (no owner) or expired,
//! whose subscription is runnable and has an open delivery and whose `next_due_at` has come,
//! oldest due first, `FOR UPDATE SKIP LOCKED` so that nodes claiming at once take disjoint
//! rows; it bumps each epoch (fencing any earlier holder) and interrupts the attempts that
//! holder left in flight, in the claim's commit. Renew and release are fenced by `(epoch,
//! owner)` like every queue write. A release that leaves due work notifies `hookline_wake` so
//! a claimer (on any node) looks at once.
//!
//! A release records the subscription's pace (`pace_at`: no cell of its own rate limit before
//! then) and a claim or takeover hands what is left of it to the next holder.
//!
//! Each lease carries its local deadline: the monotonic instant taken *before* the statement
//! was sent, plus the TTL asked for, so it is never later than `lease_until` on the database's
//! clock (see [`Lease::deadline`](crate::store::Lease::deadline)).

use std::time::Duration;

use async_trait::async_trait;
use sqlx::Row;
use tokio::time::Instant;

use super::{PgStore, WAKE_CHANNEL, listen, queue, sql_err};
use crate::domain::clock::now_ms;
use crate::domain::{SubscriptionId, TenantId};
use crate::error::{Error, Result};
use crate::policy::cluster_pace::SlotGrant;
use crate::policy::ratelimit::RateLimit;
use crate::store::{Coordination, Lease, NodeId, NodeRow, Tenure};

const C: &str = "cluster write";

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A non-negative count of microseconds read from the database.
fn micros(us: i64) -> Duration {
    Duration::from_micros(u64::try_from(us).unwrap_or(0))
}

#[async_trait]
impl Coordination for PgStore {
    fn tenure(&self) -> Tenure {
        Tenure::Shared
    }

    async fn register(&self, node: &NodeId, version: &str) -> Result<()> {
        self.open_for_writes()?;
        sqlx::query(
            "INSERT INTO nodes (node_id, version, started_at, heartbeat_at) \
             VALUES ($1, $2, now(), now()) ON CONFLICT (node_id) DO UPDATE \
             SET version = EXCLUDED.version, started_at = now(), heartbeat_at = now()",
        )
        .bind(node.as_str())
        .bind(version)
        .execute(self.pool())
        .await
        .map_err(sql_err(C))?;
        Ok(())
    }

    async fn heartbeat(&self, node: &NodeId) -> Result<()> {
        self.open_for_writes()?;
        sqlx::query("UPDATE nodes SET heartbeat_at = now() WHERE node_id = $1")
            .bind(node.as_str())
            .execute(self.pool())
            .await
            .map_err(sql_err(C))?;
        Ok(())
    }

    async fn claim_due(&self, node: &NodeId, limit: u32, ttl: Duration) -> Result<Vec<Lease>> {
        self.open_for_writes()?;
        let sent = Instant::now();
        let mut tx = self.pool().begin().await.map_err(sql_err(C))?;
        let claimed = sqlx::query(
            "WITH due AS ( \
               SELECT c.subscription_id FROM sub_cursor c \
               JOIN subscriptions s ON s.id = c.subscription_id \
               WHERE (c.owner IS NULL OR c.lease_until IS NULL OR c.lease_until < now()) \
                 AND (c.next_due_at IS NULL OR c.next_due_at <= now()) \
                 AND (c.quiet_until IS NULL OR c.quiet_until <= now()) \
                 AND NOT s.paused AND s.blocked_on IS NULL AND s.disabled_reason IS NULL \
                 AND s.faulted_reason IS NULL \
                 AND EXISTS (SELECT 1 FROM deliveries d WHERE d.subscription_id = c.subscription_id \
                             AND d.state IN ('pending', 'in_flight')) \
               ORDER BY c.next_due_at NULLS FIRST LIMIT $2 \
               FOR UPDATE OF c SKIP LOCKED) \
             UPDATE sub_cursor c SET owner = $1, epoch = c.epoch + 1, next_due_at = NULL, \
               lease_until = now() + make_interval(secs => $3::float8 / 1000) \
             FROM due WHERE c.subscription_id = due.subscription_id \
             RETURNING c.subscription_id, c.epoch, \
               GREATEST(0, COALESCE(EXTRACT(EPOCH FROM (c.pace_at - now())) * 1000000, 0))::int8",
        )
        .bind(node.as_str())
        .bind(i64::from(limit))
        .bind(ms(ttl))
        .fetch_all(&mut *tx)
        .await
        .map_err(sql_err(C))?;
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        let mut subs = Vec::with_capacity(claimed.len());
        let mut leases = Vec::with_capacity(claimed.len());
        for r in &claimed {
            let sub: String = r.try_get(0).map_err(sql_err(C))?;
            let epoch: i64 = r.try_get(1).map_err(sql_err(C))?;
            let pace: i64 = r.try_get(2).map_err(sql_err(C))?;
            leases.push(
                Lease::expiring(
                    SubscriptionId::from(sub.clone()),
                    epoch.max(0) as u64,
                    sent + ttl,
                    None,
                )
                .with_pace_ahead(micros(pace)),
            );
            subs.push(sub);
        }
        queue::interrupt_in_flight(&mut tx, &subs, now_ms()).await?;
        tx.commit().await.map_err(sql_err("commit"))?;
        Ok(leases)
    }

    async fn take_over(&self, node: &NodeId, sub: &SubscriptionId, ttl: Duration) -> Result<Lease> {
        self.open_for_writes()?;
        let sent = Instant::now();
        let mut tx = self.pool().begin().await.map_err(sql_err(C))?;
        // How long the fenced lease still had to run, measured on the database's clock, or what
        // an earlier takeover stored of the lease it fenced, whichever ends later: a node that
        // took the subscription over and released it at once (a pause) has not waited that
        // lease out. It is stored for whoever comes next (`claim_due` waits for it too). A
        // lease this node held is not waited out: node ids are unique among live processes,
        // and within one the supervisor takes a subscription over only once its previous
        // actor is gone (a restart after a panic), its attempt aborted with it.
        let row = sqlx::query(
            "WITH old AS (SELECT subscription_id, owner, lease_until, quiet_until FROM sub_cursor \
                          WHERE subscription_id = $1 FOR UPDATE), \
             quiet AS (SELECT subscription_id, GREATEST( \
                 CASE WHEN quiet_until > now() THEN quiet_until END, \
                 CASE WHEN owner IS NOT NULL AND owner <> $2 AND lease_until > now() \
                   THEN lease_until END) AS until FROM old) \
             UPDATE sub_cursor c SET owner = $2, epoch = c.epoch + 1, next_due_at = NULL, \
               lease_until = now() + make_interval(secs => $3::float8 / 1000), \
               quiet_until = quiet.until \
             FROM quiet WHERE c.subscription_id = quiet.subscription_id \
             RETURNING c.epoch, \
               (EXTRACT(EPOCH FROM (quiet.until - now())) * 1000)::int8, \
               GREATEST(0, COALESCE(EXTRACT(EPOCH FROM (c.pace_at - now())) * 1000000, 0))::int8",
        )
        .bind(sub.as_str())
        .bind(node.as_str())
        .bind(ms(ttl))
        .fetch_optional(&mut *tx)
        .await
        .map_err(sql_err(C))?;
        let Some(row) = row else {
            return Err(Error::not_found("subscription", sub));
        };
        let epoch: i64 = row.try_get(0).map_err(sql_err(C))?;
        let left_ms: Option<i64> = row.try_get(1).map_err(sql_err(C))?;
        let pace: i64 = row.try_get(2).map_err(sql_err(C))?;
        queue::interrupt_in_flight(&mut tx, &[sub.as_str().to_owned()], now_ms()).await?;
        tx.commit().await.map_err(sql_err("commit"))?;
        // Measured from after the answer: never earlier than the fenced lease's expiry.
        let quiet = left_ms.map(|ms| Instant::now() + Duration::from_millis(ms.max(0) as u64));
        Ok(
            Lease::expiring(sub.clone(), epoch.max(0) as u64, sent + ttl, quiet)
                .with_pace_ahead(micros(pace)),
        )
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        self.open_for_writes()?;
        let sent = Instant::now();
        let n = sqlx::query(
            "UPDATE sub_cursor SET lease_until = now() + make_interval(secs => $4::float8 / 1000) \
             WHERE subscription_id = $1 AND epoch = $2 AND owner = $3",
        )
        .bind(lease.subscription().as_str())
        .bind(lease.token() as i64)
        .bind(&self.inner.node)
        .bind(ms(ttl))
        .execute(self.pool())
        .await
        .map_err(sql_err(C))?
        .rows_affected();
        if n == 0 {
            return Err(Error::LeaseLost {
                subscription: lease.subscription().to_string(),
            });
        }
        Ok(lease.renewed(sent + ttl))
    }

    async fn release(&self, lease: &Lease, due_in: Duration, pace_ahead: Duration) -> Result<()> {
        self.pg_release(lease, due_in, pace_ahead, None).await
    }

    async fn release_after(
        &self,
        lease: &Lease,
        due_in: Duration,
        pace_ahead: Duration,
        seen: i64,
    ) -> Result<()> {
        self.pg_release(lease, due_in, pace_ahead, Some(seen)).await
    }

    async fn release_all(&self, node: &NodeId) -> Result<u64> {
        let mut tx = self.pool().begin().await.map_err(sql_err(C))?;
        let released: Vec<String> = sqlx::query_scalar(
            "UPDATE sub_cursor SET owner = NULL, lease_until = NULL, next_due_at = NULL \
             WHERE owner = $1 RETURNING subscription_id",
        )
        .bind(node.as_str())
        .fetch_all(&mut *tx)
        .await
        .map_err(sql_err(C))?;
        sqlx::query("DELETE FROM nodes WHERE node_id = $1")
            .bind(node.as_str())
            .execute(&mut *tx)
            .await
            .map_err(sql_err(C))?;
        if !released.is_empty() {
            self.notify_if_open(&mut tx, &released).await?;
        }
        tx.commit().await.map_err(sql_err("commit"))?;
        Ok(released.len() as u64)
    }

    async fn nodes(&self) -> Result<Vec<NodeRow>> {
        let found = sqlx::query(
            "SELECT n.node_id, n.version, \
               (EXTRACT(EPOCH FROM n.started_at) * 1000)::int8, \
               (EXTRACT(EPOCH FROM n.heartbeat_at) * 1000)::int8, \
               GREATEST(0, (EXTRACT(EPOCH FROM (now() - n.heartbeat_at)) * 1000)::int8), \
               (SELECT COUNT(*) FROM sub_cursor c WHERE c.owner = n.node_id \
                  AND c.lease_until > now()) \
             FROM nodes n ORDER BY n.node_id",
        )
        .fetch_all(self.pool())
        .await
        .map_err(sql_err("read"))?;
        found
            .iter()
            .map(|r| {
                let get = |e: sqlx::Error| sql_err("read")(e);
                Ok(NodeRow {
                    id: NodeId::new(r.try_get::<String, _>(0).map_err(get)?),
                    version: r.try_get(1).map_err(get)?,
                    started_at_ms: r.try_get(2).map_err(get)?,
                    heartbeat_at_ms: r.try_get(3).map_err(get)?,
                    heartbeat_age_ms: r.try_get::<i64, _>(4).map_err(get)?.max(0) as u64,
                    leases: r.try_get::<i64, _>(5).map_err(get)?.max(0) as u64,
                })
            })
            .collect()
    }

    async fn reserve_tenant_slots(
        &self,
        tenant: &TenantId,
        limit: &RateLimit,
        want: u32,
        horizon: Duration,
    ) -> Result<SlotGrant> {
        self.open_for_writes()?;
        let interval_us = i64::try_from(limit.interval().as_micros())
            .unwrap_or(i64::MAX)
            .max(1);
        let horizon_us = i64::try_from(horizon.as_micros()).unwrap_or(i64::MAX);
        // On a progress connection: a reservation needs no flush to disk (losing one in a crash
        // of PostgreSQL grants its slots again, a burst at worst).
        let mut conn = self
            .inner
            .progress
            .lend()
            .await
            .map_err(sql_err("rate-limit reservation"))?;
        let row = sqlx::query(
            "SELECT now_us, first_us, granted FROM hookline_reserve_slots($1, $2, $3, $4, $5)",
        )
        .bind(tenant.as_str())
        .bind(interval_us)
        .bind(i32::try_from(limit.burst).unwrap_or(i32::MAX))
        .bind(i32::try_from(want).unwrap_or(i32::MAX))
        .bind(horizon_us)
        .fetch_one(conn.conn())
        .await
        .map_err(sql_err("rate-limit reservation"))?;
        conn.answered();
        let get = |e: sqlx::Error| sql_err("rate-limit reservation")(e);
        let now_us: i64 = row.try_get(0).map_err(get)?;
        let first_us: i64 = row.try_get(1).map_err(get)?;
        let granted: i32 = row.try_get(2).map_err(get)?;
        Ok(SlotGrant::from_schedule(
            now_us,
            first_us,
            interval_us,
            u32::try_from(granted).unwrap_or(0),
            want,
            horizon,
        ))
    }
}

impl PgStore {
    /// Notifies every node (this one too: the payload names no node) of those of `subs` that
    /// have open deliveries, in `conn`'s transaction; whether there were any.
    /// Gives `lease` up, due after `due_in`; with `seen`, due at once when a delivery above
    /// that `seq` is committed: the `sub_tail` row is read `FOR SHARE`, which waits for a
    /// publish to this subscription in progress (it holds the row until its commit), and a
    /// publish after this release finds the due time set and clears it (`ingest`).
    async fn pg_release(
        &self,
        lease: &Lease,
        due_in: Duration,
        pace_ahead: Duration,
        seen: Option<i64>,
    ) -> Result<()> {
        self.open_for_writes()?;
        let mut tx = self.pool().begin().await.map_err(sql_err(C))?;
        let sub = lease.subscription().as_str();
        let mut due_in = due_in;
        if let Some(seen) = seen {
            let tail: Option<i64> = sqlx::query_scalar(
                "SELECT tail_seq FROM sub_tail WHERE subscription_id = $1 FOR SHARE",
            )
            .bind(sub)
            .fetch_optional(&mut *tx)
            .await
            .map_err(sql_err(C))?;
            if tail.is_some_and(|t| t > seen) {
                due_in = Duration::ZERO;
            }
        }
        let n = sqlx::query(
            "UPDATE sub_cursor SET owner = NULL, lease_until = NULL, \
               next_due_at = now() + make_interval(secs => $4::float8 / 1000), \
               pace_at = CASE WHEN $5::float8 > 0 \
                 THEN now() + make_interval(secs => $5::float8 / 1000) END \
             WHERE subscription_id = $1 AND epoch = $2 AND owner = $3",
        )
        .bind(sub)
        .bind(lease.token() as i64)
        .bind(&self.inner.node)
        .bind(ms(due_in))
        .bind(ms(pace_ahead))
        .execute(&mut *tx)
        .await
        .map_err(sql_err(C))?
        .rows_affected();
        if n == 0 {
            return Err(Error::LeaseLost {
                subscription: sub.to_owned(),
            });
        }
        // Work committed after the holder last read its queue: announce it, since the
        // publish's own wake found the lease still held.
        let woke = due_in.is_zero() && self.notify_if_open(&mut tx, &[sub.to_owned()]).await?;
        tx.commit().await.map_err(sql_err("commit"))?;
        if woke {
            self.inner
                .wakes
                .wake(std::iter::once(lease.subscription().clone()).collect());
        }
        Ok(())
    }

    async fn notify_if_open(&self, conn: &mut sqlx::PgConnection, subs: &[String]) -> Result<bool> {
        let open: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT subscription_id FROM deliveries WHERE subscription_id = ANY($1) \
               AND state IN ('pending', 'in_flight')",
        )
        .bind(subs)
        .fetch_all(&mut *conn)
        .await
        .map_err(sql_err(C))?;
        let ids: Vec<SubscriptionId> = open.into_iter().map(SubscriptionId::from).collect();
        for payload in listen::payloads("-", &ids) {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(WAKE_CHANNEL)
                .bind(payload)
                .execute(&mut *conn)
                .await
                .map_err(sql_err(C))?;
        }
        Ok(!ids.is_empty())
    }
}
