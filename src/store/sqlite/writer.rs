//! The journal's single writer: group commit of every write operation.
//!
//! One task owns the only read-write connection. It takes the first waiting operation, then
//! everything else already queued (up to `commit_batch_max`), applies them in arrival order
//! inside one `BEGIN IMMEDIATE` transaction, commits once, and then answers every caller (each
//! with its own typed reply, see [`ops`](super::ops)).
//!
//! The commit writes the WAL and does not wait for the disk (`synchronous=NORMAL`). Under
//! [`Durability::Fsync`](crate::store::Durability::Fsync) the batch's promise operations (a
//! publish, anything a caller is told is durable) are answered by the [`Syncer`] thread after
//! the fsync that follows the commit, with the wakes of the deliveries they created; its
//! progress operations (in-flight marks, attempt outcomes) are answered at once, so delivery
//! bookkeeping never waits for a publish's fsync, and the writer never waits for the disk:
//! while one fsync runs, the next batches are applied and share the next fsync.
//!
//! Operations check their preconditions before writing and report a refusal (unknown tenant,
//! duplicate id, a lost lease) as a per-operation error without touching the database, so one
//! bad request never sinks a batch. If SQLite itself fails mid-batch, the transaction is rolled
//! back, the routing table is reloaded, and the operations are replayed one per transaction so
//! that only the ones that really cannot be written fail.
//!
//! The connection is a plain synchronous SQLite connection driven inline by the writer task: no
//! statement crosses to another thread (on this kind of machine a hand-off to another thread
//! and back, what an async SQLite driver does per statement, costs more than the statement).
//! Nothing the writer runs per batch waits for the disk: fsyncs are the [`Syncer`]'s, WAL
//! checkpoints the [`Checkpointer`]'s, each on a thread of its own. After each commit that
//! created deliveries, the subscriptions that received them are handed to the [`WakeSender`].
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
use super::durable::{Frontier, Pending, Syncer};
use super::leases::Leases;
use super::ops::{Op, apply_batch};
use super::routing::Routing;
use crate::domain::SubscriptionId;
use crate::error::Error;
use crate::health::{Health, WriteFailure};
use crate::store::WakeSender;

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
    pub wakes: Arc<WakeSender>,
    pub batch_max: usize,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub checkpointer: Checkpointer,
    pub frontier: Arc<Frontier>,
    /// Answers promise operations after their fsync; `None` without fsyncs (`Durability::Os`).
    pub syncer: Option<Syncer>,
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

/// The writer's state between batches.
struct Batcher {
    conn: Connection,
    routing: Routing,
    leases: Leases,
    wakes: Arc<WakeSender>,
    metrics: Arc<crate::metrics::Metrics>,
    checkpointer: Checkpointer,
    frontier: Arc<Frontier>,
    syncer: Option<Syncer>,
    /// The number of the last batch (see [`Frontier`]).
    batch: u64,
    /// Operations applied and committed, waiting for their answers.
    done: Vec<Op>,
}

