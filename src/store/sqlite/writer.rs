//! The journal's single writer: group commit of every write operation.
//!
//! One task owns the only read-write connection. It takes the first waiting operation, then
//! everything else already queued (up to `commit_batch_max`), applies them in arrival order
//! inside one `BEGIN IMMEDIATE` transaction, commits once, and only then answers every caller.
//! Many publishers therefore share one fsync.
//!
//! Operations check their preconditions before writing and report a refusal (unknown tenant,
//! duplicate id) as a per-operation error without touching the database, so one bad request
//! never sinks a batch. If SQLite itself fails mid-batch, the transaction is rolled back, the
//! routing table is reloaded, and the operations are replayed one per transaction so that only
//! the ones that really cannot be written fail.
//!
//! The connection is a plain synchronous SQLite connection driven inline by the writer task:
//! no statement crosses to another thread (see [`blocking_if`] for why, and for the commits that
//! wait for the disk). WAL checkpoints, which also wait for the disk, are not run by this
//! connection but by the [`Checkpointer`] thread beside it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::{mpsc, oneshot};

use super::checkpoint::Checkpointer;
use super::{CommitHook, SUB_COLUMNS, SubscriptionRow, encode_spec, sub_from_row, sub_raw};
use crate::domain::Timestamp;
use crate::domain::{DeliveryId, SubscriptionId, TenantId};
use crate::domain::{DeliveryStatus, Event, PublishReceipt, SubscriptionSpec, Tenant};
use crate::error::{Error, Result};
use crate::policy::ratelimit::RateLimit;
use crate::security::secretbox::SecretBox;
use crate::store::Durability;

// `Close` is sent once per engine; boxing the common variant would cost an allocation per write.
#[allow(clippy::large_enum_variant)]
pub(super) enum Command {
    Op {
        op: Op,
        reply: Option<oneshot::Sender<Result<Outcome>>>,
    },
    Close(oneshot::Sender<()>),
}

/// A change to a subscription's state columns; `None` leaves a column as it is.
#[derive(Debug, Clone, Default)]
pub(crate) struct FlagChange {
    pub paused: Option<bool>,
    pub blocked_on: Option<Option<i64>>,
    pub disabled_reason: Option<Option<String>>,
    pub faulted_reason: Option<Option<String>>,
}

/// The outcome of one attempt and the delivery's new state, written together.
#[derive(Debug, Clone)]
pub(crate) struct AttemptRecord {
    pub delivery: DeliveryId,
    pub subscription: SubscriptionId,
    pub n: u32,
    pub started_at: i64,
    pub duration_ms: u64,
    pub status_code: Option<u16>,
    pub error_kind: Option<&'static str>,
    pub error: Option<String>,
    pub snippet: Option<String>,
    /// What the transform printed, if anything.
    pub transform_log: Option<String>,
    pub new_status: DeliveryStatus,
    pub budget_used: u32,
    pub next_at: Option<i64>,
    pub flags: Option<FlagChange>,
    /// The next delivery to mark in flight in the same commit: (delivery, attempt number, at).
    /// Saves one commit per delivery on a busy subscription.
    pub next_in_flight: Option<(DeliveryId, u32, i64)>,
}

