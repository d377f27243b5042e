//! The journal: the single-node store, everything in one SQLite file.
//!
//! # Invariants
//! - **Durable accept** (guarantee 1): every write goes through the single [writer](writer) task,
//!   which groups the operations waiting for it into one `BEGIN IMMEDIATE … COMMIT` (group
//!   commit) and answers each caller only after that commit returned. With the default
//!   [`Durability::Fsync`](crate::store::Durability::Fsync), a promise commit (a publish, an
//!   operator's action) is answered only after the [sync thread](durable) fsynced the WAL
//!   behind it, so an answered write survives `kill -9` and power loss; delivery progress is
//!   fsynced within 50 ms.
//! - **Order**: an event's `seq` is assigned inside the commit that makes it durable (one
//!   counter for the whole file), so `seq` order is commit order, and a subscription's
//!   deliveries are read back in `seq` order.
//! - **Fan-out is atomic**: the event row and one delivery row per matching subscription are
//!   written by the same operation; matching uses the writer's own [routing](routing) table,
//!   which is changed only by writer operations, so it always agrees with the journal.
//! - **One writer per queue**: delivery state changes come only from the holder of the
//!   subscription's lease (and recovery at start-up, before any lease exists); the writer
//!   keeps the current token of every queue ([`leases`]) and refuses stale ones, so absolute
//!   values can be written without read-modify-write races.
//! - **Crash recovery** (guarantee 7, see [`recovery`]): at open, deliveries left `in_flight`
//!   get an `interrupted` attempt and go back to `pending`; their subscriptions are reported so
//!   the engine resumes them in order.
//!
//! The writer drives its own synchronous connection inline (see [`writer`]); fsyncs run on the
//! [`durable`] thread, WAL checkpoints on the [`checkpoint`] thread. Readers use a
//! separate pool of read-only sqlx connections ([`reads`]), except the delivery path's queue
//! refill, which reads inline ([`inline_read`]); WAL lets them all run beside the writer.
//! [`seam`] implements the store's traits on [`Journal`]; [`coordination`] the cluster seam, as
//! the one node that owns everything.

#[macro_use]
pub(in crate::store) mod rows;

mod catalog;
mod checkpoint;
#[allow(
    dead_code,
    reason = "the seam is committed first; the engine uses it next"
)]
mod coordination;
mod durable;
mod inline_read;
mod insight;
mod leases;
mod open;
mod ops;
mod publish;
mod queue;
mod reads;
mod recovery;
mod routing;
mod seam;
mod transforms;
mod upkeep;
mod writer;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sqlx::Connection;
use sqlx::sqlite::{SqliteConnection, SqlitePool, SqlitePoolOptions};
use tokio::sync::{Mutex, mpsc, oneshot};

use super::{Opened, StoreOptions, wake_channel};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::security::secretbox::SecretBox;

use inline_read::InlineReaders;
use ops::{Call, Op, Write};
use writer::Command;

/// Handle to the journal; cheap to clone.
#[derive(Clone)]
pub(crate) struct Journal {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("path", &self.inner.path)
            .finish()
    }
}

struct Inner {
    path: PathBuf,
    tx: mpsc::Sender<Command>,
    readers: SqlitePool,
    queue_readers: InlineReaders,
    sealer: Arc<SecretBox>,
    writer_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Which commits are durable: the queue refill waits on it (see `durable`).
    frontier: Arc<durable::Frontier>,
    /// The subscriptions with a lease (kept by the writer's lease table).
    leases_held: Arc<std::sync::atomic::AtomicU64>,
    /// This process, the only node (see `coordination`).
    node: std::sync::Mutex<Option<super::NodeRow>>,
}

