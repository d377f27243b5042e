//! The writer's side of operator upkeep: replay of finished deliveries, and retention.
//!
//! # Invariants
//! - **Replay** resets a subscription's terminal deliveries (delivered, failed, skipped,
//!   dropped) whose events were accepted in a window back to `pending`, keeping their rows, ids
//!   and attempt logs (new attempts continue the numbering) and giving them a fresh retry
//!   budget. It carries the subscription's lease, so its holder stays the only writer of its
//!   deliveries' states. The queue is ordered by `seq`, so replayed deliveries go out in their
//!   original order, ahead of pending deliveries with a higher `seq` (normally all of them),
//!   after the attempt in flight, if any, ends.
//! - **Retention** deletes, in one short write transaction per batch, events every delivery of
//!   which has been terminal for the configured age, with those deliveries and their attempts.
//!   An event with a pending or in-flight delivery, or with a failed delivery its subscription
//!   is blocked on, is never deleted. Replay and pruning are serialised by the writer, so a
//!   replayed delivery is never pruned under its holder's feet.
//! - Freed pages are reused by SQLite, so under a steady load the file stops growing once
//!   pruning keeps up with intake (the test `ops::retention_keeps_the_file_bounded` measures it).

use rusqlite::params;

use super::ops::{Cx, Write};
use crate::error::Result;
use crate::store::Lease;

pub(super) struct Replay {
    pub lease: Lease,
    pub since_ms: i64,
    pub until_ms: i64,
    pub at: i64,
}

impl Write for Replay {
    /// How many deliveries went back to pending.
    type Out = u64;

    fn apply(&self, cx: &mut Cx<'_>) -> rusqlite::Result<Result<u64>> {
        if let Err(e) = cx.leases.check(&self.lease) {
            return Ok(Err(e));
        }
        let sub = self.lease.subscription().as_str();
        let n = cx
            .conn
            .prepare_cached(
                "UPDATE deliveries SET state = 'pending', budget_used = 0, next_at = NULL, \
                   started_at = NULL, holds_key = 0, updated_at = ?4 \
                 WHERE subscription_id = ?1 \
                   AND state IN ('delivered', 'failed', 'skipped', 'dropped') \
                   AND EXISTS (SELECT 1 FROM events e WHERE e.seq = deliveries.event_seq \
                               AND e.created_at >= ?2 AND e.created_at < ?3)",
            )?
            .execute(params![sub, self.since_ms, self.until_ms, self.at])?;
        crate::crashpoint::hit("replay");
        // A subscription blocked on a delivery that is pending again is no longer blocked.
        cx.conn
            .prepare_cached(
                "UPDATE subscriptions SET blocked_on = NULL, updated_at = ?2 \
                 WHERE id = ?1 AND blocked_on IN \
                   (SELECT id FROM deliveries WHERE subscription_id = ?1 AND state = 'pending')",
            )?
            .execute(params![sub, self.at])?;
        Ok(Ok(n as u64))
    }
}

/// One batch of retention.
pub(super) struct Prune {
    pub delivered_before: i64,
    pub failed_before: i64,
    pub batch: u32,
}

impl Write for Prune {
    /// How many events were deleted.
    type Out = u64;

    fn apply(&self, cx: &mut Cx<'_>) -> rusqlite::Result<Result<u64>> {
        // A delivery's `updated_at` is never before its event's `created_at`, so only events
        // older than the cutoff are candidates; the index walks them oldest first and stops at
        // `batch`.
        let seqs: Vec<i64> = cx
            .conn
            .prepare_cached(
                "SELECT e.seq FROM events e INDEXED BY events_by_created \
                 WHERE e.created_at < ?1 \
                   AND NOT EXISTS ( \
                     SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq AND ( \
                       d.state IN ('pending', 'in_flight') \
                       OR (d.state = 'failed' AND (d.updated_at >= ?2 OR d.holds_key = 1 \
                            OR EXISTS (SELECT 1 FROM subscriptions s WHERE s.blocked_on = d.id))) \
                       OR (d.state <> 'failed' AND d.updated_at >= ?1))) \
                 ORDER BY e.created_at LIMIT ?3",
            )?
            .query_map(
                params![
                    self.delivered_before,
                    self.failed_before,
                    i64::from(self.batch)
                ],
                |r| r.get(0),
            )?
            .collect::<rusqlite::Result<_>>()?;
        let mut deliveries = cx
            .conn
            .prepare_cached("DELETE FROM deliveries WHERE event_seq = ?1")?;
        let mut events = cx
            .conn
            .prepare_cached("DELETE FROM events WHERE seq = ?1")?;
        let mut n = 0u64;
        for seq in seqs {
            deliveries.execute([seq])?;
            n += events.execute([seq])? as u64;
            crate::crashpoint::hit("prune");
        }
        // The dashboard's per-minute rollup (migration 0008) is read over a day at most; older
        // rows go with each retention pass, by its minute index.
        let two_days_ago = crate::domain::clock::now_ms().saturating_sub(2 * 86_400_000);
        cx.conn
            .prepare_cached("DELETE FROM attempt_minutes WHERE minute < ?1")?
            .execute([two_days_ago.div_euclid(60_000)])?;
        Ok(Ok(n))
    }
}
