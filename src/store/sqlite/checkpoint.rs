//! WAL checkpoints, and the periodic fsync of delivery progress, on a thread of their own.
//!
//! A checkpoint copies the WAL's pages back into the database file and waits for the disk twice
//! (the WAL before, the database after). Left to SQLite's automatic checkpoint it would run
//! inside whichever commit crossed the threshold, that is on the writer, stalling the delivery
//! whose outcome it was recording and the tokio worker driving it. So the writer's connection
//! has automatic checkpoints off and reports the WAL's size after each commit; past
//! [`CHECKPOINT_PAGES`] it nudges this thread, which checkpoints (`PASSIVE`: it never blocks the
//! writer or a reader, and does what the readers' snapshots allow) through its own connection.
//! A timer also checkpoints a WAL that stopped growing, so it does not stay large while idle.
//!
//! Under [`Durability::Fsync`] the same thread also bounds how much delivery progress a power
//! failure can take back. Progress commits (in-flight marks, attempt outcomes) do not fsync
//! (see `writer::SyncState`); every [`PROGRESS_SYNC_EVERY`] in which the writer committed, this
//! thread fsyncs the WAL file, which makes every commit written before it durable. Done on the
//! writer, that fsync would flush tens of milliseconds of writes while a delivery waits on it.

use std::cell::Cell;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::error::{Error, Result};
use crate::store::Durability;

/// WAL size (pages, 4 KiB each) at which a checkpoint is asked for. SQLite's default is 1,000;
/// a checkpoint copies each page once however often it changed since the last one, and the
/// delivery path rewrites the same few pages all the time, so a longer WAL copies far less.
const CHECKPOINT_PAGES: i32 = 2_000;
/// A WAL smaller than the threshold is checkpointed after this long without a nudge.
const IDLE_CHECKPOINT: Duration = Duration::from_secs(1);
/// A checkpoint or progress fsync at least this long is logged (debug).
const SLOW_SYNC: Duration = Duration::from_millis(10);
/// How often, at least, delivery progress reaches the disk under [`Durability::Fsync`].
pub(super) const PROGRESS_SYNC_EVERY: Duration = Duration::from_millis(50);

thread_local! {
    /// WAL pages after the last commit on this thread's writer connection. The hook that sets it
    /// is a plain function (SQLite's C callback), and the writer reads it right after the commit
    /// on the same thread, so a thread-local carries it without any shared state.
    static WAL_PAGES: Cell<i32> = const { Cell::new(0) };
}

fn wal_hook(_: &rusqlite::hooks::Wal, pages: i32) -> rusqlite::Result<()> {
    WAL_PAGES.with(|p| p.set(pages));
    Ok(())
}

/// Turns off automatic checkpoints on the writer's connection and starts reporting WAL sizes.
pub(super) fn prepare_writer(conn: &Connection) -> rusqlite::Result<()> {
    // Must come first: setting the pragma replaces any WAL hook.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    conn.wal_hook(Some(wal_hook));
    Ok(())
}

/// The checkpoint thread, and how the writer nudges it.
pub(crate) struct Checkpointer {
    state: Arc<State>,
    thread: Option<JoinHandle<()>>,
}

struct State {
    stop: AtomicBool,
    nudged: AtomicBool,
    /// Commits by the writer so far.
    commits: AtomicU64,
}

impl Checkpointer {
    pub(super) fn start(path: &Path, durability: Durability) -> Result<Checkpointer> {
        let conn = super::open::rusqlite(path, false)
            .map_err(|e| Error::unavailable("journal checkpointer could not open", e))?;
        let state = Arc::new(State {
            stop: AtomicBool::new(false),
            nudged: AtomicBool::new(false),
            commits: AtomicU64::new(0),
        });
        let s = state.clone();
        let wal = (durability == Durability::Fsync).then(|| {
            let mut p = path.as_os_str().to_owned();
            p.push("-wal");
            std::path::PathBuf::from(p)
        });
        let thread = std::thread::Builder::new()
            .name("hookline-checkpoint".into())
            .spawn(move || run(&conn, &s, wal.as_deref()))
            .map_err(|e| Error::unavailable("journal checkpointer could not start", e))?;
        Ok(Checkpointer {
            state,
            thread: Some(thread),
        })
    }

    /// Called by the writer after each commit, on the thread that committed.
    pub(super) fn committed(&self) {
        self.state.commits.fetch_add(1, Ordering::Release);
        let pages = WAL_PAGES.with(|p| p.replace(0));
        if pages >= CHECKPOINT_PAGES
            && !self.state.nudged.swap(true, Ordering::AcqRel)
            && let Some(t) = &self.thread
        {
            t.thread().unpark();
        }
    }

    /// Stops the thread after a last checkpoint.
    pub(super) fn stop(mut self) {
        self.state.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Release);
        if let Some(t) = &self.thread {
            t.thread().unpark();
        }
    }
}

fn run(conn: &Connection, state: &State, wal: Option<&Path>) {
    let tick = if wal.is_some() {
        PROGRESS_SYNC_EVERY
    } else {
        IDLE_CHECKPOINT
    };
    let mut last_checkpoint = Instant::now();
    let mut synced_upto = state.commits.load(Ordering::Acquire);
    let mut wal_file: Option<std::fs::File> = None;
    loop {
        std::thread::park_timeout(tick);
        let stopping = state.stop.load(Ordering::Acquire);
        let commits = state.commits.load(Ordering::Acquire);
        if state.nudged.swap(false, Ordering::AcqRel)
            || stopping
            || last_checkpoint.elapsed() >= IDLE_CHECKPOINT
        {
            // A checkpoint fsyncs the WAL before it copies it, so it is a progress sync too.
            let started = Instant::now();
            let done = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
            });
            match done {
                Ok((wal_pages, copied)) => {
                    crate::crashpoint::hit("checkpoint");
                    synced_upto = commits;
                    let took = started.elapsed();
                    if took >= SLOW_SYNC {
                        tracing::debug!(
                            wal_pages,
                            copied,
                            took_ms = took.as_secs_f64() * 1e3,
                            "slow journal checkpoint"
                        );
                    }
                }
                Err(e) => tracing::warn!(
                    error = %e,
                    "journal checkpoint failed; the WAL keeps growing until one succeeds"
                ),
            }
            last_checkpoint = Instant::now();
        } else if let Some(path) = wal
            && commits != synced_upto
        {
            if wal_file.is_none() {
                wal_file = std::fs::File::open(path).ok();
            }
            let started = Instant::now();
            match wal_file.as_ref().map(std::fs::File::sync_data) {
                Some(Ok(())) => {
                    synced_upto = commits;
                    let took = started.elapsed();
                    if took >= SLOW_SYNC {
                        tracing::debug!(
                            took_ms = took.as_secs_f64() * 1e3,
                            "slow journal progress fsync"
                        );
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "journal WAL fsync failed");
                    wal_file = None;
                }
                // No WAL file yet: nothing has been written.
                None => {}
            }
        }
        if stopping {
            return;
        }
    }
}
