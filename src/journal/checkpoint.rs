//! WAL checkpoints on a thread of their own.
//!
//! A checkpoint copies the WAL's pages back into the database file and waits for the disk twice
//! (the WAL before, the database after). Left to SQLite's automatic checkpoint it would run
//! inside whichever commit crossed the threshold, that is on the writer, stalling the delivery
//! whose outcome it was recording and the tokio worker driving it. So the writer's connection
//! has automatic checkpoints off and reports the WAL's size after each commit; past
//! [`CHECKPOINT_PAGES`] it nudges this thread, which checkpoints (`PASSIVE`: it never blocks the
//! writer or a reader, and does what the readers' snapshots allow) through its own connection.
//! A timer also checkpoints a WAL that stopped growing, so it does not stay large while idle.

use std::cell::Cell;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::error::{Error, Result};

/// WAL size (pages) at which a checkpoint is asked for: SQLite's own default threshold.
const CHECKPOINT_PAGES: i32 = 1000;
/// A WAL smaller than the threshold is checkpointed after this long without a nudge.
const IDLE_CHECKPOINT: Duration = Duration::from_secs(1);

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
}

impl Checkpointer {
    pub(super) fn start(path: &Path) -> Result<Checkpointer> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| Error::unavailable("journal checkpointer could not open", e))?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(|e| Error::unavailable("journal checkpointer could not open", e))?;
        let state = Arc::new(State {
            stop: AtomicBool::new(false),
            nudged: AtomicBool::new(false),
        });
        let s = state.clone();
        let thread = std::thread::Builder::new()
            .name("hookline-checkpoint".into())
            .spawn(move || run(&conn, &s))
            .map_err(|e| Error::unavailable("journal checkpointer could not start", e))?;
        Ok(Checkpointer {
            state,
            thread: Some(thread),
        })
    }

    /// Called by the writer after each commit, on the thread that committed.
    pub(super) fn committed(&self) {
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

fn run(conn: &Connection, state: &State) {
    loop {
        std::thread::park_timeout(IDLE_CHECKPOINT);
        state.nudged.store(false, Ordering::Release);
        let stopping = state.stop.load(Ordering::Acquire);
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "journal checkpoint failed; the WAL keeps growing until one succeeds");
        }
        if stopping {
            return;
        }
    }
}
