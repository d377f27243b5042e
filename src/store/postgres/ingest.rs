//! Publishing on PostgreSQL: events and their fan-out in one transaction, numbered per
//! subscription in commit order.
//!
//! One group of publishes (see [`group`](super::group): concurrent publishes on a node share a
//! commit) is one transaction: the tenants' subscriptions are read (a subscription whose
//! creation committed before this publish began is routed to), the events are inserted in one
//! statement (idempotent on `(tenant, id)`: a duplicate creates nothing and gets the first
//! receipt), then the `sub_tail` rows of every subscription receiving a delivery are locked
//! **in subscription id order** (so concurrent publishes never deadlock) and the deliveries
//! numbered from them.
//! The lock is held until the commit, so a subscription's `seq` order is its events' commit
//! order. A delivery to a subscription with ordering keys gets its key computed here, once,
//! from the spec's pointer, with the spec's ordering epoch (docs/ordering.md). The wake
//! notification is sent in the same transaction (delivered on commit only); the caller is
//! answered after the commit (guarantee 1).
//!
//! A subscription deleted while the publish runs gets no delivery (its `sub_tail` row is gone
//! by the time it is locked, or its delete waits for this commit and takes the deliveries with
//! it). Every insert happens before any `sub_tail` lock is taken, so a publish waiting on
//! another's event insert (the same id at once) holds no lock the other needs.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use sqlx::Row;
use sqlx::postgres::PgConnection;

use super::{PgStore, WAKE_CHANNEL, listen, sql_err};
use crate::domain::clock::now_ms;
use crate::domain::ordering;
use crate::domain::{Event, PublishReceipt, SubscriptionId, TenantId};
use crate::error::{Error, Result};

const W: &str = "publish";

/// One subscription's filters, as a publish routes by them.
struct Route {
    id: SubscriptionId,
    types: Vec<String>,
    workflows: Vec<String>,
    /// The spec's `ordering.key` pointer and ordering epoch (docs/ordering.md).
    order_pointer: Option<String>,
    order_epoch: i64,
}

impl Route {
    /// The same rule as [`SubscriptionSpec::matches`](crate::domain::SubscriptionSpec).
    fn matches(&self, event: &Event) -> bool {
        let ty = event.notification_type.as_str();
        let type_ok = self.types.is_empty() || self.types.iter().any(|t| t == ty);
        let wf_ok = self.workflows.is_empty()
            || event
                .workflow_id
                .as_deref()
                .is_some_and(|w| self.workflows.iter().any(|x| x == w));
        type_ok && wf_ok
    }
}

/// An event accepted by this publish, and the subscriptions it goes to.
struct Accepted {
    index: usize,
    seq: i64,
    subs: Vec<Fanned>,
}

/// One delivery of an accepted event: its subscription, ordering key and epoch.
struct Fanned {
    sub: SubscriptionId,
    key: Option<String>,
    epoch: i64,
}

impl PgStore {
    /// Publishes `events` in a group commit with the other publishes waiting (see [`group`]).
    ///
    /// [`group`]: super::group
    pub(super) async fn pg_publish(
        &self,
        events: Vec<Event>,
        wait: Duration,
    ) -> Result<Vec<Result<PublishReceipt>>> {
        self.open_for_writes()?;
        let _permit = match tokio::time::timeout(wait, self.inner.intake.acquire()).await {
            Ok(Ok(p)) => p,
            Ok(Err(_)) => return Err(Error::ShuttingDown),
            Err(_) => return Err(Error::Overloaded),
        };
        self.grouped(events).await
    }

