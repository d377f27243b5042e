//! The writer's side of a subscription's queue: acquiring it, marking attempts in flight,
//! recording outcomes, and the operator's changes of a delivery's status.
//!
//! Every operation here but [`Acquire`] carries the holder's lease and is refused with
//! `LeaseLost`, writing nothing, unless that lease is the subscription's current one (checked
//! in the writer, in commit order; see `leases`).

use rusqlite::{Connection, params};

use super::catalog::{SetFlags, set_flags};
use super::ops::{Cx, Write};
use super::recovery::interrupt_in_flight;
use crate::domain::clock::now_ms;
use crate::domain::{DeliveryId, DeliveryStatus, SubscriptionId};
use crate::error::{Error, Result};
use crate::store::{AttemptRecord, KeyFollow, Lease, QueuedDelivery};

/// Takes a subscription's queue over: a new lease, and the previous holder's attempts left in
/// flight logged as interrupted.
pub(super) struct Acquire {
    pub sub: SubscriptionId,
    pub at: i64,
}

impl Write for Acquire {
    type Out = Lease;
    const PROGRESS: bool = true;

    fn apply(&self, cx: &mut Cx<'_>) -> rusqlite::Result<Result<Lease>> {
        interrupt_in_flight(cx.conn, Some(&self.sub), self.at)?;
        Ok(Ok(cx.leases.grant(&self.sub)))
    }
}

/// An attempt started.
pub(super) struct MarkInFlight {
    pub lease: Lease,
    pub delivery: DeliveryId,
    pub attempts: u32,
    pub at: i64,
}

impl Write for MarkInFlight {
    type Out = ();
    const PROGRESS: bool = true;

    fn apply(&self, cx: &mut Cx<'_>) -> rusqlite::Result<Result<()>> {
        if let Err(e) = cx.leases.check(&self.lease) {
            return Ok(Err(e));
        }
        mark_in_flight(cx.conn, self.delivery, self.attempts, self.at)?;
        Ok(Ok(()))
    }
}

fn mark_in_flight(
    conn: &Connection,
    delivery: DeliveryId,
    attempts: u32,
    at: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE deliveries SET state = 'in_flight', attempts = ?2, started_at = ?3, \
         next_at = NULL, updated_at = ?3 WHERE id = ?1 AND state IN ('pending', 'in_flight')",
    )?
    .execute(params![delivery.raw(), i64::from(attempts), at])?;
    Ok(())
}

/// An attempt's outcome (boxed: the record is large and this is the most frequent write).
pub(super) struct RecordAttempt {
    pub lease: Lease,
    pub record: Box<AttemptRecord>,
    /// Once recorded, read this key's next delivery on the writer's connection (see
    /// [`Queue::record_attempt_following`](crate::store::Queue::record_attempt_following)).
    pub follow: Option<KeyFollow>,
}

impl RecordAttempt {
    /// No flag change, no key held and no notification: one statement does it all (see
    /// [`record_outcome`]).
    pub(super) fn is_plain(&self) -> bool {
        self.record.flags.is_none() && !self.record.holds_key && self.record.notices.is_empty()
    }
}

impl Write for RecordAttempt {
    /// The read `follow` asked for (`None`: none asked). A read that fails does not fail the
    /// record: the actor rebuilds its lanes instead.
    type Out = Option<Result<Option<QueuedDelivery>>>;
    const PROGRESS: bool = true;

    fn apply(&self, cx: &mut Cx<'_>) -> rusqlite::Result<Result<Self::Out>> {
        let recorded = self.record(cx)?;
        let (Ok(()), Some(f)) = (&recorded, &self.follow) else {
            return Ok(recorded.map(|()| None));
        };
        let sub = self.lease.subscription();
        let next =
            super::reads::next_in_group_on(cx.conn, sub, f.order_epoch, &f.order_key, f.after_seq)
                .map_err(|e| Error::unavailable("reading a key's next delivery failed", e))
                .and_then(|raw| raw.map(super::rows::queued).transpose());
        Ok(Ok(Some(next)))
    }
}