async fn run_inner(w: Writer, rx: &mut mpsc::Receiver<Command>) {
    let batch_max = w.batch_max;
    let mut b = Batcher {
        conn: w.conn,
        routing: w.routing,
        leases: w.leases,
        wakes: w.wakes,
        metrics: w.metrics,
        checkpointer: w.checkpointer,
        frontier: w.frontier,
        syncer: w.syncer,
        batch: 0,
        done: Vec::with_capacity(batch_max),
    };
    let mut ops: Vec<Op> = Vec::with_capacity(batch_max);
    let mut closing: Option<oneshot::Sender<()>> = None;
    let mut last_batch = 0;
    loop {
        let next = if b.metrics.health.unwritable().is_some() {
            match tokio::time::timeout(PROBE_EVERY, rx.recv()).await {
                Ok(next) => next,
                Err(_) => {
                    let health = &b.metrics.health;
                    off_worker(|| match probe(&mut b.conn) {
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
        if closing.is_none() && b.checkpointer.wants_quiet() {
            // The WAL is to start over (see `checkpoint`): nothing is committed meanwhile.
            b.checkpointer.hold_still().await;
            while ops.len() < batch_max {
                match rx.try_recv() {
                    Ok(Command::Op(op)) => ops.push(op),
                    Ok(Command::Close(done)) => {
                        closing = Some(done);
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
        if !ops.is_empty() {
            last_batch = ops.len();
            b.commit(&mut ops, yielded);
        }
        if let Some(done) = closing.take() {
            rx.close();
            // Operations that raced with close still get their answer.
            while let Ok(Command::Op(op)) = rx.try_recv() {
                ops.push(op);
            }
            if !ops.is_empty() {
                b.commit(&mut ops, Duration::ZERO);
            }
            b.close();
            let _ = done.send(());
            return;
        }
    }
    b.close();
}

/// Runs `f`, which waits for the disk, without holding up the tokio worker's other tasks:
/// `block_in_place` moves them to another worker first (only possible on the multi-thread
/// runtime; a current-thread runtime has nothing to move them to and simply waits). Used only
/// off the write path: the probe of an unwritable journal, and the close.
fn off_worker<R>(f: impl FnOnce() -> R) -> R {
    let multi = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi {
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

impl Batcher {
    /// Applies and commits `ops` (emptying it), then answers them: progress operations at once,
    /// promise operations after their fsync.
    fn commit(&mut self, ops: &mut Vec<Op>, yielded: Duration) {
        let (n, started) = (ops.len(), Instant::now());
        let shape = BatchShape::of(ops, started);
        self.batch += 1;
        let mut commit = Duration::ZERO;
        let mut max_seq = 0;
        let woken = process(
            &mut self.conn,
            &mut self.routing,
            &mut self.leases,
            ops,
            &mut self.done,
            &self.metrics.health,
            &mut commit,
            &mut max_seq,
        );
        self.frontier.written(self.batch);
        // Promises, and events (an outcome's notifications), wait for the fsync.
        let deferred = shape.progress < n || max_seq > 0;
        let took = started.elapsed();
        self.metrics.commit(n, took);
        if took + shape.waited >= SLOW_BATCH {
            tracing::debug!(
                ops = n,
                publishes = shape.publishes,
                progress = shape.progress,
                waited_ms = shape.waited.as_secs_f64() * 1e3,
                yielded_ms = yielded.as_secs_f64() * 1e3,
                apply_ms = (took - commit).as_secs_f64() * 1e3,
                commit_ms = commit.as_secs_f64() * 1e3,
                "slow journal batch"
            );
        }
        self.checkpointer.committed();
        match &self.syncer {
            Some(syncer) if deferred => {
                let mut promised = Vec::new();
                for op in self.done.drain(..) {
                    if op.is_progress() {
                        op.answer();
                    } else {
                        promised.push(op);
                    }
                }
                syncer.after_sync(Pending {
                    batch: self.batch,
                    ops: promised,
                    wakes: woken,
                    max_seq,
                });
            }
            _ => {
                self.done.drain(..).for_each(Op::answer);
                self.wakes.wake(woken);
            }
        }
    }

    /// Makes everything committed durable and answered, then stops the threads and closes the
    /// connection.
    fn close(self) {
        let Batcher {
            conn,
            checkpointer,
            syncer,
            ..
        } = self;
        off_worker(move || {
            if let Some(s) = syncer {
                s.stop();
            }
            checkpointer.stop();
            if let Err((_, e)) = conn.close() {
                tracing::warn!(error = %e, "journal writer connection did not close cleanly");
            }
        });
    }
}

/// Applies and commits one batch, moving the operations that committed to `done` (to be
/// answered) and failing the others, and returns the subscriptions to wake. `commit` gets the
/// time the commit itself took, `max_seq` the highest `seq` of the events it created.
#[allow(
    clippy::too_many_arguments,
    reason = "the writer's parts, borrowed separately"
)]
fn process(
    conn: &mut Connection,
    routing: &mut Routing,
    leases: &mut Leases,
    ops: &mut Vec<Op>,
    done: &mut Vec<Op>,
    health: &Health,
    commit: &mut Duration,
    max_seq: &mut i64,
) -> HashSet<SubscriptionId> {
    let mut wakes = HashSet::new();
    match apply_batch(conn, routing, leases, ops, &mut wakes) {
        Ok(c) => {
            *commit = c.took;
            *max_seq = c.max_seq;
            health.write_ok();
            done.append(ops);
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
                match apply_batch(conn, routing, leases, one, &mut single) {
                    Ok(c) => {
                        *max_seq = (*max_seq).max(c.max_seq);
                        health.write_ok();
                        wakes.extend(single);
                        done.push(op);
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
