//! Set-based writes: a run of publishes, or of attempt records, in a few statements.
//!
//! sqlx runs every statement on the connection's worker thread, so each statement costs two
//! thread hand-offs besides SQLite's own work. Written one row at a time, a fan-out of one event
//! to 100 subscriptions was 101 statements and an attempt record three; under load the writer
//! spent its time waking threads. Here a run of consecutive operations of one kind is written with
//! a fixed number of statements whatever its size: the rows travel as one JSON array parameter
//! and SQLite's `json_each` expands it (`ORDER BY key` keeps the array order, which is what
//! assigns `seq` and delivery ids in publish order).
//!
//! Each operation still gets its own result, and a refusal (an unknown tenant) writes nothing for
//! that operation only, exactly as the one-at-a-time path did. An attempt outcome whose delivery
//! was deleted meanwhile (with its subscription) records nothing.

use std::collections::{HashMap, HashSet};

use serde_json::{Value, json};
use sqlx::Row;
use sqlx::sqlite::SqliteConnection;

use super::writer::{AttemptRecord, Outcome, Routing};
use crate::error::{Error, Result};
use crate::id::SubscriptionId;
use crate::model::{Event, PublishReceipt};

/// Publishes every event of `groups` (one inner list per `Publish` operation) in arrival order.
pub(super) async fn publish_many(
    conn: &mut SqliteConnection,
    routing: &Routing,
    groups: &[(&[Event], i64)],
    wakes: &mut HashSet<SubscriptionId>,
) -> sqlx::Result<Vec<Result<Outcome>>> {
    // Per event: a refusal, or its row in the insert.
    let mut rows = Vec::new();
    let mut prepared: Vec<Vec<Result<usize>>> = Vec::with_capacity(groups.len());
    for (events, at) in groups {
        let mut results = Vec::with_capacity(events.len());
        for event in *events {
            if !routing.has_tenant(&event.tenant_id) {
                results.push(Err(Error::not_found("tenant", &event.tenant_id)));
                continue;
            }
            match serde_json::to_string(event) {
                Ok(body) => {
                    results.push(Ok(rows.len()));
                    rows.push(json!([
                        event.tenant_id.as_str(),
                        event.id.as_str(),
                        event.notification_type.as_str(),
                        body,
                        at,
                    ]));
                }
                Err(e) => {
                    results.push(Err(Error::Internal(format!("event not serialisable: {e}"))))
                }
            }
        }
        prepared.push(results);
    }

    // (tenant, id) → seq of the rows this statement inserted; the others already existed.
    let mut inserted: HashMap<(String, String), i64> = HashMap::new();
    if !rows.is_empty() {
        let inserted_rows = sqlx::query(
            "INSERT INTO events (tenant_id, id, notification_type, body, created_at) \
             SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4 \
             FROM json_each(?1) WHERE true ORDER BY key \
             ON CONFLICT (tenant_id, id) DO NOTHING RETURNING seq, tenant_id, id",
        )
        .bind(Value::Array(rows).to_string())
        .fetch_all(&mut *conn)
        .await?;
        for r in &inserted_rows {
            inserted.insert((r.get(1), r.get(2)), r.get(0));
        }
    }

    // Fan out the new events, in seq order, with one statement.
    let mut deliveries = Vec::new();
    let mut counts: HashMap<i64, u32> = HashMap::new();
    let mut claimed: HashSet<i64> = HashSet::new();
    // Per event: Some(seq) if this publish created it.
    let mut created: Vec<Vec<Option<i64>>> = Vec::with_capacity(groups.len());
    for ((events, at), results) in groups.iter().zip(&prepared) {
        let mut mine = Vec::with_capacity(events.len());
        for (event, r) in events.iter().zip(results) {
            let seq = match r {
                Ok(_) => inserted
                    .get(&(event.tenant_id.to_string(), event.id.to_string()))
                    .copied()
                    // The same id twice in one batch: the first publish creates it.
                    .filter(|seq| claimed.insert(*seq)),
                Err(_) => None,
            };
            if let Some(seq) = seq {
                let mut n = 0;
                for (sub, spec) in routing.subscriptions_of(&event.tenant_id) {
                    if spec.matches(event.notification_type, event.workflow_id.as_deref()) {
                        deliveries.push(json!([sub.as_str(), seq, at]));
                        wakes.insert(sub.clone());
                        n += 1;
                    }
                }
                counts.insert(seq, n);
            }
            mine.push(seq);
        }
        created.push(mine);
    }
    if !deliveries.is_empty() {
        sqlx::query(
            "INSERT INTO deliveries (subscription_id, event_seq, state, updated_at) \
             SELECT value ->> 0, value ->> 1, 'pending', value ->> 2 FROM json_each(?1) \
             ORDER BY key",
        )
        .bind(Value::Array(deliveries).to_string())
        .execute(&mut *conn)
        .await?;
    }

    let mut outs = Vec::with_capacity(groups.len());
    for (((events, _), results), mine) in groups.iter().zip(prepared).zip(created) {
        let mut receipts = Vec::with_capacity(events.len());
        for ((event, r), seq) in events.iter().zip(results).zip(mine) {
            receipts.push(match (r, seq) {
                (Err(e), _) => Err(e),
                (Ok(_), Some(seq)) => Ok(PublishReceipt {
                    id: event.id.clone(),
                    seq,
                    deliveries: counts.get(&seq).copied().unwrap_or(0),
                    duplicate: false,
                }),
                // Idempotent publish: the original event stands and nothing new is created.
                (Ok(_), None) => {
                    let row = sqlx::query(
                        "SELECT e.seq, (SELECT COUNT(*) FROM deliveries d WHERE d.event_seq = e.seq) \
                         FROM events e WHERE e.tenant_id = ?1 AND e.id = ?2",
                    )
                    .bind(event.tenant_id.as_str())
                    .bind(event.id.as_str())
                    .fetch_one(&mut *conn)
                    .await?;
                    Ok(PublishReceipt {
                        id: event.id.clone(),
                        seq: row.get(0),
                        deliveries: row.get::<i64, _>(1) as u32,
                        duplicate: true,
                    })
                }
            });
        }
        outs.push(Ok(Outcome::Receipts(receipts)));
    }
    Ok(outs)
}

