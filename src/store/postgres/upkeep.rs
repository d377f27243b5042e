//! Retention on PostgreSQL: one short transaction per batch of finished events.
//!
//! The same rule as the SQLite journal: an event is deleted, with its deliveries and their
//! attempts, once every delivery has been terminal for the retention's age; never with a
//! pending or in-flight delivery, nor with a failed delivery its subscription is blocked on.
//! The candidate events are locked `FOR UPDATE SKIP LOCKED`, so two nodes pruning at once take
//! different batches, and a replay (which locks the deliveries it reopens) is never undone.

use super::{PgStore, sql_err};
use crate::error::Result;

impl PgStore {
    pub(super) async fn pg_prune(
        &self,
        delivered_before: i64,
        failed_before: i64,
        batch: u32,
    ) -> Result<u64> {
        self.open_for_writes()?;
        let mut tx = self.pool().begin().await.map_err(sql_err("prune"))?;
        let seqs: Vec<i64> = sqlx::query_scalar(
            "SELECT e.seq FROM events e WHERE e.created_at < $1 \
               AND NOT EXISTS ( \
                 SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq AND ( \
                   d.state IN ('pending', 'in_flight') \
                   OR (d.state = 'failed' AND (d.updated_at >= $2 OR d.holds_key \
                        OR EXISTS (SELECT 1 FROM subscriptions s WHERE s.blocked_on = d.id))) \
                   OR (d.state <> 'failed' AND d.updated_at >= $1))) \
             ORDER BY e.created_at LIMIT $3 FOR UPDATE SKIP LOCKED",
        )
        .bind(delivered_before)
        .bind(failed_before)
        .bind(i64::from(batch))
        .fetch_all(&mut *tx)
        .await
        .map_err(sql_err("prune"))?;
        if seqs.is_empty() {
            return Ok(0);
        }
        // Deliveries locked and re-checked (a locked row is read at its latest version): one
        // reopened by a replay meanwhile keeps its event.
        let states: Vec<(i64, String)> = sqlx::query_as(
            "SELECT event_seq, state FROM deliveries WHERE event_seq = ANY($1) FOR UPDATE",
        )
        .bind(&seqs)
        .fetch_all(&mut *tx)
        .await
        .map_err(sql_err("prune"))?;
        let kept: Vec<i64> = states
            .into_iter()
            .filter(|(_, st)| st == "pending" || st == "in_flight")
            .map(|(seq, _)| seq)
            .collect();
        let doomed: Vec<i64> = seqs.into_iter().filter(|s| !kept.contains(s)).collect();
        sqlx::query("DELETE FROM deliveries WHERE event_seq = ANY($1)")
            .bind(&doomed)
            .execute(&mut *tx)
            .await
            .map_err(sql_err("prune"))?;
        let n = sqlx::query("DELETE FROM events WHERE seq = ANY($1)")
            .bind(&doomed)
            .execute(&mut *tx)
            .await
            .map_err(sql_err("prune"))?
            .rows_affected();
        tx.commit().await.map_err(sql_err("prune"))?;
        Ok(n)
    }
}
