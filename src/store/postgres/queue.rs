//! A subscription's queue on PostgreSQL: the lease, the fence on every write, recovery.
//!
//! The lease is the subscription's `sub_cursor` row. [`acquire`](PgStore::pg_acquire) bumps
//! its `epoch` (the token), writes this node as `owner` and a `lease_until` on PostgreSQL's
//! clock, and in the same transaction logs the attempts the previous holder left in flight as
//! interrupted (their deliveries go back to pending). Every queue write is one transaction
//! whose first statement is the fence: `SELECT … FROM sub_cursor WHERE subscription_id = $s
//! AND epoch = $token AND owner = $node FOR SHARE`. No row: the lease was taken over (or the
//! subscription deleted), and the write answers `LeaseLost` having written nothing. The share
//! lock conflicts with an acquire's update of the row, so a fenced write and a takeover are
//! serialised in commit order: a write that passed its fence commits before the takeover, and
//! one that starts after it sees the new epoch.
//!
//! Delivery progress (in-flight marks, outcomes) commits with `synchronous_commit = off`, as
//! the SQLite journal fsyncs it within 50 ms rather than at once: losing the last few of them
//! in a crash of PostgreSQL's host means an attempt is retried, never that an accepted event is
//! lost. The two writes of every delivery (its in-flight mark, its outcome with the next mark)
//! are each one statement on a progress connection ([`progress`](super::progress)), which
//! commits that way: the fence
//! is the statement's first common table expression and every write in it requires the fence's
//! row, so one round trip does what a fenced transaction does in five.

use std::collections::HashSet;

use sqlx::postgres::{PgConnection, PgPool};
use sqlx::{Postgres, Row, Transaction};

use super::{PgStore, rows, sql_err};
use crate::domain::clock::now_ms;
use crate::domain::{DeliveryId, DeliveryStatus, SubscriptionId, SubscriptionRow};
use crate::error::{Error, Result};
use crate::policy::ErrorKind;
use crate::store::{
    AttemptRecord, FlagChange, HeldKey, KeyFollow, Lease, QueuedDelivery, Recovery,
};

const W: &str = "queue write";

/// The fence as the first common table expression of a one-statement write: `fence` has a row
/// when the lease (`$1` subscription, `$2` epoch, `$3` node) is still held, locked `FOR SHARE`
/// as in [`PgStore::fenced`]. Every write of the statement requires that row, so a lost lease
/// writes nothing; being one statement, it commits as one transaction.
macro_rules! fence {
    () => {
        "fence AS (SELECT 1 FROM sub_cursor WHERE subscription_id = $1 AND epoch = $2 \
         AND owner = $3 FOR SHARE)"
    };
}

/// An attempt logged again under the same number (a retried record) replaces the first.
macro_rules! attempt_upsert {
    () => {
        "ON CONFLICT (delivery_id, n) DO UPDATE SET started_at = EXCLUDED.started_at, \
         duration_ms = EXCLUDED.duration_ms, status_code = EXCLUDED.status_code, \
         error_kind = EXCLUDED.error_kind, error = EXCLUDED.error, \
         response_snippet = EXCLUDED.response_snippet, \
         transform_log = EXCLUDED.transform_log, node_id = EXCLUDED.node_id, \
         epoch = EXCLUDED.epoch"
    };
}

/// The common table expressions of an outcome's one-statement record: the fence, the
/// delivery's new state (`outcome`), the attempt's log row and the next delivery's in-flight
/// mark, each requiring the one before (`$1`..`$19`, see `record_plain`).
macro_rules! record_ctes {
    () => {
        concat!(
            "WITH ",
            fence!(),
            ", outcome AS (UPDATE deliveries SET state = $6, attempts = $5, budget_used = $7, \
               next_at = $8, started_at = NULL, last_status = $9, last_error = $10, \
               updated_at = $11 \
             WHERE id = $4 AND EXISTS (SELECT 1 FROM fence) RETURNING id), \
             logged AS (INSERT INTO attempts (delivery_id, n, started_at, duration_ms, \
               status_code, error_kind, error, response_snippet, transform_log, node_id, epoch) \
             SELECT id, $5, $12, $13, $9, $14, $10, $15, $16, $3, $2 FROM outcome ",
            attempt_upsert!(),
            " RETURNING 1), \
             marked AS (UPDATE deliveries SET state = 'in_flight', attempts = $18, \
               started_at = $19, next_at = NULL, updated_at = $19 \
             WHERE id = $17 AND state IN ('pending', 'in_flight') \
               AND EXISTS (SELECT 1 FROM outcome) RETURNING 1)"
        )
    };
}