#[derive(Debug)]
pub(super) enum Op {
    CreateTenant {
        id: TenantId,
        name: String,
        rate_limit: Option<RateLimit>,
        key_hash: String,
        at: i64,
    },
    SetTenantRateLimit {
        id: TenantId,
        rate_limit: Option<RateLimit>,
    },
    InsertAdminKey {
        key_hash: String,
        at: i64,
    },
    CreateSubscription {
        id: SubscriptionId,
        tenant: TenantId,
        spec: SubscriptionSpec,
        at: i64,
    },
    UpdateSpec {
        id: SubscriptionId,
        spec: SubscriptionSpec,
        at: i64,
    },
    SetFlags {
        id: SubscriptionId,
        flags: FlagChange,
        at: i64,
    },
    DeleteSubscription {
        id: SubscriptionId,
    },
    Publish {
        events: Vec<Event>,
        at: i64,
    },
    InterruptInFlight {
        sub: SubscriptionId,
        at: i64,
    },
    MarkInFlight {
        delivery: DeliveryId,
        attempts: u32,
        at: i64,
    },
    RecordAttempt(Box<AttemptRecord>),
    InsertTransform(Box<super::transforms::NewTransformRow>),
    DeleteTransform {
        tenant: TenantId,
        name: String,
    },
    SetTransformArtifact {
        tenant: TenantId,
        name: String,
        version: u32,
        artifact: Arc<[u8]>,
    },
    SetDeliveryStatus {
        delivery: DeliveryId,
        status: DeliveryStatus,
        reset_budget: bool,
        unblock: Option<SubscriptionId>,
        at: i64,
    },
    /// See `upkeep::apply_replay`.
    Replay {
        sub: SubscriptionId,
        since_ms: i64,
        until_ms: i64,
        at: i64,
    },
    /// See `upkeep::apply_prune`.
    Prune {
        delivered_before: i64,
        failed_before: i64,
        batch: u32,
    },
}

#[derive(Debug)]
pub(super) enum Outcome {
    Unit,
    Tenant(Tenant),
    Row(Box<SubscriptionRow>),
    Receipts(Vec<Result<PublishReceipt>>),
    /// A transform version, and whether this call created it.
    Transform(crate::domain::TransformVersion, bool),
    Count(u64),
}

/// The writer's view of who receives what: tenants, and each tenant's subscriptions.
pub(super) struct Routing {
    /// Seals and opens subscription secrets (kept here because every write path has the routing).
    sealer: Arc<SecretBox>,
    tenants: HashSet<TenantId>,
    subs: HashMap<TenantId, Vec<(SubscriptionId, Arc<SubscriptionSpec>)>>,
}

impl Routing {
    pub(super) fn load(conn: &Connection, sealer: Arc<SecretBox>) -> Result<Routing> {
        let sql = |e: rusqlite::Error| Error::unavailable("journal load failed", e);
        let mut r = Routing {
            sealer,
            tenants: HashSet::new(),
            subs: HashMap::new(),
        };
        let mut stmt = conn.prepare("SELECT id FROM tenants").map_err(sql)?;
        let ids = stmt
            .query_map([], |row| row.get::<_, String>(0))
            .map_err(sql)?;
        for id in ids {
            r.tenants.insert(TenantId::from(id.map_err(sql)?));
        }
        let mut stmt = conn.prepare(SUB_COLUMNS).map_err(sql)?;
        let rows = stmt.query_map([], sub_raw).map_err(sql)?;
        for row in rows {
            // A subscription that cannot be read (a wrong master key) could not be routed to:
            // its events would be silently lost, so refusing to start is the only safe answer.
            let s = sub_from_row(row.map_err(sql)?, &r.sealer)?;
            r.upsert(s.tenant_id, s.id, s.spec);
        }
        Ok(r)
    }

    fn upsert(&mut self, tenant: TenantId, id: SubscriptionId, spec: SubscriptionSpec) {
        let list = self.subs.entry(tenant).or_default();
        let spec = Arc::new(spec);
        match list.iter_mut().find(|(i, _)| *i == id) {
            Some(entry) => entry.1 = spec,
            None => list.push((id, spec)),
        }
    }

    pub(super) fn has_tenant(&self, id: &TenantId) -> bool {
        self.tenants.contains(id)
    }

    /// The tenant owning subscription `id`.
    pub(super) fn tenant_of(&self, id: &SubscriptionId) -> Option<TenantId> {
        self.subs
            .iter()
            .find(|(_, list)| list.iter().any(|(i, _)| i == id))
            .map(|(t, _)| t.clone())
    }

    /// The subscriptions of `tenant`, with their specs.
    pub(super) fn subscriptions_of(
        &self,
        tenant: &TenantId,
    ) -> &[(SubscriptionId, Arc<SubscriptionSpec>)] {
        self.subs.get(tenant).map(Vec::as_slice).unwrap_or(&[])
    }