    /// One transaction publishing `events` (the publishes of one group, concatenated).
    pub(super) async fn publish_tx(
        &self,
        events: Vec<Event>,
    ) -> Result<Vec<Result<PublishReceipt>>> {
        let at = now_ms();
        let mut tx = self.pool().begin().await.map_err(sql_err(W))?;
        // Bounded up to the commit only: once COMMIT is sent its outcome is the database's, and
        // answering before it would say "nothing was accepted" without knowing.
        let (receipts, woken) = tokio::time::timeout(
            super::PUBLISH_STATEMENTS_WAIT,
            self.publish_in(&mut tx, &events, at),
        )
        .await
        .map_err(|elapsed| {
            Error::unavailable("postgres publish got no answer before its commit", elapsed)
        })??;
        tx.commit().await.map_err(sql_err("commit"))?;
        if !woken.is_empty() {
            self.inner.wakes.wake(woken);
        }
        Ok(receipts)
    }

    /// Publishes `events` in the transaction `tx` (a publish's own, or an attempt outcome's
    /// carrying its operational notifications): inserts, fan-out, numbering and the wake
    /// notification (sent on commit). Returns the receipts and the subscriptions to wake in
    /// this process once `tx` committed.
    pub(super) async fn publish_in(
        &self,
        tx: &mut PgConnection,
        events: &[Event],
        at: i64,
    ) -> Result<(Vec<Result<PublishReceipt>>, HashSet<SubscriptionId>)> {
        let mut routes: HashMap<TenantId, Option<Vec<Route>>> = HashMap::new();
        for e in events {
            if !routes.contains_key(&e.tenant_id) {
                let r = load_routes(&mut *tx, &e.tenant_id).await?;
                routes.insert(e.tenant_id.clone(), r);
            }
        }

        let mut receipts: Vec<Option<Result<PublishReceipt>>> = Vec::with_capacity(events.len());
        // (tenant, id) → (index of its first occurrence, body): the events to insert.
        let mut fresh: BTreeMap<(&str, &str), (usize, String)> = BTreeMap::new();
        for (index, event) in events.iter().enumerate() {
            if !matches!(routes.get(&event.tenant_id), Some(Some(_))) {
                receipts.push(Some(Err(Error::not_found("tenant", &event.tenant_id))));
                continue;
            }
            match serde_json::to_string(event) {
                Ok(body) => {
                    fresh
                        .entry((event.tenant_id.as_str(), event.id.as_str()))
                        .or_insert((index, body));
                    receipts.push(None);
                }
                Err(e) => receipts.push(Some(Err(Error::Internal(format!(
                    "event not serialisable: {e}"
                ))))),
            }
        }
        // One insert for every event, in (tenant, id) order: concurrent publishes of the same
        // ids wait for each other in one order, never in a cycle.
        let mut cols: [Vec<&str>; 3] = Default::default();
        let mut bodies = Vec::with_capacity(fresh.len());
        for ((tenant, id), (index, body)) in &fresh {
            cols[0].push(tenant);
            cols[1].push(id);
            cols[2].push(events[*index].notification_type.as_str());
            bodies.push(body.as_str());
        }
        let inserted = sqlx::query(
            "INSERT INTO events (tenant_id, id, notification_type, body, created_at) \
             SELECT t, i, n, b, $5 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[]) \
               WITH ORDINALITY AS v(t, i, n, b, o) ORDER BY o \
             ON CONFLICT (tenant_id, id) DO NOTHING RETURNING tenant_id, id, seq",
        )
        .bind(&cols[0])
        .bind(&cols[1])
        .bind(&cols[2])
        .bind(&bodies)
        .bind(at)
        .fetch_all(&mut *tx)
        .await
        .map_err(sql_err(W))?;
        let mut seqs: HashMap<(String, String), i64> = HashMap::with_capacity(inserted.len());
        for r in &inserted {
            seqs.insert(
                (
                    r.try_get(0).map_err(sql_err(W))?,
                    r.try_get(1).map_err(sql_err(W))?,
                ),
                r.try_get(2).map_err(sql_err(W))?,
            );
        }
        // In publish order; an id inserted before (by another publish, or earlier in this one)
        // is a duplicate, settled below once this batch's own deliveries are counted.
        let mut accepted: Vec<Accepted> = Vec::new();
        for (index, event) in events.iter().enumerate() {
            let Some(Some(routes)) = routes.get(&event.tenant_id) else {
                continue;
            };
            let first = fresh
                .get(&(event.tenant_id.as_str(), event.id.as_str()))
                .is_some_and(|(i, _)| *i == index);
            let key = (
                event.tenant_id.as_str().to_owned(),
                event.id.as_str().to_owned(),
            );
            let Some(seq) = seqs.get(&key).copied().filter(|_| first) else {
                continue;
            };
            let mut envelope = None;
            let subs = routes
                .iter()
                .filter(|r| r.matches(event))
                .map(|r| Fanned {
                    sub: r.id.clone(),
                    // It serialised into its body above; a failure here cannot happen, and
                    // would only put the event in the no-key sequence.
                    key: r.order_pointer.as_deref().map(|p| {
                        ordering::key_at(
                            envelope.get_or_insert_with(|| {
                                serde_json::to_value(event).unwrap_or_default()
                            }),
                            p,
                        )
                    }),
                    epoch: r.order_epoch,
                })
                .collect();
            accepted.push(Accepted { index, seq, subs });
        }

        // Lock the order counters in id order and number the deliveries.
        let targets: Vec<String> = accepted
            .iter()
            .flat_map(|a| a.subs.iter().map(|f| f.sub.as_str().to_owned()))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut tails: BTreeMap<String, i64> = BTreeMap::new();
        if !targets.is_empty() {
            let locked = sqlx::query(
                "SELECT subscription_id, tail_seq FROM sub_tail WHERE subscription_id = ANY($1) \
                 ORDER BY subscription_id FOR NO KEY UPDATE",
            )
            .bind(&targets)
            .fetch_all(&mut *tx)
            .await
            .map_err(sql_err(W))?;
            for r in &locked {
                tails.insert(
                    r.try_get(0).map_err(sql_err(W))?,
                    r.try_get(1).map_err(sql_err(W))?,
                );
            }
        }
        let (mut d_sub, mut d_seq, mut d_event) = (Vec::new(), Vec::new(), Vec::new());
        let (mut d_key, mut d_epoch) = (Vec::new(), Vec::new());
        let mut counts: HashMap<i64, u32> = HashMap::new();
        let mut woken: HashSet<SubscriptionId> = HashSet::new();
        let mut keyed: BTreeSet<&str> = BTreeSet::new();
        for a in &accepted {
            let mut n = 0;
            for f in &a.subs {
                // Gone: deleted after this publish read its routes.
                let Some(tail) = tails.get_mut(f.sub.as_str()) else {
                    continue;
                };
                *tail += 1;
                d_sub.push(f.sub.as_str().to_owned());
                d_seq.push(*tail);
                d_event.push(a.seq);
                d_key.push(f.key.clone());
                if f.key.is_some() {
                    keyed.insert(f.sub.as_str());
                }
                d_epoch.push(f.epoch);
                woken.insert(f.sub.clone());
                n += 1;
            }
            counts.insert(a.seq, n);
            receipts[a.index] = Some(Ok(PublishReceipt {
                id: events[a.index].id.clone(),
                seq: a.seq,
                deliveries: n,
                duplicate: false,
            }));
        }
        if !d_sub.is_empty() {
            sqlx::query(
                "INSERT INTO deliveries (subscription_id, seq, event_seq, state, updated_at, \
                   order_key, order_epoch) \
                 SELECT s, q, e, 'pending', $4, k, p FROM UNNEST($1::text[], $2::int8[], \
                   $3::int8[], $5::text[], $6::int8[]) AS v(s, q, e, k, p)",
            )
            .bind(&d_sub)
            .bind(&d_seq)
            .bind(&d_event)
            .bind(at)
            .bind(&d_key)
            .bind(&d_epoch)
            .execute(&mut *tx)
            .await
            .map_err(sql_err(W))?;
            let (t_sub, t_seq): (Vec<String>, Vec<i64>) = tails.into_iter().unzip();
            sqlx::query(
                "UPDATE sub_tail SET tail_seq = v.t FROM UNNEST($1::text[], $2::int8[]) AS v(s, t) \
                 WHERE subscription_id = v.s",
            )
            .bind(&t_sub)
            .bind(&t_seq)
            .execute(&mut *tx)
            .await
            .map_err(sql_err(W))?;
        }
        if !keyed.is_empty() {
            // A keyed subscription given up while one key waits (a long retry) is due again
            // now: the new event's key may go at once (other keys never wait for one key's
            // retry). Its `sub_tail` lock, held above, orders this with other publishes.
            let keyed: Vec<&str> = keyed.into_iter().collect();
            sqlx::query(
                "UPDATE sub_cursor SET next_due_at = NULL                  WHERE subscription_id = ANY($1) AND next_due_at IS NOT NULL",
            )
            .bind(&keyed)
            .execute(&mut *tx)
            .await
            .map_err(sql_err(W))?;
        }
        for (i, slot) in receipts.iter_mut().enumerate() {
            if slot.is_none() {
                *slot = Some(duplicate(&mut *tx, &events[i], &counts).await);
            }
        }
        for payload in listen::payloads(&self.inner.node, &woken) {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(WAKE_CHANNEL)
                .bind(payload)
                .execute(&mut *tx)
                .await
                .map_err(sql_err(W))?;
        }
        let receipts = receipts
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::Internal("publish lost a receipt".into()))))
            .collect();
        Ok((receipts, woken))
    }
}

