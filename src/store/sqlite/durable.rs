//! Making commits durable off the writer: the sync thread, and the durability frontier.
//!
//! Under [`Durability::Fsync`](crate::store::Durability::Fsync) a promise commit (a publish, a
//! tenant, a subscription, an operator's action) must be on disk before its caller hears of it
//! (guarantee 1). The writer's connection runs `synchronous=NORMAL`: its commits write the WAL
//! and return without waiting for the disk. Instead of fsyncing inline, the writer hands a
//! committed batch's promise operations (with their answers, and the wakes of the deliveries they
//! created) to this thread, which calls `fdatasync` on the WAL file and only then answers them
//! and sends the wakes. One fsync covers every commit written before it, so the batches that
//! pile up while one fsync runs share the next one (group commit of fsyncs).
//!
//! Why not fsync in the commit (`synchronous=FULL`), as before: the writer then waits for the
//! disk with the journal's only connection, so every write queued behind it waits too,
//! including the delivery bookkeeping that needs no fsync, and a disk that stalls (a checkpoint
//! flushing thousands of scattered pages of a large journal took 0.5 s on the test VM) stalls
//! all of them; and the writer had to leave the tokio worker for each fsync
//! (`block_in_place`). Now the writer never waits for the disk: progress operations (in-flight
//! marks, attempt outcomes) are answered as soon as their commit returns, promise operations as
//! soon as the fsync that follows their commit returns.
//!
//! The same thread fsyncs the WAL at least every [`PROGRESS_SYNC_EVERY`] while progress is
//! committed, which bounds what a power failure can take back of delivery progress.
//!
//! # Invariants
//! - An operation handed in is answered only after an `fdatasync` of the WAL that began after
//!   its commit returned. A WAL frame is overwritten (WAL restart) only after a checkpoint
//!   copied it into the database and synced the database, so a commit that was fsynced in the
//!   WAL stays durable across restarts of the WAL.
//! - **The frontier.** A commit is visible to readers as soon as it returns, before its fsync.
//!   Nothing may be sent to a receiver on the strength of a publish that a power failure could
//!   still take back: every queue read (the refill, a keyed subscription's heads, a key's
//!   next delivery, whether read by a reader or by the writer after a record) waits until the
//!   events of the deliveries it read are durable ([`Frontier::wait_durable`], by `seq`: every
//!   event up to [`Frontier`]'s durable `seq` is on disk). A batch that created events is handed to this
//!   thread even if it holds no promise (an attempt outcome with its operational
//!   notifications), so its events become durable, and its wakes go out, after an fsync.
//!   A subscriber's own operator commands need no such wait: the actor waits for their answer,
//!   which comes after their fsync.
//! - A failed `fdatasync` is fatal ([`Health::fatal`](crate::health::Health::fatal)): after
//!   one, the kernel may have dropped the dirty pages, so nothing written since can be called
//!   durable. Its operations are answered `Unavailable`; the process is meant to stop and
//!   recover from what is on disk at the next start, as after a crash.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::ops::Op;
use crate::domain::SubscriptionId;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::store::WakeSender;

/// Tests: the WAL files whose fsyncs wait while they are listed (a disk that is slow to sync).
#[cfg(test)]
pub(super) static HELD: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// How often, at least, delivery progress reaches the disk under `Durability::Fsync`.
pub(super) const PROGRESS_SYNC_EVERY: Duration = Duration::from_millis(50);
/// An fsync at least this long is logged (debug).
const SLOW_SYNC: Duration = Duration::from_millis(10);

/// Which commits are written and which events are durable.
///
/// Batches are numbered by the writer, 1, 2, …, in commit order.
#[derive(Debug)]
pub(super) struct Frontier {
    /// The last batch whose commit returned.
    written: AtomicU64,
    /// Every event with a `seq` up to this one is durable.
    durable_seq: watch::Sender<i64>,
}

impl Frontier {
    /// A frontier whose events up to `durable_seq` are durable (`i64::MAX` for a store without
    /// fsyncs, `Durability::Os`, where nothing waits).
    pub(super) fn new(durable_seq: i64) -> Arc<Frontier> {
        Arc::new(Frontier {
            written: AtomicU64::new(0),
            durable_seq: watch::Sender::new(durable_seq),
        })
    }

    /// The writer: batch `n`'s commit returned (or failed: nothing of it is visible).
    pub(super) fn written(&self, n: u64) {
        self.written.store(n, Ordering::Release);
    }

    /// Waits until the event `seq` (and every one before it) is durable. Returns at once unless
    /// its publish is still waiting for its fsync.
    pub(super) async fn wait_durable(&self, seq: i64) {
        if *self.durable_seq.borrow() >= seq {
            return;
        }
        let mut rx = self.durable_seq.subscribe();
        // The sender lives as long as the journal; if it is gone, nothing is durable any more
        // and the caller's next write reports it.
        let _ = rx.wait_for(|s| *s >= seq).await;
    }
}

/// A committed batch's promise operations, waiting for the fsync that makes them durable.
pub(super) struct Pending {
    /// The batch's number.
    pub batch: u64,
    pub ops: Vec<Op>,
    pub wakes: HashSet<SubscriptionId>,
    /// The highest `seq` of the events the batch created (0 if none).
    pub max_seq: i64,
}

enum Msg {
    Pending(Pending),
    /// Sync what is left, answer it, and stop.
    Stop,
}

/// The sync thread, and how the writer hands batches to it.
pub(super) struct Syncer {
    tx: mpsc::Sender<Msg>,
    thread: Option<JoinHandle<()>>,
}