fn lease_lost(lease: &Lease) -> Error {
    Error::LeaseLost {
        subscription: lease.subscription().to_string(),
    }
}

/// Logs every attempt in flight on `subs` as interrupted and puts its delivery back to pending;
/// returns how many attempts were logged.
pub(super) async fn interrupt_in_flight(
    conn: &mut PgConnection,
    subs: &[String],
    now: i64,
) -> Result<u64> {
    let logged = sqlx::query(
        "INSERT INTO attempts (delivery_id, n, started_at, duration_ms, error_kind, error) \
         SELECT id, attempts, COALESCE(started_at, updated_at), \
                GREATEST(0, $1 - COALESCE(started_at, updated_at)), $2, \
                'hookline stopped while this attempt was in flight' \
         FROM deliveries WHERE subscription_id = ANY($3) AND state = 'in_flight' AND attempts > 0 \
         ON CONFLICT (delivery_id, n) DO NOTHING",
    )
    .bind(now)
    .bind(ErrorKind::Interrupted.as_str())
    .bind(subs)
    .execute(&mut *conn)
    .await
    .map_err(sql_err(W))?
    .rows_affected();
    sqlx::query(
        "UPDATE deliveries SET state = 'pending', started_at = NULL, last_error = 'interrupted', \
         updated_at = $1 WHERE subscription_id = ANY($2) AND state = 'in_flight'",
    )
    .bind(now)
    .bind(subs)
    .execute(&mut *conn)
    .await
    .map_err(sql_err(W))?;
    Ok(logged)
}

/// Subscriptions with open work.
pub(super) async fn open_subscriptions(pool: &PgPool) -> Result<Vec<SubscriptionId>> {
    let subs: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT d.subscription_id FROM deliveries d \
         WHERE d.state IN ('pending', 'in_flight')",
    )
    .fetch_all(pool)
    .await
    .map_err(sql_err("read"))?;
    Ok(subs.into_iter().map(SubscriptionId::from).collect())
}

/// Recovery at open: the attempts this node (by its id, from an earlier run) or no node left
/// in flight are interrupted. Another node's are left alone, even under an expired lease: only
/// a takeover (which bumps the epoch and so fences that node) may interrupt them.
pub(super) async fn recover(pool: &PgPool, node: &str) -> Result<Recovery> {
    let now = now_ms();
    let mut tx = pool.begin().await.map_err(sql_err("recovery"))?;
    let mine: Vec<String> = sqlx::query_scalar(
        "SELECT c.subscription_id FROM sub_cursor c \
         WHERE (c.owner IS NULL OR c.owner = $1) AND EXISTS (SELECT 1 FROM deliveries d \
               WHERE d.subscription_id = c.subscription_id AND d.state = 'in_flight') \
         ORDER BY 1 FOR UPDATE",
    )
    .bind(node)
    .fetch_all(&mut *tx)
    .await
    .map_err(sql_err("recovery"))?;
    let interrupted = interrupt_in_flight(&mut tx, &mine, now).await?;
    // This node's leases from an earlier run are void: its actors acquire anew.
    sqlx::query(
        "UPDATE sub_cursor SET owner = NULL, lease_until = NULL, epoch = epoch + 1 \
         WHERE owner = $1",
    )
    .bind(node)
    .execute(&mut *tx)
    .await
    .map_err(sql_err("recovery"))?;
    tx.commit().await.map_err(sql_err("recovery"))?;
    let open: HashSet<SubscriptionId> = open_subscriptions(pool).await?.into_iter().collect();
    Ok(Recovery {
        interrupted,
        open_subscriptions: open.into_iter().collect(),
    })
}

