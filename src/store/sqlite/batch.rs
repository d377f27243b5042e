//! The two hot writes: publishing events with their fan-out, and recording attempt outcomes.
//!
//! Each operation still gets its own result, and a refusal (an unknown tenant) writes nothing for
//! that operation only. An attempt outcome whose delivery was deleted meanwhile (with its
//! subscription) records nothing.

use std::collections::HashSet;

use rusqlite::{Connection, OptionalExtension, params};

use super::writer::{AttemptRecord, Outcome, Routing};
use crate::domain::SubscriptionId;
use crate::domain::{Event, PublishReceipt};
use crate::error::{Error, Result};

/// Publishes every event of `groups` (one inner list per `Publish` operation) in arrival order:
/// the order of the inserts is what assigns `seq` and delivery ids.
pub(super) fn publish_many(
    conn: &Connection,
    routing: &Routing,
    groups: &[(&[Event], i64)],
    wakes: &mut HashSet<SubscriptionId>,
) -> rusqlite::Result<Vec<Result<Outcome>>> {
    let mut insert_event = conn.prepare_cached(
        "INSERT INTO events (tenant_id, id, notification_type, body, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (tenant_id, id) DO NOTHING RETURNING seq",
    )?;
    let mut insert_delivery = conn.prepare_cached(
        "INSERT INTO deliveries (subscription_id, event_seq, state, updated_at) \
         VALUES (?1, ?2, 'pending', ?3)",
    )?;
    let mut existing = conn.prepare_cached(
        "SELECT e.seq, (SELECT COUNT(*) FROM deliveries d WHERE d.event_seq = e.seq) \
         FROM events e WHERE e.tenant_id = ?1 AND e.id = ?2",
    )?;
    let mut outs = Vec::with_capacity(groups.len());
    for (events, at) in groups {
        let mut receipts = Vec::with_capacity(events.len());
        for event in *events {
            if !routing.has_tenant(&event.tenant_id) {
                receipts.push(Err(Error::not_found("tenant", &event.tenant_id)));
                continue;
            }
            let body = match serde_json::to_string(event) {
                Ok(b) => b,
                Err(e) => {
                    receipts.push(Err(Error::Internal(format!("event not serialisable: {e}"))));
                    continue;
                }
            };
            let seq: Option<i64> = insert_event
                .query_row(
                    params![
                        event.tenant_id.as_str(),
                        event.id.as_str(),
                        event.notification_type.as_str(),
                        body,
                        at,
                    ],
                    |r| r.get(0),
                )
                .optional()?;
            let receipt = match seq {
                Some(seq) => {
                    let mut n = 0;
                    for (sub, spec) in routing.subscriptions_of(&event.tenant_id) {
                        if spec.matches(event.notification_type, event.workflow_id.as_deref()) {
                            insert_delivery.execute(params![sub.as_str(), seq, at])?;
                            wakes.insert(sub.clone());
                            n += 1;
                        }
                    }
                    PublishReceipt {
                        id: event.id.clone(),
                        seq,
                        deliveries: n,
                        duplicate: false,
                    }
                }
                // Idempotent publish (also the same id twice in one batch): the first event
                // stands and nothing new is created.
                None => {
                    let (seq, n): (i64, i64) = existing
                        .query_row(params![event.tenant_id.as_str(), event.id.as_str()], |r| {
                            Ok((r.get(0)?, r.get(1)?))
                        })?;
                    PublishReceipt {
                        id: event.id.clone(),
                        seq,
                        deliveries: n as u32,
                        duplicate: true,
                    }
                }
            };
            receipts.push(Ok(receipt));
        }
        outs.push(Ok(Outcome::Receipts(receipts)));
    }
    Ok(outs)
}

/// Records a plain attempt outcome (no subscription flag changes) with ONE statement: the
/// `attempt_outcomes` view's trigger writes the attempt, the delivery's new state and the next
/// delivery's in-flight mark. One statement is atomic by itself, so the commit between two
/// deliveries of a busy subscription needs no BEGIN and COMMIT around it.
pub(super) fn record_outcome(
    conn: &Connection,
    r: &AttemptRecord,
    now: i64,
) -> rusqlite::Result<()> {
    let (next_id, next_n, next_at) = match r.next_in_flight {
        Some((id, n, at)) => (Some(id.raw()), Some(n), Some(at)),
        None => (None, None, None),
    };
    conn.prepare_cached(
        "INSERT INTO attempt_outcomes (delivery_id, n, started_at, duration_ms, status_code, \
           error_kind, error, response_snippet, transform_log, new_state, budget_used, next_at, \
           updated_at, next_id, next_n, next_started_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
    )?
    .execute(params![
        r.delivery.raw(),
        r.n,
        r.started_at,
        r.duration_ms as i64,
        r.status_code,
        r.error_kind,
        r.error,
        r.snippet,
        r.transform_log,
        r.new_status.as_str(),
        r.budget_used,
        r.next_at,
        now,
        next_id,
        next_n,
        next_at,
    ])?;
    Ok(())
}