    fn remove(&mut self, id: &SubscriptionId) {
        for list in self.subs.values_mut() {
            list.retain(|(i, _)| i != id);
        }
    }
}

type Reply = Option<oneshot::Sender<Result<Outcome>>>;

/// Everything the writer task owns.
pub(super) struct Writer {
    pub conn: Connection,
    pub routing: Routing,
    pub hook: Arc<OnceLock<CommitHook>>,
    pub batch_max: usize,
    pub durability: Durability,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub checkpointer: Checkpointer,
}

pub(super) async fn run(w: Writer, mut rx: mpsc::Receiver<Command>) {
    let Writer {
        mut conn,
        mut routing,
        hook,
        batch_max,
        durability,
        metrics,
        checkpointer,
    } = w;
    let mut sync = SyncState::new(durability);
    let mut ops: Vec<Op> = Vec::with_capacity(batch_max);
    let mut replies: Vec<Reply> = Vec::with_capacity(batch_max);
    let mut closing: Option<oneshot::Sender<()>> = None;
    let mut last_batch = 0;
    loop {
        match rx.recv().await {
            None => break,
            Some(Command::Close(done)) => closing = Some(done),
            Some(Command::Op { op, reply }) => {
                ops.push(op);
                replies.push(reply);
            }
        }
        // When writes have been arriving together, let the tasks already woken run first: many
        // of them are about to queue a write (other subscriptions' outcomes), and they then share
        // this commit instead of each paying for one (measured: 80 -> 65 µs of CPU per delivery
        // with 100 busy subscriptions). A lone writer (one busy subscription) would only lose a
        // trip through the scheduler per commit, so it does not yield.
        if closing.is_none() && last_batch > 1 {
            tokio::task::yield_now().await;
        }
        while closing.is_none() && ops.len() < batch_max {
            match rx.try_recv() {
                Ok(Command::Op { op, reply }) => {
                    ops.push(op);
                    replies.push(reply);
                }
                Ok(Command::Close(done)) => closing = Some(done),
                Err(_) => break,
            }
        }
        if !ops.is_empty() {
            let (n, started) = (ops.len(), Instant::now());
            last_batch = n;
            let fsyncs = sync.wants_full(&ops);
            let wakes = blocking_if(fsyncs, || {
                process(&mut conn, &mut routing, &mut sync, &mut ops, &mut replies)
            });
            metrics.commit(n, started.elapsed());
            checkpointer.committed();
            if !wakes.is_empty()
                && let Some(h) = hook.get()
            {
                h(wakes);
            }
        }
        if let Some(done) = closing.take() {
            rx.close();
            // Operations that raced with close still get their answer.
            while let Ok(Command::Op { op, reply }) = rx.try_recv() {
                ops.push(op);
                replies.push(reply);
            }
            if !ops.is_empty() {
                blocking_if(true, || {
                    process(&mut conn, &mut routing, &mut sync, &mut ops, &mut replies)
                });
            }
            checkpointer.stop();
            blocking_if(true, || {
                if let Err((_, e)) = conn.close() {
                    tracing::warn!(error = %e, "journal writer connection did not close cleanly");
                }
            });
            let _ = done.send(());
            return;
        }
    }
    checkpointer.stop();
}

/// Runs `f` on this tokio worker: SQLite is driven inline, because on this kind of machine a
/// hand-off to another thread and back (what an async SQLite driver does per statement) costs
/// more than the statement itself. A commit that waits for the disk (fsync) must not hold a
/// worker that other tasks are queued on, so it goes through `block_in_place`, which moves the
/// worker's other tasks elsewhere first (only possible on the multi-thread runtime; a
/// current-thread runtime has nothing to move them to and simply waits).
fn blocking_if<R>(fsyncs: bool, f: impl FnOnce() -> R) -> R {
    let multi = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if fsyncs && multi {
        tokio::task::block_in_place(f)
    } else {
        f()
    }
}

