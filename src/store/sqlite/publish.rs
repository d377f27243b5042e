//! Publishing: events and their fan-out, written by the operation that accepts them.
//!
//! Events are inserted in arrival order, which is what assigns `seq` and delivery ids, so `seq`
//! order is commit order. Fan-out matches against the writer's routing table, which always
//! agrees with the commit being built. Each publish still gets its own receipts, and a refusal
//! (an unknown tenant) writes nothing for that event only. A delivery to a subscription with
//! ordering keys gets its key computed here, once, with the subscription's ordering epoch
//! (docs/ordering.md).

use rusqlite::{CachedStatement, Connection, OptionalExtension, params};

use super::ops::{Cx, Op, Write};
use super::routing::Routing;
use crate::domain::{Event, PublishReceipt};
use crate::error::{Error, Result};

/// Events to accept together.
pub(super) struct Publish {
    pub events: Vec<Event>,
    pub at: i64,
}

impl Write for Publish {
    type Out = Vec<Result<PublishReceipt>>;

    fn apply(&self, cx: &mut Cx<'_>) -> rusqlite::Result<Result<Self::Out>> {
        let mut stmts = Statements::prepare(cx.conn)?;
        let receipts = stmts.publish(cx.routing, &self.events, self.at, cx.wakes)?;
        drop(stmts);
        cx.created(&receipts);
        Ok(Ok(receipts))
    }
}

/// Publishes `events` inside another write's transaction (an attempt's outcome carrying its
/// operational notifications), with the same fan-out and receipts as [`Publish`].
pub(super) fn publish_in(
    cx: &mut Cx<'_>,
    events: &[Event],
    at: i64,
) -> rusqlite::Result<Vec<Result<PublishReceipt>>> {
    let mut stmts = Statements::prepare(cx.conn)?;
    let receipts = stmts.publish(cx.routing, events, at, cx.wakes)?;
    drop(stmts);
    cx.created(&receipts);
    Ok(receipts)
}

/// Applies a run of consecutive publishes with the statements prepared once.
pub(super) fn publish_run(cx: &mut Cx<'_>, ops: &mut [Op]) -> rusqlite::Result<()> {
    let mut stmts = Statements::prepare(cx.conn)?;
    let mut max_seq = cx.max_seq;
    for op in ops {
        if let Op::Publish(call) = op {
            let receipts = stmts.publish(cx.routing, &call.req.events, call.req.at, cx.wakes)?;
            for r in receipts.iter().flatten().filter(|r| !r.duplicate) {
                max_seq = max_seq.max(r.seq);
            }
            call.settle(Ok(receipts));
        }
    }
    cx.max_seq = max_seq;
    Ok(())
}

struct Statements<'c> {
    insert_event: CachedStatement<'c>,
    insert_delivery: CachedStatement<'c>,
    existing: CachedStatement<'c>,
}

impl<'c> Statements<'c> {
    fn prepare(conn: &'c Connection) -> rusqlite::Result<Self> {
        Ok(Statements {
            insert_event: conn.prepare_cached(
                "INSERT INTO events (tenant_id, id, notification_type, body, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (tenant_id, id) DO NOTHING RETURNING seq",
            )?,
            insert_delivery: conn.prepare_cached(
                "INSERT INTO deliveries (subscription_id, event_seq, state, updated_at, \
                   order_key, order_epoch) VALUES (?1, ?2, 'pending', ?3, ?4, ?5)",
            )?,
            existing: conn.prepare_cached(
                "SELECT e.seq, (SELECT COUNT(*) FROM deliveries d WHERE d.event_seq = e.seq) \
                 FROM events e WHERE e.tenant_id = ?1 AND e.id = ?2",
            )?,
        })
    }

    /// One publish's events, in order; one receipt (or refusal) each.
    fn publish(
        &mut self,
        routing: &Routing,
        events: &[Event],
        at: i64,
        wakes: &mut std::collections::HashSet<crate::domain::SubscriptionId>,
    ) -> rusqlite::Result<Vec<Result<PublishReceipt>>> {
        let mut receipts = Vec::with_capacity(events.len());
        for event in events {
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
            let seq: Option<i64> = self
                .insert_event
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
                    // The envelope as JSON, built for the first subscription with ordering keys.
                    let mut envelope = None;
                    for (sub, spec) in routing.subscriptions_of(&event.tenant_id) {
                        if spec.matches(event.notification_type, event.workflow_id.as_deref()) {
                            let key = spec.ordering.as_ref().map(|o| {
                                // It serialised into `body` above; a failure here cannot
                                // happen, and would only put the event in the no-key sequence.
                                o.key_of(envelope.get_or_insert_with(|| {
                                    serde_json::to_value(event).unwrap_or_default()
                                }))
                            });
                            self.insert_delivery.execute(params![
                                sub.as_str(),
                                seq,
                                at,
                                key,
                                spec.order_epoch
                            ])?;
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
                    let (seq, n): (i64, i64) = self
                        .existing
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
        Ok(receipts)
    }
}