impl Journal {
    /// Opens (creating if needed) the journal at `path`, migrates it, runs crash recovery and
    /// starts the writer task.
    pub(crate) async fn open(
        path: &Path,
        cfg: &StoreOptions,
        sealer: SecretBox,
        metrics: Arc<Metrics>,
    ) -> Result<Opened> {
        let sealer = Arc::new(sealer);
        let mut conn =
            SqliteConnection::connect_with(&open::sqlx_options(path, cfg.durability, true))
                .await
                .map_err(open::sql_err("open"))?;
        open::check_pragmas(&mut conn, cfg.durability).await?;
        sqlx::migrate!("./schemas/migrations")
            .run(&mut conn)
            .await
            .map_err(|e| Error::unavailable("journal migration failed", e))?;
        // sqlx's part ends here: the writer drives its own connection (see `writer`). That one
        // is opened first: closing the last connection to a WAL database checkpoints the whole
        // WAL, which after a crash under load took half a second of the restart.
        let mut wconn = open::writer(path)?;
        conn.close().await.map_err(open::sql_err("open"))?;
        let recovery = recovery::recover(&mut wconn)?;
        let routing = routing::Routing::load(&wconn, sealer.clone())?;
        let checkpointer = checkpoint::Checkpointer::start(path, metrics.clone())?;

        let readers = SqlitePoolOptions::new()
            .max_connections(cfg.reader_connections)
            .min_connections(1)
            .connect_with(open::sqlx_options(path, cfg.durability, false))
            .await
            .map_err(open::sql_err("open readers"))?;

        let leases_held = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (tx, rx) = mpsc::channel(cfg.intake_queue);
        let (wakes, wake_rx) = wake_channel();
        let wakes = Arc::new(wakes);
        let (frontier, syncer) = match cfg.durability {
            super::Durability::Fsync => {
                let last_seq: i64 = wconn
                    .query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0))
                    .map_err(|e| Error::unavailable("journal open failed", e))?;
                let frontier = durable::Frontier::new(last_seq);
                let syncer =
                    durable::Syncer::start(path, frontier.clone(), wakes.clone(), metrics.clone())?;
                (frontier, Some(syncer))
            }
            super::Durability::Os => (durable::Frontier::new(i64::MAX), None),
        };
        let task = tokio::spawn(writer::run(
            writer::Writer {
                conn: wconn,
                routing,
                leases: leases::Leases::counted(leases_held.clone()),
                wakes,
                batch_max: cfg.commit_batch_max,
                metrics,
                checkpointer,
                frontier: frontier.clone(),
                syncer,
            },
            rx,
        ));
        let journal = Journal {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                tx,
                readers,
                queue_readers: InlineReaders::new(path, cfg.reader_connections as usize),
                sealer,
                writer_task: Mutex::new(Some(task)),
                frontier,
                leases_held,
                node: std::sync::Mutex::new(None),
            }),
        };
        Ok(Opened {
            store: Arc::new(journal),
            recovery,
            wakes: wake_rx,
            tenant_limits: None,
        })
    }

    /// Hands `req` to the writer and waits for its answer (after its commit).
    async fn call<W: Write>(&self, req: W) -> Result<W::Out>
    where
        Op: From<Call<W>>,
    {
        let (reply, rx) = oneshot::channel();
        self.inner
            .tx
            .send(Command::Op(Call::new(req, reply).into()))
            .await
            .map_err(|_| Error::ShuttingDown)?;
        rx.await.map_err(|_| Error::ShuttingDown)?
    }

    /// Hands `req` to the writer without waiting for its commit.
    async fn send<W: Write>(&self, req: W) -> Result<()>
    where
        Op: From<Call<W>>,
    {
        self.inner
            .tx
            .send(Command::Op(Call::unanswered(req).into()))
            .await
            .map_err(|_| Error::ShuttingDown)
    }

    /// Hands `req` to the writer, waiting at most `wait` for room in its intake queue (then
    /// `Overloaded`: nothing of it was queued, so nothing of it is written), and waits for its
    /// answer.
    async fn call_within<W: Write>(&self, req: W, wait: std::time::Duration) -> Result<W::Out>
    where
        Op: From<Call<W>>,
    {
        let (reply, rx) = oneshot::channel();
        let cmd = Command::Op(Call::new(req, reply).into());
        match self.inner.tx.try_send(cmd) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(Error::ShuttingDown),
            Err(mpsc::error::TrySendError::Full(_)) if wait.is_zero() => {
                return Err(Error::Overloaded);
            }
            Err(mpsc::error::TrySendError::Full(cmd)) => {
                match self.inner.tx.send_timeout(cmd, wait).await {
                    Ok(()) => {}
                    Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                        return Err(Error::Overloaded);
                    }
                    Err(mpsc::error::SendTimeoutError::Closed(_)) => {
                        return Err(Error::ShuttingDown);
                    }
                }
            }
        }
        rx.await.map_err(|_| Error::ShuttingDown)?
    }

    /// Commits all queued writes and stops the writer; later writes fail with `ShuttingDown`.
    async fn shut(&self) {
        let (reply, rx) = oneshot::channel();
        if self.inner.tx.send(Command::Close(reply)).await.is_ok() {
            let _ = rx.await;
        }
        if let Some(task) = self.inner.writer_task.lock().await.take() {
            let _ = task.await;
        }
        self.inner.readers.close().await;
    }
}
