//! The journal's single writer: group commit of every write operation.
//!
//! One task owns the only read-write connection. It takes the first waiting operation, then
//! everything else already queued (up to `commit_batch_max`), applies them in arrival order
//! inside one `BEGIN IMMEDIATE` transaction, commits once, and only then answers every caller
//! (each with its own typed reply, see [`ops`](super::ops)). Many publishers therefore share
//! one fsync.
//!
//! Operations check their preconditions before writing and report a refusal (unknown tenant,
//! duplicate id, a lost lease) as a per-operation error without touching the database, so one
//! bad request never sinks a batch. If SQLite itself fails mid-batch, the transaction is rolled
//! back, the routing table is reloaded, and the operations are replayed one per transaction so
//! that only the ones that really cannot be written fail.
//!
//! The connection is a plain synchronous SQLite connection driven inline by the writer task:
//! no statement crosses to another thread (see [`blocking_if`] for why, and for the commits that
//! wait for the disk). WAL checkpoints, which also wait for the disk, are not run by this
//! connection but by the [`Checkpointer`] thread beside it. After each commit that created
//! deliveries, the subscriptions that received them are handed to the [`WakeSender`].
//!
//! Every commit's fate goes to the engine's [`Health`]: a commit that fails because the disk is
//! full or failing makes the journal "unwritable" (publishes answer 503, `/readyz` says why),
//! and the first commit that succeeds again clears it. While the journal is unwritable and no
//! write comes, the writer probes it every [`PROBE_EVERY`] with a one-page commit, so readiness
//! comes back by itself once space returns. If the writer task ends without having been closed
//! (a panic), it reports the engine [fatal](Health::fatal): nothing could be written any more.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use super::checkpoint::Checkpointer;
use super::leases::Leases;
use super::ops::{Op, apply_batch};
use super::routing::Routing;
use crate::domain::SubscriptionId;
use crate::error::Error;
use crate::health::{Health, WriteFailure};
use crate::store::{Durability, WakeSender};

// `Close` is sent once per engine; boxing the common variant would cost an allocation per write.
#[allow(clippy::large_enum_variant)]
pub(super) enum Command {
    Op(Op),
    Close(oneshot::Sender<()>),
}

/// Everything the writer task owns.
pub(super) struct Writer {
    pub conn: Connection,
    pub routing: Routing,
    pub leases: Leases,
    pub wakes: WakeSender,
    pub batch_max: usize,
    pub durability: Durability,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub checkpointer: Checkpointer,
}

/// How often an unwritable journal is probed while no write comes.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// Reports the engine fatal if the writer task ends (returns, panics or is dropped) while
/// armed: only a close, or the end of its intake (every handle dropped), disarms it.
struct DeathWatch {
    metrics: Arc<crate::metrics::Metrics>,
    armed: bool,
}

impl Drop for DeathWatch {
    fn drop(&mut self) {
        if self.armed {
            self.metrics
                .health
                .fatal("the journal writer stopped unexpectedly");
        }
    }
}

pub(super) async fn run(w: Writer, mut rx: mpsc::Receiver<Command>) {
    let mut watch = DeathWatch {
        metrics: w.metrics.clone(),
        armed: true,
    };
    run_inner(w, &mut rx).await;
    watch.armed = false;
}