/// The tenant's subscriptions with their filters; `None` if there is no such tenant.
async fn load_routes(conn: &mut PgConnection, tenant: &TenantId) -> Result<Option<Vec<Route>>> {
    let found = sqlx::query(
        "SELECT s.id, s.notification_types, s.workflow_ids, \
           (s.config::jsonb) #>> '{ordering,key}', \
           COALESCE(((s.config::jsonb) ->> 'orderEpoch')::int8, 0) \
         FROM tenants t LEFT JOIN subscriptions s ON s.tenant_id = t.id WHERE t.id = $1",
    )
    .bind(tenant.as_str())
    .fetch_all(&mut *conn)
    .await
    .map_err(sql_err(W))?;
    if found.is_empty() {
        return Ok(None);
    }
    let mut routes = Vec::with_capacity(found.len());
    for r in &found {
        let id: Option<String> = r.try_get(0).map_err(sql_err(W))?;
        let Some(id) = id else { continue };
        routes.push(Route {
            id: SubscriptionId::from(id),
            types: r.try_get(1).map_err(sql_err(W))?,
            workflows: r.try_get(2).map_err(sql_err(W))?,
            order_pointer: r.try_get(3).map_err(sql_err(W))?,
            order_epoch: r.try_get(4).map_err(sql_err(W))?,
        });
    }
    Ok(Some(routes))
}

/// The receipt of an event published before (by another publish, or earlier in this one).
async fn duplicate(
    conn: &mut PgConnection,
    event: &Event,
    this_batch: &HashMap<i64, u32>,
) -> Result<PublishReceipt> {
    let row = sqlx::query(
        "SELECT e.seq, (SELECT COUNT(*) FROM deliveries d WHERE d.event_seq = e.seq) \
         FROM events e WHERE e.tenant_id = $1 AND e.id = $2",
    )
    .bind(event.tenant_id.as_str())
    .bind(event.id.as_str())
    .fetch_one(&mut *conn)
    .await
    .map_err(sql_err(W))?;
    let seq: i64 = row.try_get(0).map_err(sql_err(W))?;
    let n: i64 = row.try_get(1).map_err(sql_err(W))?;
    Ok(PublishReceipt {
        id: event.id.clone(),
        seq,
        deliveries: this_batch.get(&seq).copied().unwrap_or(n.max(0) as u32),
        duplicate: true,
    })
}