impl RecordAttempt {
    fn record(&self, cx: &mut Cx<'_>) -> rusqlite::Result<Result<()>> {
        if let Err(e) = cx.leases.check(&self.lease) {
            return Ok(Err(e));
        }
        let rec = &self.record;
        let now = now_ms();
        if self.is_plain() {
            record_outcome(cx.conn, rec, now)?;
            return Ok(Ok(()));
        }
        cx.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO attempts \
                 (delivery_id, n, started_at, duration_ms, status_code, error_kind, error, \
                  response_snippet, transform_log) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![
                rec.delivery.raw(),
                i64::from(rec.n),
                rec.started_at,
                rec.duration_ms as i64,
                rec.status_code.map(i64::from),
                rec.error_kind.map(crate::policy::ErrorKind::as_str),
                rec.error,
                rec.snippet,
                rec.transform_log,
            ])?;
        let n = cx
            .conn
            .prepare_cached(
                "UPDATE deliveries SET state = ?2, attempts = ?3, budget_used = ?4, \
                 next_at = ?5, started_at = NULL, last_status = ?6, last_error = ?7, \
                 updated_at = ?8, holds_key = ?9 WHERE id = ?1",
            )?
            .execute(params![
                rec.delivery.raw(),
                rec.new_status.as_str(),
                i64::from(rec.n),
                i64::from(rec.budget_used),
                rec.next_at,
                rec.status_code.map(i64::from),
                rec.error,
                now,
                rec.holds_key,
            ])?;
        if n == 0 {
            // The subscription was deleted while the attempt ran; nothing left to record.
            return Ok(match rec.flags {
                None => Ok(()),
                Some(_) => Err(Error::not_found("delivery", rec.delivery)),
            });
        }
        if let Some((next, attempts, at)) = rec.next_in_flight {
            mark_in_flight(cx.conn, next, attempts, at)?;
        }
        if !rec.notices.is_empty() {
            // In this commit: the transition and its notification are durable together. A
            // refused notice (no system tenant) is dropped; the outcome still records.
            let receipts = super::publish::publish_in(cx, &rec.notices, now)?;
            for r in receipts.iter().filter_map(|r| r.as_ref().err()) {
                tracing::debug!(error = %r, "operational notification not journaled");
            }
        }
        let Some(flags) = &rec.flags else {
            return Ok(Ok(()));
        };
        let change = SetFlags {
            lease: None,
            id: rec.subscription.clone(),
            flags: flags.clone(),
            at: now,
        };
        Ok(set_flags(cx, &change)?.map(|_| ()))
    }
}

/// Records a plain attempt outcome (no subscription flag changes) with ONE statement: the
/// `attempt_outcomes` view's trigger writes the attempt, the delivery's new state and the next
/// delivery's in-flight mark. One statement is atomic by itself, so the commit between two
/// deliveries of a busy subscription needs no BEGIN and COMMIT around it. A delivery deleted
/// meanwhile (with its subscription) records nothing.
fn record_outcome(conn: &Connection, r: &AttemptRecord, now: i64) -> rusqlite::Result<()> {
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
        r.error_kind.map(crate::policy::ErrorKind::as_str),
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

/// An operator's skip or resubmit of one delivery; either ends a hold on its key.
pub(super) struct SetDeliveryStatus {
    pub lease: Lease,
    pub delivery: DeliveryId,
    pub status: DeliveryStatus,
    pub reset_budget: bool,
    /// Unblock the lease's subscription if it is blocked on this delivery.
    pub unblock: bool,
    pub at: i64,
}

impl Write for SetDeliveryStatus {
    type Out = ();

    fn apply(&self, cx: &mut Cx<'_>) -> rusqlite::Result<Result<()>> {
        if let Err(e) = cx.leases.check(&self.lease) {
            return Ok(Err(e));
        }
        let n = cx
            .conn
            .prepare_cached(
                "UPDATE deliveries SET state = ?2, holds_key = 0, \
                   budget_used = CASE WHEN ?3 THEN 0 ELSE budget_used END, \
                   next_at = NULL, updated_at = ?4 WHERE id = ?1",
            )?
            .execute(params![
                self.delivery.raw(),
                self.status.as_str(),
                self.reset_budget,
                self.at
            ])?;
        if n == 0 {
            return Ok(Err(Error::not_found("delivery", self.delivery)));
        }
        if self.unblock {
            cx.conn
                .prepare_cached(
                    "UPDATE subscriptions SET blocked_on = NULL, updated_at = ?3 \
                     WHERE id = ?1 AND blocked_on = ?2",
                )?
                .execute(params![
                    self.lease.subscription().as_str(),
                    self.delivery.raw(),
                    self.at
                ])?;
        }
        Ok(Ok(()))
    }
}