/// Gives up every lease `node` holds (at close): another node may take them over at once.
pub(super) async fn release_all(pool: &PgPool, node: &str) -> Result<()> {
    sqlx::query("UPDATE sub_cursor SET owner = NULL, lease_until = NULL WHERE owner = $1")
        .bind(node)
        .execute(pool)
        .await
        .map_err(sql_err("release"))?;
    Ok(())
}

impl PgStore {
    /// A transaction whose first statement passed `lease`'s fence.
    async fn fenced(
        &self,
        lease: &Lease,
        progress: bool,
    ) -> Result<Transaction<'static, Postgres>> {
        self.open_for_writes()?;
        let mut tx = self.pool().begin().await.map_err(sql_err(W))?;
        if progress {
            sqlx::query("SET LOCAL synchronous_commit = off")
                .execute(&mut *tx)
                .await
                .map_err(sql_err(W))?;
        }
        let held = sqlx::query(
            "SELECT 1 FROM sub_cursor WHERE subscription_id = $1 AND epoch = $2 AND owner = $3 \
             FOR SHARE",
        )
        .bind(lease.subscription().as_str())
        .bind(lease.token() as i64)
        .bind(&self.inner.node)
        .fetch_optional(&mut *tx)
        .await
        .map_err(sql_err(W))?;
        if held.is_none() {
            return Err(lease_lost(lease));
        }
        Ok(tx)
    }

    pub(super) async fn pg_acquire(&self, sub: &SubscriptionId) -> Result<Lease> {
        self.open_for_writes()?;
        let sent = tokio::time::Instant::now();
        let mut tx = self.pool().begin().await.map_err(sql_err(W))?;
        // What an operator's takeover stored of the lease it fenced is waited out here too.
        let row: Option<(i64, Option<i64>)> = sqlx::query_as(
            "UPDATE sub_cursor SET epoch = epoch + 1, owner = $2, \
               lease_until = now() + make_interval(secs => $3::float8 / 1000) \
             WHERE subscription_id = $1 RETURNING epoch, CASE WHEN quiet_until > now() \
               THEN (EXTRACT(EPOCH FROM (quiet_until - now())) * 1000)::int8 END",
        )
        .bind(sub.as_str())
        .bind(&self.inner.node)
        .bind(self.inner.lease_ttl_ms as f64)
        .fetch_optional(&mut *tx)
        .await
        .map_err(sql_err(W))?;
        let Some((epoch, quiet_ms)) = row else {
            return Err(Error::not_found("subscription", sub));
        };
        interrupt_in_flight(&mut tx, &[sub.as_str().to_owned()], now_ms()).await?;
        tx.commit().await.map_err(sql_err("commit"))?;
        let ttl = std::time::Duration::from_millis(self.inner.lease_ttl_ms.max(0) as u64);
        let quiet = quiet_ms.map(|ms| {
            tokio::time::Instant::now() + std::time::Duration::from_millis(ms.max(0) as u64)
        });
        Ok(Lease::expiring(
            sub.clone(),
            epoch.max(0) as u64,
            sent + ttl,
            quiet,
        ))
    }

    pub(super) async fn pg_next_deliveries(
        &self,
        sub: &SubscriptionId,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<QueuedDelivery>> {
        self.pg_read_queued(
            concat!(
                pg_queued_select!(),
                " WHERE d.subscription_id = $1 AND d.state IN ('pending', 'in_flight') \
                  AND d.seq > $2 ORDER BY d.seq LIMIT $3"
            ),
            sub,
            after_seq,
            limit,
        )
        .await
    }

    /// Runs a queue read `sql` taking (subscription, after `seq`, limit).
    async fn pg_read_queued(
        &self,
        sql: &'static str,
        sub: &SubscriptionId,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<QueuedDelivery>> {
        let found = sqlx::query(sql)
            .bind(sub.as_str())
            .bind(after_seq)
            .bind(i64::from(limit))
            .fetch_all(self.pool())
            .await
            .map_err(sql_err("read"))?;
        found.iter().map(rows::queued).collect()
    }

    /// See [`Queue::next_heads`](crate::store::Queue::next_heads).
    pub(super) async fn pg_next_heads(
        &self,
        sub: &SubscriptionId,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<QueuedDelivery>> {
        self.pg_read_queued(
            concat!(
                pg_queued_select!(),
                " WHERE d.subscription_id = $1 AND d.state IN ('pending', 'in_flight') \
                  AND d.seq > $2 \
                  AND NOT EXISTS (SELECT 1 FROM deliveries p \
                    WHERE p.subscription_id = $1 AND p.order_epoch = d.order_epoch \
                      AND p.order_key = d.order_key AND p.seq < d.seq \
                      AND p.order_key IS NOT NULL \
                      AND (p.state IN ('pending', 'in_flight') OR p.holds_key)) \
                  ORDER BY d.seq LIMIT $3"
            ),
            sub,
            after_seq,
            limit,
        )
        .await
    }

    pub(super) async fn pg_next_in_group(
        &self,
        sub: &SubscriptionId,
        order_epoch: u32,
        order_key: &str,
        after_seq: i64,
    ) -> Result<Option<QueuedDelivery>> {
        let found = sqlx::query(concat!(
            pg_queued_select!(),
            " WHERE d.subscription_id = $1 AND d.order_epoch = $2 AND d.order_key = $3 \
              AND d.seq > $4 AND d.order_key IS NOT NULL \
              AND (d.state IN ('pending', 'in_flight') OR d.holds_key) \
              ORDER BY d.seq LIMIT 1"
        ))
        .bind(sub.as_str())
        .bind(i64::from(order_epoch))
        .bind(order_key)
        .bind(after_seq)
        .fetch_optional(self.pool())
        .await
        .map_err(sql_err("read"))?;
        found.as_ref().map(rows::queued).transpose()
    }

    /// The subscription's order counter: the `seq` of its last committed delivery.
    pub(super) async fn pg_last_seq(&self, sub: &SubscriptionId) -> Result<i64> {
        let tail: Option<i64> =
            sqlx::query_scalar("SELECT tail_seq FROM sub_tail WHERE subscription_id = $1")
                .bind(sub.as_str())
                .fetch_optional(self.pool())
                .await
                .map_err(sql_err("read"))?;
        Ok(tail.unwrap_or(0))
    }

    pub(super) async fn pg_held_keys(&self, sub: &SubscriptionId) -> Result<Vec<HeldKey>> {
        let found = sqlx::query(
            "SELECT id, seq, order_key, order_epoch FROM deliveries \
             WHERE subscription_id = $1 AND holds_key AND order_key IS NOT NULL ORDER BY seq",
        )
        .bind(sub.as_str())
        .fetch_all(self.pool())
        .await
        .map_err(sql_err("read"))?;
        let read = |e| sql_err("read")(e);
        found
            .iter()
            .map(|r| {
                Ok(HeldKey {
                    delivery: DeliveryId(r.try_get(0).map_err(read)?),
                    seq: r.try_get(1).map_err(read)?,
                    order_key: std::sync::Arc::from(r.try_get::<String, _>(2).map_err(read)?),
                    order_epoch: r
                        .try_get::<i64, _>(3)
                        .map_err(read)?
                        .clamp(0, i64::from(u32::MAX)) as u32,
                })
            })
            .collect()
    }

    /// One statement on a progress connection: the fence and the mark commit together (see
    /// `fence!`).
    pub(super) async fn pg_mark_in_flight(
        &self,
        lease: &Lease,
        delivery: DeliveryId,
        attempt: u32,
        at: i64,
    ) -> Result<()> {
        self.open_for_writes()?;
        let mut conn = self.inner.progress.lend().await.map_err(sql_err(W))?;
        let held: bool = sqlx::query_scalar(concat!(
            "WITH ",
            fence!(),
            ", marked AS (UPDATE deliveries SET state = 'in_flight', attempts = $5, \
               started_at = $6, next_at = NULL, updated_at = $6 \
             WHERE id = $4 AND state IN ('pending', 'in_flight') \
               AND EXISTS (SELECT 1 FROM fence) RETURNING 1) \
             SELECT EXISTS (SELECT 1 FROM fence)"
        ))
        .bind(lease.subscription().as_str())
        .bind(lease.token() as i64)
        .bind(&self.inner.node)
        .bind(delivery.raw())
        .bind(i64::from(attempt))
        .bind(at)
        .fetch_one(conn.conn())
        .await
        .map_err(sql_err(W))?;
        conn.answered();
        if held { Ok(()) } else { Err(lease_lost(lease)) }
    }

    /// An attempt's outcome. Without flag changes, a key held (ordering keys) or notifications
    /// (every outcome but the one that blocks, disables or faults the subscription, holds a
    /// key, exhausts a delivery or ends a block) it is one statement on a progress connection:
    /// the fence, the attempt's log row, the delivery's new state and the next delivery's
    /// in-flight mark commit together in one round trip. With any, a transaction (the
    /// notifications commit with the outcome).
    pub(super) async fn pg_record_attempt(&self, lease: &Lease, rec: AttemptRecord) -> Result<()> {
        if !rec.is_plain() {
            return self.record_with_flags(lease, rec).await;
        }
        self.record_plain(lease, rec, None).await.map(|_| ())
    }

    /// A plain record (see [`AttemptRecord::is_plain`]) with the key's next delivery read in
    /// the record's own statement (see [`Queue::record_attempt_following`](crate::store::Queue)):
    /// one round trip per lane instead of two. The read sees the snapshot the statement started
    /// from: for the key's deliveries after the recorded one that is what a read right after
    /// the commit would see, except one published in between, which the next heads read finds
    /// (as it finds one published right after a separate read). The statement's
    /// `next_in_flight` mark is another key's head (the actor never picks one that conflicts
    /// with the record's key), so the row read is not one the statement changes.
    pub(super) async fn pg_record_plain_following(
        &self,
        lease: &Lease,
        rec: AttemptRecord,
        follow: &KeyFollow,
    ) -> (Result<()>, Option<Result<Option<QueuedDelivery>>>) {
        match self.record_plain(lease, rec, Some(follow)).await {
            Ok(next) => (Ok(()), Some(Ok(next))),
            Err(e) => (Err(e), None),
        }
    }

    /// The one-statement outcome of [`pg_record_attempt`](Self::pg_record_attempt), with the
    /// key's next delivery when `follow` is given (`None` otherwise, or when there is none).
    async fn record_plain(
        &self,
        lease: &Lease,
        rec: AttemptRecord,
        follow: Option<&KeyFollow>,
    ) -> Result<Option<QueuedDelivery>> {
        self.open_for_writes()?;
        let (next, next_n, next_at) = match rec.next_in_flight {
            Some((d, n, at)) => (Some(d.raw()), Some(i64::from(n)), Some(at)),
            None => (None, None, None),
        };
        let sql = if follow.is_some() {
            concat!(
                record_ctes!(),
                ", following (id, seq, event_id, notification_type, body, attempts, budget_used, \
                   next_at, order_key, order_epoch, holds_key) AS (",
                pg_queued_select!(),
                " WHERE d.subscription_id = $1 AND d.order_epoch = $20 AND d.order_key = $21 \
                   AND d.seq > $22 AND d.order_key IS NOT NULL \
                   AND (d.state IN ('pending', 'in_flight') OR d.holds_key) \
                   AND EXISTS (SELECT 1 FROM outcome) ORDER BY d.seq LIMIT 1) \
                 SELECT EXISTS (SELECT 1 FROM fence), EXISTS (SELECT 1 FROM outcome), f.* \
                 FROM (SELECT 1) AS one LEFT JOIN following f ON true"
            )
        } else {
            concat!(
                record_ctes!(),
                " SELECT EXISTS (SELECT 1 FROM fence), EXISTS (SELECT 1 FROM outcome)"
            )
        };
        let mut conn = self.inner.progress.lend().await.map_err(sql_err(W))?;
        let mut query = sqlx::query(sql)
            .bind(lease.subscription().as_str())
            .bind(lease.token() as i64)
            .bind(&self.inner.node)
            .bind(rec.delivery.raw())
            .bind(i64::from(rec.n))
            .bind(rec.new_status.as_str())
            .bind(i64::from(rec.budget_used))
            .bind(rec.next_at)
            .bind(rec.status_code.map(i64::from))
            .bind(&rec.error)
            .bind(now_ms())
            .bind(rec.started_at)
            .bind(i64::try_from(rec.duration_ms).unwrap_or(i64::MAX))
            .bind(rec.error_kind.map(ErrorKind::as_str))
            .bind(&rec.snippet)
            .bind(&rec.transform_log)
            .bind(next)
            .bind(next_n)
            .bind(next_at);
        if let Some(f) = follow {
            query = query
                .bind(i64::from(f.order_epoch))
                .bind(&*f.order_key)
                .bind(f.after_seq);
        }
        let row = query.fetch_one(conn.conn()).await.map_err(sql_err(W))?;
        conn.answered();
        let held: bool = row.try_get(0).map_err(sql_err(W))?;
        // No outcome row: deleted with its subscription while the attempt ran; nothing to record.
        if !held {
            return Err(lease_lost(lease));
        }
        if follow.is_none() {
            return Ok(None);
        }
        let found: Option<i64> = row.try_get(2).map_err(sql_err("read"))?;
        match found {
            Some(_) => rows::queued_from(&row, 2).map(Some),
            None => Ok(None),
        }
    }

    /// An outcome that changes the subscription's flags or carries notifications: a
    /// transaction.
    async fn record_with_flags(&self, lease: &Lease, rec: AttemptRecord) -> Result<()> {
        let mut tx = self.fenced(lease, true).await?;
        let now = now_ms();
        let recorded = sqlx::query(concat!(
            "INSERT INTO attempts (delivery_id, n, started_at, duration_ms, status_code, \
               error_kind, error, response_snippet, transform_log, node_id, epoch) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11 \
             WHERE EXISTS (SELECT 1 FROM deliveries WHERE id = $1) ",
            attempt_upsert!()
        ))
        .bind(rec.delivery.raw())
        .bind(i64::from(rec.n))
        .bind(rec.started_at)
        .bind(i64::try_from(rec.duration_ms).unwrap_or(i64::MAX))
        .bind(rec.status_code.map(i64::from))
        .bind(rec.error_kind.map(ErrorKind::as_str))
        .bind(&rec.error)
        .bind(&rec.snippet)
        .bind(&rec.transform_log)
        .bind(&self.inner.node)
        .bind(lease.token() as i64)
        .execute(&mut *tx)
        .await
        .map_err(sql_err(W))?
        .rows_affected();
        let updated = sqlx::query(
            "UPDATE deliveries SET state = $2, attempts = $3, budget_used = $4, next_at = $5, \
               started_at = NULL, last_status = $6, last_error = $7, updated_at = $8, \
               holds_key = $9 WHERE id = $1",
        )
        .bind(rec.delivery.raw())
        .bind(rec.new_status.as_str())
        .bind(i64::from(rec.n))
        .bind(i64::from(rec.budget_used))
        .bind(rec.next_at)
        .bind(rec.status_code.map(i64::from))
        .bind(&rec.error)
        .bind(now)
        .bind(rec.holds_key)
        .execute(&mut *tx)
        .await
        .map_err(sql_err(W))?
        .rows_affected();
        if recorded == 0 || updated == 0 {
            // Deleted with its subscription while the attempt ran: nothing left to record.
            return match rec.flags {
                None => Ok(()),
                Some(_) => Err(Error::not_found("delivery", rec.delivery)),
            };
        }
        if let Some((next, attempts, at)) = rec.next_in_flight {
            mark(&mut tx, next, attempts, at).await?;
        }
        if let Some(flags) = &rec.flags {
            self.apply_flags(&mut tx, &rec.subscription, flags, now)
                .await?;
        }
        // The transition's notifications commit with it (a refused one, with no system
        // tenant, writes nothing for it and does not fail the record).
        let mut woken = std::collections::HashSet::new();
        if !rec.notices.is_empty() {
            let (receipts, w) = self.publish_in(&mut tx, &rec.notices, now).await?;
            for e in receipts.iter().filter_map(|r| r.as_ref().err()) {
                tracing::debug!(error = %e, "operational notification not journaled");
            }
            woken = w;
        }
        tx.commit().await.map_err(sql_err("commit"))?;
        if !woken.is_empty() {
            self.inner.wakes.wake(woken);
        }
        Ok(())
    }

    pub(super) async fn pg_set_queue_flags(
        &self,
        lease: &Lease,
        flags: FlagChange,
    ) -> Result<SubscriptionRow> {
        let mut tx = self.fenced(lease, false).await?;
        let row = self
            .apply_flags(&mut tx, lease.subscription(), &flags, now_ms())
            .await?;
        tx.commit().await.map_err(sql_err("commit"))?;
        Ok(row)
    }

    pub(super) async fn pg_set_delivery_status(
        &self,
        lease: &Lease,
        delivery: DeliveryId,
        status: DeliveryStatus,
        reset_budget: bool,
        unblock: bool,
    ) -> Result<()> {
        let mut tx = self.fenced(lease, false).await?;
        let at = now_ms();
        let n = sqlx::query(
            "UPDATE deliveries SET state = $2, holds_key = false, \
               budget_used = CASE WHEN $3 THEN 0 ELSE budget_used END, \
               next_at = NULL, updated_at = $4 WHERE id = $1",
        )
        .bind(delivery.raw())
        .bind(status.as_str())
        .bind(reset_budget)
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(sql_err(W))?
        .rows_affected();
        if n == 0 {
            return Err(Error::not_found("delivery", delivery));
        }
        if unblock {
            sqlx::query(
                "UPDATE subscriptions SET blocked_on = NULL, updated_at = $3 \
                 WHERE id = $1 AND blocked_on = $2",
            )
            .bind(lease.subscription().as_str())
            .bind(delivery.raw())
            .bind(at)
            .execute(&mut *tx)
            .await
            .map_err(sql_err(W))?;
        }
        tx.commit().await.map_err(sql_err("commit"))
    }

    pub(super) async fn pg_replay(
        &self,
        lease: &Lease,
        since_ms: i64,
        until_ms: i64,
    ) -> Result<u64> {
        let mut tx = self.fenced(lease, false).await?;
        let at = now_ms();
        let sub = lease.subscription().as_str();
        let n = sqlx::query(
            "UPDATE deliveries d SET state = 'pending', budget_used = 0, next_at = NULL, \
               started_at = NULL, holds_key = false, updated_at = $4 \
             FROM events e WHERE e.seq = d.event_seq AND d.subscription_id = $1 \
               AND d.state IN ('delivered', 'failed', 'skipped', 'dropped') \
               AND e.created_at >= $2 AND e.created_at < $3",
        )
        .bind(sub)
        .bind(since_ms)
        .bind(until_ms)
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(sql_err(W))?
        .rows_affected();
        // A subscription blocked on a delivery that is pending again is no longer blocked.
        sqlx::query(
            "UPDATE subscriptions SET blocked_on = NULL, updated_at = $2 \
             WHERE id = $1 AND blocked_on IN \
               (SELECT id FROM deliveries WHERE subscription_id = $1 AND state = 'pending')",
        )
        .bind(sub)
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(sql_err(W))?;
        tx.commit().await.map_err(sql_err("commit"))?;
        Ok(n)
    }
}

async fn mark(conn: &mut PgConnection, delivery: DeliveryId, attempts: u32, at: i64) -> Result<()> {
    sqlx::query(
        "UPDATE deliveries SET state = 'in_flight', attempts = $2, started_at = $3, \
         next_at = NULL, updated_at = $3 WHERE id = $1 AND state IN ('pending', 'in_flight')",
    )
    .bind(delivery.raw())
    .bind(i64::from(attempts))
    .bind(at)
    .execute(&mut *conn)
    .await
    .map_err(sql_err(W))?;
    Ok(())
}