async fn run_inner(w: Writer, rx: &mut mpsc::Receiver<Command>) {
    let Writer {
        mut conn,
        mut routing,
        mut leases,
        wakes,
        batch_max,
        durability,
        metrics,
        checkpointer,
    } = w;
    let mut sync = SyncState::new(durability);
    let mut ops: Vec<Op> = Vec::with_capacity(batch_max);
    let mut closing: Option<oneshot::Sender<()>> = None;
    let mut last_batch = 0;
    let health = &metrics.health;
    loop {
        let next = if health.unwritable().is_some() {
            match tokio::time::timeout(PROBE_EVERY, rx.recv()).await {
                Ok(next) => next,
                Err(_) => {
                    blocking_if(true, || match probe(&mut conn) {
                        Ok(()) => health.write_ok(),
                        Err(e) => health.write_failed(classify(&e), &e),
                    });
                    continue;
                }
            }
        } else {
            rx.recv().await
        };
        match next {
            None => break,
            Some(Command::Close(done)) => closing = Some(done),
            Some(Command::Op(op)) => ops.push(op),
        }
        // When writes have been arriving together, let the tasks already woken run first: many
        // of them are about to queue a write (other subscriptions' outcomes), and they then share
        // this commit instead of each paying for one (measured: 80 -> 65 µs of CPU per delivery
        // with 100 busy subscriptions). A lone writer (one busy subscription) would only lose a
        // trip through the scheduler per commit, so it does not yield.
        let yielded = Instant::now();
        if closing.is_none() && last_batch > 1 {
            tokio::task::yield_now().await;
        }
        let yielded = yielded.elapsed();
        while closing.is_none() && ops.len() < batch_max {
            match rx.try_recv() {
                Ok(Command::Op(op)) => ops.push(op),
                Ok(Command::Close(done)) => closing = Some(done),
                Err(_) => break,
            }
        }
        if !ops.is_empty() {
            let (n, started) = (ops.len(), Instant::now());
            let shape = BatchShape::of(&ops, started);
            last_batch = n;
            let fsyncs = sync.wants_full(&ops);
            let mut commit = Duration::ZERO;
            let woken = blocking_if(fsyncs, || {
                process(
                    &mut conn,
                    &mut routing,
                    &mut leases,
                    &mut sync,
                    &mut ops,
                    health,
                    &mut commit,
                )
            });
            let took = started.elapsed();
            metrics.commit(n, took);
            if took + shape.waited >= SLOW_BATCH {
                tracing::debug!(
                    ops = n,
                    publishes = shape.publishes,
                    progress = shape.progress,
                    fsync = fsyncs,
                    waited_ms = shape.waited.as_secs_f64() * 1e3,
                    yielded_ms = yielded.as_secs_f64() * 1e3,
                    apply_ms = (took - commit).as_secs_f64() * 1e3,
                    commit_ms = commit.as_secs_f64() * 1e3,
                    "slow journal batch"
                );
            }
            checkpointer.committed();
            wakes.wake(woken);
        }
        if let Some(done) = closing.take() {
            rx.close();
            // Operations that raced with close still get their answer.
            while let Ok(Command::Op(op)) = rx.try_recv() {
                ops.push(op);
            }
            if !ops.is_empty() {
                let mut commit = Duration::ZERO;
                blocking_if(true, || {
                    process(
                        &mut conn,
                        &mut routing,
                        &mut leases,
                        &mut sync,
                        &mut ops,
                        health,
                        &mut commit,
                    )
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

/// A batch whose oldest write waited, plus the batch's own time, at least this long is logged
/// (debug) with where the time went.
const SLOW_BATCH: Duration = Duration::from_millis(10);

/// What a batch held, for the slow-batch log.
struct BatchShape {
    publishes: usize,
    progress: usize,
    /// How long its oldest write waited before the batch started.
    waited: Duration,
}

impl BatchShape {
    fn of(ops: &[Op], started: Instant) -> BatchShape {
        let oldest = ops.iter().map(Op::queued).min().unwrap_or(started);
        BatchShape {
            publishes: ops.iter().filter(|o| o.is_publish()).count(),
            progress: ops.iter().filter(|o| o.is_progress()).count(),
            waited: started.saturating_duration_since(oldest),
        }
    }
}

/// Applies and commits one batch, answers its callers, and returns the subscriptions to wake.
/// `commit` gets the time the commit itself took.
fn process(
    conn: &mut Connection,
    routing: &mut Routing,
    leases: &mut Leases,
    sync: &mut SyncState,
    ops: &mut Vec<Op>,
    health: &Health,
    commit: &mut Duration,
) -> HashSet<SubscriptionId> {
    let mut wakes = HashSet::new();
    match sync_then_apply(conn, routing, leases, sync, ops, &mut wakes) {
        Ok(took) => {
            *commit = took;
            health.write_ok();
            ops.drain(..).for_each(Op::answer);
        }
        Err(batch_err) => {
            // A full or failing disk is reported (rate-limited) by `health`: a line per failed
            // batch would only add to the disk's trouble.
            if classify(&batch_err) == WriteFailure::Other {
                tracing::warn!(error = %batch_err, ops = ops.len(), "journal batch failed; replaying one by one");
            }
            wakes.clear();
            routing.reload(conn);
            for mut op in ops.drain(..) {
                let mut single = HashSet::new();
                let one = std::slice::from_mut(&mut op);
                match sync_then_apply(conn, routing, leases, sync, one, &mut single) {
                    Ok(_) => {
                        health.write_ok();
                        wakes.extend(single);
                        op.answer();
                    }
                    Err(e) => {
                        health.write_failed(classify(&e), &e);
                        routing.reload(conn);
                        op.fail(Error::unavailable("journal write failed", e));
                    }
                }
            }
        }
    }
    wakes
}

/// Which commits fsync.
///
/// Under [`Durability::Fsync`], a commit that answers a promise (a publish, a tenant, a
/// subscription, an operator's action: anything a caller is told is durable) fsyncs the WAL
/// (`synchronous=FULL`). A commit of delivery progress only (in-flight marks, attempt records,
/// acquires) does not (`NORMAL`): once written to the WAL it survives a `kill -9` of the
/// process, which is what strict order and the one-duplicate bound rest on, and an fsync per
/// delivery would cap one subscription at the disk's commit rate. The [`Checkpointer`] fsyncs
/// the WAL at least every [`super::checkpoint::PROGRESS_SYNC_EVERY`] while progress is written,
/// and every FULL commit makes all earlier ones durable too, so a power failure can roll
/// progress back by at most that much: those deliveries are sent again, in order.
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
    leases: &mut Leases,
    sync: &mut SyncState,
    ops: &mut [Op],
    wakes: &mut HashSet<SubscriptionId>,
) -> rusqlite::Result<Duration> {
    let full = sync.wants_full(ops);
    if full != sync.full {
        conn.pragma_update(None, "synchronous", if full { "FULL" } else { "NORMAL" })?;
        sync.full = full;
    }
    apply_batch(conn, routing, leases, ops, wakes)
}

/// What kind of failure `e` is, for the engine's [`Health`].
fn classify(e: &rusqlite::Error) -> WriteFailure {
    match e.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => WriteFailure::DiskFull,
        Some(ErrorCode::SystemIoFailure) => WriteFailure::Io,
        Some(ErrorCode::ReadOnly | ErrorCode::CannotOpen) => WriteFailure::ReadOnly,
        _ => WriteFailure::Other,
    }
}

/// A one-page commit: rewrites the header's `user_version` (which nothing else uses) with its
/// own value, so it changes nothing but needs the disk as any commit does.
fn probe(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let v: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    tx.pragma_update(None, "user_version", v)?;
    tx.commit()
}
