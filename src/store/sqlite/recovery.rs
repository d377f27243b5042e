//! Crash recovery (guarantee 7): attempts cut short by a stop are logged as interrupted and
//! retried.
//!
//! At open, every delivery left `in_flight` gets an `interrupted` attempt (numbered as the
//! attempt it was) and goes back to `pending`, where it is retried without consuming retry
//! budget; the subscriptions with open deliveries are reported so the engine resumes them in
//! order. The same is done for one subscription when its queue is acquired again (an actor
//! restarted after a failure), so the attempt log never has a gap.

use std::collections::HashSet;

use crate::domain::SubscriptionId;
use crate::domain::clock::now_ms;
use crate::error::{Error, Result};
use crate::store::Recovery;

/// Logs every attempt still marked in flight (of one subscription, or of all) as `interrupted`
/// and puts its delivery back to pending. Returns how many attempts were logged.
pub(super) fn interrupt_in_flight(
    conn: &rusqlite::Connection,
    sub: Option<&SubscriptionId>,
    now: i64,
) -> rusqlite::Result<u64> {
    let sub = sub.map(SubscriptionId::as_str);
    let logged = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO attempts \
               (delivery_id, n, started_at, duration_ms, error_kind, error) \
             SELECT id, attempts, COALESCE(started_at, updated_at), \
                    MAX(0, ?1 - COALESCE(started_at, updated_at)), ?2, \
                    'hookline stopped while this attempt was in flight' \
             FROM deliveries WHERE state = 'in_flight' AND attempts > 0 \
               AND (?3 IS NULL OR subscription_id = ?3)",
        )?
        .execute(rusqlite::params![
            now,
            crate::policy::ErrorKind::Interrupted.as_str(),
            sub
        ])?;
    conn.prepare_cached(
        "UPDATE deliveries SET state = 'pending', started_at = NULL, last_error = 'interrupted', \
         updated_at = ?1 WHERE state = 'in_flight' AND (?2 IS NULL OR subscription_id = ?2)",
    )?
    .execute(rusqlite::params![now, sub])?;
    Ok(logged as u64)
}

/// Recovery at open, in one transaction on the writer's connection before the writer starts.
pub(super) fn recover(conn: &mut rusqlite::Connection) -> Result<Recovery> {
    let sql = |e: rusqlite::Error| Error::unavailable("journal recovery failed", e);
    let now = now_ms();
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(sql)?;
    let interrupted = interrupt_in_flight(&tx, None, now).map_err(sql)?;
    crate::crashpoint::hit("recovery");
    let open: HashSet<String> = tx
        .prepare(
            "SELECT DISTINCT subscription_id FROM deliveries \
             WHERE state IN ('pending', 'in_flight')",
        )
        .map_err(sql)?
        .query_map([], |r| r.get(0))
        .map_err(sql)?
        .collect::<rusqlite::Result<_>>()
        .map_err(sql)?;
    tx.commit().map_err(sql)?;
    Ok(Recovery {
        interrupted,
        open_subscriptions: open.into_iter().map(SubscriptionId::from).collect(),
    })
}