/// Records plain attempt outcomes (no subscription flag changes) with ONE statement and no
/// explicit transaction: the `attempt_outcomes` view's trigger writes each row's attempt,
/// delivery state and next in-flight mark, and a single statement is atomic by itself. This is
/// the commit between two deliveries of a busy subscription, so its round trips to sqlx's
/// worker thread bound one subscription's rate: one here, against five with BEGIN, three
/// statements and COMMIT.
pub(super) async fn record_outcomes(
    conn: &mut SqliteConnection,
    records: &[&AttemptRecord],
    now: i64,
) -> sqlx::Result<Vec<Result<Outcome>>> {
    let rows: Vec<Value> = records
        .iter()
        .map(|r| {
            let (next_id, next_n, next_at) = match r.next_in_flight {
                Some((id, n, at)) => (Some(id.raw()), Some(n), Some(at)),
                None => (None, None, None),
            };
            json!([
                r.delivery.raw(),
                r.n,
                r.started_at,
                r.duration_ms,
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
            ])
        })
        .collect();
    sqlx::query(
        "INSERT INTO attempt_outcomes (delivery_id, n, started_at, duration_ms, status_code, \
           error_kind, error, response_snippet, transform_log, new_state, budget_used, next_at, \
           updated_at, next_id, next_n, next_started_at) \
         SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, \
           value ->> 6, value ->> 7, value ->> 8, value ->> 9, value ->> 10, value ->> 11, \
           value ->> 12, value ->> 13, value ->> 14, value ->> 15 \
         FROM json_each(?1) ORDER BY key",
    )
    .bind(Value::Array(rows).to_string())
    .execute(&mut *conn)
    .await?;
    Ok(records.iter().map(|_| Ok(Outcome::Unit)).collect())
}