/// Applies and commits one batch, answers its callers, and returns the subscriptions to wake.
fn process(
    conn: &mut Connection,
    routing: &mut Routing,
    sync: &mut SyncState,
    ops: &mut Vec<Op>,
    replies: &mut Vec<Reply>,
) -> Vec<SubscriptionId> {
    let mut wakes = HashSet::new();
    match sync_then_apply(conn, routing, sync, ops, &mut wakes) {
        Ok(outcomes) => {
            for (reply, out) in replies.drain(..).zip(outcomes) {
                if let Some(r) = reply {
                    let _ = r.send(out);
                }
            }
            ops.clear();
        }
        Err(batch_err) => {
            tracing::warn!(error = %batch_err, ops = ops.len(), "journal batch failed; replaying one by one");
            wakes.clear();
            reload_routing(conn, routing);
            for (op, reply) in ops.drain(..).zip(replies.drain(..)) {
                let mut single_wakes = HashSet::new();
                let result = match sync_then_apply(
                    conn,
                    routing,
                    sync,
                    std::slice::from_ref(&op),
                    &mut single_wakes,
                ) {
                    Ok(mut outs) => outs
                        .pop()
                        .unwrap_or_else(|| Err(Error::Internal("empty batch".into()))),
                    Err(e) => {
                        reload_routing(conn, routing);
                        Err(Error::unavailable("journal write failed", e))
                    }
                };
                if result.is_ok() {
                    wakes.extend(single_wakes);
                }
                if let Some(r) = reply {
                    let _ = r.send(result);
                }
            }
        }
    }
    wakes.into_iter().collect()
}

fn reload_routing(conn: &Connection, routing: &mut Routing) {
    match Routing::load(conn, routing.sealer.clone()) {
        Ok(r) => *routing = r,
        Err(e) => tracing::error!(error = %e, "could not reload the routing table"),
    }
}

/// Which commits fsync.
///
/// Under [`Durability::Fsync`], a commit that answers a promise (a publish, a tenant, a
/// subscription, an operator's action: anything a caller is told is durable) fsyncs the WAL
/// (`synchronous=FULL`). A commit of delivery progress only (in-flight marks and attempt records)
/// does not (`NORMAL`): once written to the WAL it survives a `kill -9` of the process, which is
/// what strict order and the one-duplicate bound rest on, and an fsync per delivery would cap
/// one subscription at the disk's commit rate. The [`Checkpointer`] fsyncs the WAL at least every
/// [`super::checkpoint::PROGRESS_SYNC_EVERY`] while progress is written, and every FULL commit
/// makes all earlier ones durable too, so a power failure can roll progress back by at most that
/// much: those deliveries are sent again, in order.
struct SyncState {
    durability: Durability,
    full: bool,
}

impl SyncState {
    fn new(durability: Durability) -> Self {
        SyncState {
            durability,
            // The journal opens the connection with its durability's setting.
            full: durability == Durability::Fsync,
        }
    }

    /// Whether a commit of `ops` fsyncs.
    fn wants_full(&self, ops: &[Op]) -> bool {
        self.durability == Durability::Fsync && ops.iter().any(|op| !op.is_progress())
    }
}

fn sync_then_apply(
    conn: &mut Connection,
    routing: &mut Routing,
    sync: &mut SyncState,
    ops: &[Op],
    wakes: &mut HashSet<SubscriptionId>,
) -> rusqlite::Result<Vec<Result<Outcome>>> {
    let full = sync.wants_full(ops);
    if full != sync.full {
        conn.pragma_update(None, "synchronous", if full { "FULL" } else { "NORMAL" })?;
        sync.full = full;
    }
    let outs = match ops {
        // The hot path, one outcome between two deliveries of a subscription: one statement,
        // atomic by itself, so no BEGIN and COMMIT around it.
        [Op::RecordAttempt(r)] if r.flags.is_none() => {
            super::batch::record_outcome(conn, r, crate::domain::clock::now_ms())?;
            vec![Ok(Outcome::Unit)]
        }
        _ => apply_all(conn, routing, ops, wakes)?,
    };
    Ok(outs)
}