impl Syncer {
    /// Starts the thread for the journal at `path` (its WAL is `path` + `-wal`).
    pub(super) fn start(
        path: &Path,
        frontier: Arc<Frontier>,
        wakes: Arc<WakeSender>,
        metrics: Arc<Metrics>,
    ) -> crate::error::Result<Syncer> {
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let wal = PathBuf::from(wal);
        // What an earlier process wrote may not have been fsynced (it was stopped between a
        // commit and its fsync): the frontier starts durable only after this.
        match std::fs::File::open(&wal) {
            Ok(f) => f
                .sync_data()
                .map_err(|e| Error::unavailable("journal fsync failed", e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::unavailable("journal WAL could not be opened", e)),
        }
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("hookline-sync".into())
            .spawn(move || {
                Sync {
                    wal,
                    file: None,
                    broken: None,
                    frontier,
                    wakes,
                    metrics,
                }
                .run(&rx)
            })
            .map_err(|e| Error::unavailable("journal sync thread could not start", e))?;
        Ok(Syncer {
            tx,
            thread: Some(thread),
        })
    }

    /// Answers `p`'s operations (and sends its wakes) once the WAL is fsynced.
    pub(super) fn after_sync(&self, p: Pending) {
        if let Err(mpsc::SendError(Msg::Pending(p))) = self.tx.send(Msg::Pending(p)) {
            // The thread is gone (it only stops when told to, or panicked): nothing can be
            // made durable any more.
            for op in p.ops {
                op.fail(Error::Internal("the journal sync thread stopped".into()));
            }
        }
    }

    /// Syncs and answers everything handed in, then stops the thread.
    pub(super) fn stop(mut self) {
        let _ = self.tx.send(Msg::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The thread's state.
struct Sync {
    wal: PathBuf,
    file: Option<std::fs::File>,
    /// Why an fsync failed: from then on nothing is answered as durable.
    broken: Option<String>,
    frontier: Arc<Frontier>,
    wakes: Arc<WakeSender>,
    metrics: Arc<Metrics>,
}

impl Sync {
    fn run(mut self, rx: &mpsc::Receiver<Msg>) {
        let mut waiting: Vec<Pending> = Vec::new();
        // The last batch known durable (every batch up to it).
        let mut synced = 0;
        let mut last_sync = Instant::now();
        let mut stopping = false;
        loop {
            // Wait for a batch, or for the progress deadline when progress was written since
            // the last fsync.
            let progress =
                self.broken.is_none() && self.frontier.written.load(Ordering::Acquire) > synced;
            let msg = if progress {
                let left = PROGRESS_SYNC_EVERY.saturating_sub(last_sync.elapsed());
                match rx.recv_timeout(left) {
                    Ok(m) => Some(m),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => Some(Msg::Stop),
                }
            } else {
                Some(rx.recv().unwrap_or(Msg::Stop))
            };
            let mut take = |m: Msg| match m {
                Msg::Pending(p) => waiting.push(p),
                Msg::Stop => stopping = true,
            };
            if let Some(m) = msg {
                take(m);
            }
            while let Ok(m) = rx.try_recv() {
                take(m);
            }
            let written = self.frontier.written.load(Ordering::Acquire);
            let due = !waiting.is_empty()
                || (written > synced && last_sync.elapsed() >= PROGRESS_SYNC_EVERY)
                || stopping;
            if let Some(why) = &self.broken {
                for op in waiting.drain(..).flat_map(|p| p.ops) {
                    op.fail(Error::unavailable("journal fsync failed", why.clone()));
                }
            } else if due && written > synced {
                last_sync = Instant::now();
                match self.fsync() {
                    Ok(()) => {
                        let took = last_sync.elapsed();
                        if took >= SLOW_SYNC {
                            tracing::debug!(
                                took_ms = took.as_secs_f64() * 1e3,
                                batches = waiting.len(),
                                "slow journal fsync"
                            );
                        }
                        self.metrics.fsync(took);
                        synced = written;
                    }
                    Err(e) => {
                        self.metrics.health.fatal(format!(
                            "the journal's WAL could not be fsynced ({e}): what was written \
                             since the last fsync may be lost"
                        ));
                        for op in waiting.drain(..).flat_map(|p| p.ops) {
                            op.fail(Error::unavailable("journal fsync failed", e.to_string()));
                        }
                        // Later batches fail the same way: the file's state is unknown.
                        self.broken = Some(e.to_string());
                    }
                }
            }
            // Every batch handed in was written before it was handed in, so `written` covers it.
            let max_seq = waiting.iter().map(|p| p.max_seq).max().unwrap_or(0);
            if max_seq > *self.frontier.durable_seq.borrow() {
                self.frontier.durable_seq.send_replace(max_seq);
            }
            for p in waiting.drain(..) {
                debug_assert!(p.batch <= written);
                p.ops.into_iter().for_each(Op::answer);
                self.wakes.wake(p.wakes);
            }
            if stopping {
                return;
            }
        }
    }

    fn fsync(&mut self) -> std::io::Result<()> {
        // The sync thread is a thread of its own, not a tokio worker: sleeping here holds up
        // nothing but the fsync being held.
        #[cfg(test)]
        #[allow(clippy::disallowed_methods)]
        while HELD.lock().is_ok_and(|held| held.contains(&self.wal)) {
            std::thread::sleep(Duration::from_millis(1));
        }
        if self.file.is_none() {
            self.file = Some(std::fs::File::open(&self.wal)?);
        }
        match &self.file {
            Some(f) => f.sync_data(),
            None => Ok(()),
        }
    }
}
