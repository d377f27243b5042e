//! Operator upkeep of the journal: replay of finished deliveries, retention (pruning of
//! finished events), and the queue statistics behind the metrics.
//!
//! # Invariants
//! - **Replay** resets a subscription's terminal deliveries (delivered, failed, skipped,
//!   dropped) whose events were accepted in a window back to `pending`, keeping their rows, ids
//!   and attempt logs (new attempts continue the numbering) and giving them a fresh retry
//!   budget. It is a writer operation sent by the subscription's own actor, so the actor stays
//!   the only writer of its deliveries' states. The queue is ordered by `seq`, so replayed
//!   deliveries go out in their original order, ahead of pending deliveries with a higher
//!   `seq` (normally all of them), after the attempt in flight, if any, ends.
//! - **Retention** deletes, in one short write transaction per batch, events every delivery of
//!   which has been terminal for the configured age, with those deliveries and their attempts.
//!   An event with a pending or in-flight delivery, or with a failed delivery its subscription
//!   is blocked on, is never deleted. Replay and pruning are serialised by the writer, so a
//!   replayed delivery is never pruned under the actor's feet.
//! - Freed pages are reused by SQLite, so under a steady load the file stops growing once
//!   pruning keeps up with intake (the test `ops::retention_keeps_the_file_bounded` measures it).

use std::time::Duration;

use rusqlite::{Connection, params};
use sqlx::Row;

use super::writer::{Op, Outcome};
use super::{Journal, sql_err, unexpected};
use crate::domain::SubscriptionId;
use crate::domain::clock::now_ms;
use crate::error::{Error, Result};
use crate::metrics::QueueStat;
use crate::store::Retention;

impl Journal {
    /// Puts `sub`'s terminal deliveries of events accepted in `[since_ms, until_ms)` back to
    /// pending. Returns how many. Only the subscription's actor calls this.
    pub(crate) async fn replay(
        &self,
        sub: SubscriptionId,
        since_ms: i64,
        until_ms: i64,
    ) -> Result<u64> {
        match self
            .call(Op::Replay {
                sub,
                since_ms,
                until_ms,
                at: now_ms(),
            })
            .await?
        {
            Outcome::Count(n) => Ok(n),
            other => Err(unexpected(other)),
        }
    }

    /// Prunes one batch of finished events; returns how many were deleted.
    pub(crate) async fn prune(&self, r: &Retention) -> Result<u64> {
        let now = now_ms();
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let n = match self
            .call(Op::Prune {
                delivered_before: now.saturating_sub(ms(r.delivered_after)),
                failed_before: now.saturating_sub(ms(r.failed_after)),
                batch: r.batch_size,
            })
            .await?
        {
            Outcome::Count(n) => n,
            other => return Err(unexpected(other)),
        };
        self.inner.metrics.pruned(n);
        Ok(n)
    }

    /// Every subscription's open queue: depth and age of the oldest open delivery's event.
    pub(crate) async fn queue_stats(&self) -> Result<Vec<QueueStat>> {
        let rows = sqlx::query(
            "SELECT q.sub, q.n, e.created_at FROM \
               (SELECT subscription_id AS sub, COUNT(*) AS n, MIN(event_seq) AS first \
                FROM deliveries WHERE state IN ('pending', 'in_flight') \
                GROUP BY subscription_id) q \
             JOIN events e ON e.seq = q.first",
        )
        .fetch_all(self.pool())
        .await
        .map_err(sql_err("read"))?;
        let now = now_ms();
        Ok(rows
            .iter()
            .map(|r| QueueStat {
                subscription: r.get(0),
                depth: r.get::<i64, _>(1).max(0) as u64,
                oldest_age: Duration::from_millis(
                    now.saturating_sub(r.get::<i64, _>(2)).max(0) as u64
                ),
            })
            .collect())
    }

    /// Spawns the background pruner: a pass every `interval`, batch after batch until a batch
    /// comes back short. Each batch is one writer operation, so deliveries' commits are
    /// interleaved with it and never wait for a whole pass.
    pub(crate) fn spawn_pruner(&self, r: Retention) -> Option<tokio::task::JoinHandle<()>> {
        if !r.enabled {
            return None;
        }
        let journal = self.clone();
        Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(r.interval).await;
                loop {
                    match journal.prune(&r).await {
                        Ok(n) if n >= u64::from(r.batch_size) => tokio::task::yield_now().await,
                        Ok(n) => {
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
}

/// The writer's side of [`Journal::replay`].
pub(super) fn apply_replay(
    conn: &Connection,
    sub: &SubscriptionId,
    since_ms: i64,
    until_ms: i64,
    at: i64,
) -> rusqlite::Result<Result<Outcome>> {
    let n = conn
        .prepare_cached(
            "UPDATE deliveries SET state = 'pending', budget_used = 0, next_at = NULL, \
               started_at = NULL, updated_at = ?4 \
             WHERE subscription_id = ?1 \
               AND state IN ('delivered', 'failed', 'skipped', 'dropped') \
               AND EXISTS (SELECT 1 FROM events e WHERE e.seq = deliveries.event_seq \
                           AND e.created_at >= ?2 AND e.created_at < ?3)",
        )?
        .execute(params![sub.as_str(), since_ms, until_ms, at])?;
    // A subscription blocked on a delivery that is pending again is no longer blocked.
    conn.prepare_cached(
        "UPDATE subscriptions SET blocked_on = NULL, updated_at = ?2 \
         WHERE id = ?1 AND blocked_on IN \
           (SELECT id FROM deliveries WHERE subscription_id = ?1 AND state = 'pending')",
    )?
    .execute(params![sub.as_str(), at])?;
    Ok(Ok(Outcome::Count(n as u64)))
}

/// The writer's side of [`Journal::prune`].
pub(super) fn apply_prune(
    conn: &Connection,
    delivered_before: i64,
    failed_before: i64,
    batch: u32,
) -> rusqlite::Result<Result<Outcome>> {
    // A delivery's `updated_at` is never before its event's `created_at`, so only events older
    // than the cutoff are candidates; the index walks them oldest first and stops at `batch`.
    let seqs: Vec<i64> = conn
        .prepare_cached(
            "SELECT e.seq FROM events e INDEXED BY events_by_created \
             WHERE e.created_at < ?1 \
               AND NOT EXISTS ( \
                 SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq AND ( \
                   d.state IN ('pending', 'in_flight') \
                   OR (d.state = 'failed' AND (d.updated_at >= ?2 OR EXISTS \
                        (SELECT 1 FROM subscriptions s WHERE s.blocked_on = d.id))) \
                   OR (d.state <> 'failed' AND d.updated_at >= ?1))) \
             ORDER BY e.created_at LIMIT ?3",
        )?
        .query_map(
            params![delivered_before, failed_before, i64::from(batch)],
            |r| r.get(0),
        )?
        .collect::<rusqlite::Result<_>>()?;
    let mut deliveries = conn.prepare_cached("DELETE FROM deliveries WHERE event_seq = ?1")?;
    let mut events = conn.prepare_cached("DELETE FROM events WHERE seq = ?1")?;
    let mut n = 0u64;
    for seq in seqs {
        deliveries.execute([seq])?;
        n += events.execute([seq])? as u64;
    }
    Ok(Ok(Outcome::Count(n)))
}