impl Op {
    /// Delivery progress only: nothing a caller was promised durability for.
    fn is_progress(&self) -> bool {
        matches!(
            self,
            Op::MarkInFlight { .. } | Op::RecordAttempt(_) | Op::InterruptInFlight { .. }
        )
    }
}

fn apply_all(
    conn: &mut Connection,
    routing: &mut Routing,
    ops: &[Op],
    wakes: &mut HashSet<SubscriptionId>,
) -> rusqlite::Result<Vec<Result<Outcome>>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut outs = Vec::with_capacity(ops.len());
    let mut i = 0;
    while i < ops.len() {
        // A run of publishes is fanned out together (see `batch::publish_many`).
        let run = ops[i..]
            .iter()
            .take_while(|op| matches!(op, Op::Publish { .. }))
            .count();
        if run > 1 {
            let groups: Vec<(&[Event], i64)> = ops[i..i + run]
                .iter()
                .filter_map(|op| match op {
                    Op::Publish { events, at } => Some((events.as_slice(), *at)),
                    _ => None,
                })
                .collect();
            outs.extend(super::batch::publish_many(&tx, routing, &groups, wakes)?);
            i += run;
        } else {
            outs.push(apply(&tx, routing, &ops[i], wakes)?);
            i += 1;
        }
    }
    tx.commit()?;
    Ok(outs)
}

/// Applies one operation. `Ok(Err(_))` is a refusal that wrote nothing; `Err(_)` is a SQLite
/// failure that aborts the batch.
fn apply(
    conn: &Connection,
    routing: &mut Routing,
    op: &Op,
    wakes: &mut HashSet<SubscriptionId>,
) -> rusqlite::Result<Result<Outcome>> {
    match op {
        Op::CreateTenant {
            id,
            name,
            rate_limit,
            key_hash,
            at,
        } => {
            if routing.tenants.contains(id) {
                return Ok(Err(Error::Conflict(format!("tenant {id} already exists"))));
            }
            let limit_json = match rate_limit_json(rate_limit.as_ref()) {
                Ok(j) => j,
                Err(e) => return Ok(Err(e)),
            };
            conn.prepare_cached(
                "INSERT INTO tenants (id, name, created_at, rate_limit) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![id.as_str(), name, at, limit_json])?;
            conn.prepare_cached(
                "INSERT INTO api_keys (key_hash, tenant_id, created_at) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![key_hash, id.as_str(), at])?;
            routing.tenants.insert(id.clone());
            Ok(Ok(Outcome::Tenant(Tenant {
                id: id.clone(),
                name: name.clone(),
                rate_limit: rate_limit.clone(),
                created_at: Timestamp::from_ms(*at),
            })))
        }
        Op::SetTenantRateLimit { id, rate_limit } => {
            let limit_json = match rate_limit_json(rate_limit.as_ref()) {
                Ok(j) => j,
                Err(e) => return Ok(Err(e)),
            };
            let row = conn
                .prepare_cached(concat!(
                    "UPDATE tenants SET rate_limit = ?2 WHERE id = ?1 ",
                    "RETURNING id, name, created_at, rate_limit"
                ))?
                .query_row(params![id.as_str(), limit_json], super::tenant_raw)
                .optional()?;
            Ok(match row {
                None => Err(Error::not_found("tenant", id)),
                Some(r) => super::tenant_from_row(r).map(Outcome::Tenant),
            })
        }
        Op::InsertAdminKey { key_hash, at } => {
            conn.prepare_cached(
                "INSERT OR IGNORE INTO api_keys (key_hash, tenant_id, created_at) \
                 VALUES (?1, NULL, ?2)",
            )?
            .execute(params![key_hash, at])?;
            Ok(Ok(Outcome::Unit))
        }
        Op::CreateSubscription {
            id,
            tenant,
            spec,
            at,
        } => {
            if !routing.tenants.contains(tenant) {
                return Ok(Err(Error::not_found("tenant", tenant)));
            }
            if let Err(e) = super::transforms::check_binding(conn, tenant.as_str(), spec)? {
                return Ok(Err(e));
            }
            let (config, secrets) = match encode_spec(spec, id, &routing.sealer) {
                Ok(v) => v,
                Err(e) => return Ok(Err(e)),
            };
            conn.prepare_cached(
                "INSERT INTO subscriptions (id, tenant_id, config, secrets, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
            )?
            .execute(params![id.as_str(), tenant.as_str(), config, secrets, at])?;
            routing.upsert(tenant.clone(), id.clone(), spec.clone());
            read_row(conn, id, &routing.sealer)
        }
        Op::UpdateSpec { id, spec, at } => {
            if let Some(tenant) = routing.tenant_of(id)
                && let Err(e) = super::transforms::check_binding(conn, tenant.as_str(), spec)?
            {
                return Ok(Err(e));
            }
            let (config, secrets) = match encode_spec(spec, id, &routing.sealer) {
                Ok(v) => v,
                Err(e) => return Ok(Err(e)),
            };
            let tenant: Option<String> = conn
                .prepare_cached(
                    "UPDATE subscriptions SET config = ?2, secrets = ?3, version = version + 1, \
                     updated_at = ?4 WHERE id = ?1 RETURNING tenant_id",
                )?
                .query_row(params![id.as_str(), config, secrets, at], |r| r.get(0))
                .optional()?;
            let Some(tenant) = tenant else {
                return Ok(Err(Error::not_found("subscription", id)));
            };
            routing.upsert(TenantId::from(tenant), id.clone(), spec.clone());
            read_row(conn, id, &routing.sealer)
        }
        Op::SetFlags { id, flags, at } => {
            let n = conn
                .prepare_cached(
                    "UPDATE subscriptions SET \
                       paused = CASE WHEN ?2 THEN ?3 ELSE paused END, \
                       blocked_on = CASE WHEN ?4 THEN ?5 ELSE blocked_on END, \
                       disabled_reason = CASE WHEN ?6 THEN ?7 ELSE disabled_reason END, \
                       faulted_reason = CASE WHEN ?8 THEN ?9 ELSE faulted_reason END, \
                       updated_at = ?10 \
                     WHERE id = ?1",
                )?
                .execute(params![
                    id.as_str(),
                    flags.paused.is_some(),
                    flags.paused.unwrap_or(false),
                    flags.blocked_on.is_some(),
                    flags.blocked_on.flatten(),
                    flags.disabled_reason.is_some(),
                    flags.disabled_reason.clone().flatten(),
                    flags.faulted_reason.is_some(),
                    flags.faulted_reason.clone().flatten(),
                    at,
                ])?;
            if n == 0 {
                return Ok(Err(Error::not_found("subscription", id)));
            }
            read_row(conn, id, &routing.sealer)
        }
        Op::DeleteSubscription { id } => {
            let n = conn
                .prepare_cached("DELETE FROM subscriptions WHERE id = ?1")?
                .execute([id.as_str()])?;
            if n == 0 {
                return Ok(Err(Error::not_found("subscription", id)));
            }
            routing.remove(id);
            Ok(Ok(Outcome::Unit))
        }
        Op::Publish { events, at } => {
            let groups = [(events.as_slice(), *at)];
            let mut outs = super::batch::publish_many(conn, routing, &groups, wakes)?;
            Ok(outs
                .pop()
                .unwrap_or_else(|| Err(Error::Internal("empty publish".into()))))
        }
        Op::InterruptInFlight { sub, at } => {
            super::interrupt_in_flight(conn, Some(sub), *at)?;
            Ok(Ok(Outcome::Unit))
        }
        Op::MarkInFlight {
            delivery,
            attempts,
            at,
        } => {
            mark_in_flight(conn, *delivery, *attempts, *at)?;
            Ok(Ok(Outcome::Unit))
        }
        Op::RecordAttempt(rec) if rec.flags.is_none() => {
            super::batch::record_outcome(conn, rec, crate::domain::clock::now_ms())?;
            Ok(Ok(Outcome::Unit))
        }
        Op::RecordAttempt(rec) => {
            let now = crate::domain::clock::now_ms();
            conn.prepare_cached(
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
                rec.error_kind,
                rec.error,
                rec.snippet,
                rec.transform_log,
            ])?;
            let n = conn
                .prepare_cached(
                    "UPDATE deliveries SET state = ?2, attempts = ?3, budget_used = ?4, \
                     next_at = ?5, started_at = NULL, last_status = ?6, last_error = ?7, \
                     updated_at = ?8 WHERE id = ?1",
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
                ])?;
            if n == 0 {
                // The subscription was deleted while the attempt ran; nothing left to record.
                return Ok(Err(Error::not_found("delivery", rec.delivery)));
            }
            if let Some((next, attempts, at)) = rec.next_in_flight {
                mark_in_flight(conn, next, attempts, at)?;
            }
            if let Some(flags) = &rec.flags {
                return apply(
                    conn,
                    routing,
                    &Op::SetFlags {
                        id: rec.subscription.clone(),
                        flags: flags.clone(),
                        at: now,
                    },
                    wakes,
                )
                .map(|r| r.map(|_| Outcome::Unit));
            }
            Ok(Ok(Outcome::Unit))
        }
        Op::SetDeliveryStatus {
            delivery,
            status,
            reset_budget,
            unblock,
            at,
        } => {
            let n = conn
                .prepare_cached(
                    "UPDATE deliveries SET state = ?2, \
                       budget_used = CASE WHEN ?3 THEN 0 ELSE budget_used END, \
                       next_at = NULL, updated_at = ?4 WHERE id = ?1",
                )?
                .execute(params![delivery.raw(), status.as_str(), reset_budget, at])?;
            if n == 0 {
                return Ok(Err(Error::not_found("delivery", delivery)));
            }
            if let Some(sub) = unblock {
                conn.prepare_cached(
                    "UPDATE subscriptions SET blocked_on = NULL, updated_at = ?3 \
                     WHERE id = ?1 AND blocked_on = ?2",
                )?
                .execute(params![sub.as_str(), delivery.raw(), at])?;
            }
            Ok(Ok(Outcome::Unit))
        }
        Op::InsertTransform(t) => super::transforms::apply_insert(conn, routing, t),
        Op::DeleteTransform { tenant, name } => {
            super::transforms::apply_delete(conn, routing, tenant, name)
        }
        Op::SetTransformArtifact {
            tenant,
            name,
            version,
            artifact,
        } => super::transforms::apply_set_artifact(conn, tenant, name, *version, artifact),
        Op::Replay {
            sub,
            since_ms,
            until_ms,
            at,
        } => super::upkeep::apply_replay(conn, sub, *since_ms, *until_ms, *at),
        Op::Prune {
            delivered_before,
            failed_before,
            batch,
        } => super::upkeep::apply_prune(conn, *delivered_before, *failed_before, *batch),
    }
}

/// A tenant's rate limit as stored: JSON, or NULL for none.
fn rate_limit_json(limit: Option<&RateLimit>) -> Result<Option<String>> {
    limit
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| Error::Internal(format!("tenant rate limit: {e}")))
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

fn read_row(
    conn: &Connection,
    id: &SubscriptionId,
    sealer: &SecretBox,
) -> rusqlite::Result<Result<Outcome>> {
    let row = conn
        .prepare_cached(concat!(sub_select!(), " WHERE id = ?1"))?
        .query_row([id.as_str()], sub_raw)
        .optional()?;
    Ok(match row {
        None => Err(Error::not_found("subscription", id)),
        Some(r) => sub_from_row(r, sealer).map(|s| Outcome::Row(Box::new(s))),
    })
}
