//! WAL checkpoints, on a thread of their own.
//!
//! A checkpoint copies the WAL's pages back into the database file and waits for the disk twice
//! (the WAL before, the database after). Left to SQLite's automatic checkpoint it would run
//! inside whichever commit crossed the threshold, that is on the writer, stalling the delivery
//! whose outcome it was recording and the tokio worker driving it. So the writer's connection
//! has automatic checkpoints off and reports the WAL's size after each commit; once
//! [`CHECKPOINT_PAGES`] frames were appended since the last checkpoint it nudges this thread,
//! which checkpoints (`PASSIVE`: it never blocks the writer or a reader, and does what the
//! readers' snapshots allow) through its own connection. A timer also checkpoints a WAL that
//! stopped growing, so it does not stay large while idle.
//!
//! The nudge counts frames appended since the last checkpoint, not the WAL's size: under a
//! steady load the writer appends while a checkpoint runs, so the WAL is rarely fully copied
//! at the moment a commit starts, which is the only moment SQLite can start it over from the
//! beginning. A nudge on size alone then fired after every commit once the WAL passed the
//! threshold: checkpoints ran back to back (measured: one every 20-30 ms, each with its two
//! fsyncs, at 1,000 events/s), competing for the disk with the fsyncs that answer publishes.
//!
//! The WAL also has to start over now and then, or it grows without bound (measured: to 527 MiB
//! in 10 s at 1,000 events/s, once the writer stopped waiting for fsyncs) and every fsync of it
//! has to extend the file. SQLite starts it over only when the whole WAL is copied and no reader
//! is in it, which a busy writer and busy readers never give a concurrent checkpoint (a
//! checkpoint copies the frames it saw when it started; the writer appends more meanwhile; the
//! queue refills of a large journal, reading from the disk, were nearly always in it). So once
//! the WAL is past [`RESTART_FRAMES`], this thread catches up with a few more checkpoints until
//! at most [`QUIET_FRAMES`] are left, then asks the writer to hold still between two batches
//! (the writer awaits, its tokio worker runs other tasks, operations queue up), copies the rest,
//! and starts the WAL over itself (`RESTART`, waiting at most [`RESTART_WAIT`] for the readers
//! already in the WAL; readers that start meanwhile read the database file and do not count).
//! The writer's next commit writes at the start of the WAL, inside the file's existing size.
//! The pause is one short checkpoint, once per [`RESTART_FRAMES`] of WAL; the writer goes on
//! after [`QUIET_MAX`] whatever happens, unless the restart itself has begun (it holds SQLite's
//! write lock, for at most [`RESTART_WAIT`] plus the lock hand-over).
//!
//! The periodic fsync of delivery progress, once done here, is the sync thread's
//! (see [`durable`](super::durable)).

use std::cell::Cell;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU8, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// Frames (pages, 4 KiB each) appended to the WAL since the last checkpoint at which another
/// is asked for. SQLite's default (on the WAL's size) is 1,000;
/// a checkpoint copies each page once however often it changed since the last one, and the
/// delivery path rewrites the same few pages all the time, so a longer WAL copies far less.
/// (The three frame counts are smaller in unit tests, which reach them in a few hundred commits,
/// and [`QUIET_MAX`] longer, so a slow test machine still restarts the WAL.)
const CHECKPOINT_PAGES: i32 = if cfg!(test) { 100 } else { 2_000 };
/// A WAL smaller than the threshold is checkpointed after this long without a nudge.
const IDLE_CHECKPOINT: Duration = Duration::from_secs(1);
/// A checkpoint at least this long is logged (debug).
const SLOW_CHECKPOINT: Duration = Duration::from_millis(10);
/// WAL frames (64 MiB; half the WAL's size limit, see `open`) past which the WAL is made to
/// start over.
const RESTART_FRAMES: i32 = if cfg!(test) { 400 } else { 16_384 };
/// Frames left to copy at most when the writer is asked to hold still.
const QUIET_FRAMES: i32 = if cfg!(test) { 100 } else { 1_024 };
/// Catch-up checkpoints at most before giving up on this round.
const CATCH_UP: usize = 3;
/// Longest the writer holds still before the restart begins; longest this thread waits for it
/// to hold still.
const QUIET_MAX: Duration = Duration::from_millis(if cfg!(test) { 1_000 } else { 100 });
/// Longest the restart waits for the readers already in the WAL (SQLite's busy timeout).
const RESTART_WAIT: Duration = Duration::from_millis(20);

/// [`State::quiet`]: nothing asked.
const QUIET_NONE: u8 = 0;
/// This thread asks the writer to hold still.
const QUIET_WANTED: u8 = 1;
/// The writer holds still until [`State::resumed`] or [`QUIET_MAX`].
const QUIET_GRANTED: u8 = 2;
/// The restart has begun: the writer holds still until [`State::resumed`].
const QUIET_RESTARTING: u8 = 3;

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
    /// WAL frames the last checkpoint left copied (SQLite's `nBackfill`): the writer asks for
    /// the next checkpoint once the WAL is [`CHECKPOINT_PAGES`] past it.
    copied: AtomicI32,
    /// WAL frames after the writer's last commit (a checkpoint reports only those it saw when
    /// it started, and the writer appends while it runs).
    frames: AtomicI32,
    /// The hand-shake of a pause of the writer ([`QUIET_NONE`], …).
    quiet: AtomicU8,
    /// Notified when the pause is over.
    resumed: tokio::sync::Notify,
}

impl Checkpointer {
    pub(super) fn start(path: &Path, metrics: Arc<Metrics>) -> Result<Checkpointer> {
        let conn = super::open::rusqlite(path, false)
            .map_err(|e| Error::unavailable("journal checkpointer could not open", e))?;
        let state = Arc::new(State {
            stop: AtomicBool::new(false),
            nudged: AtomicBool::new(false),
            copied: AtomicI32::new(0),
            frames: AtomicI32::new(0),
            quiet: AtomicU8::new(QUIET_NONE),
            resumed: tokio::sync::Notify::new(),
        });
        let s = state.clone();
        let thread = std::thread::Builder::new()
            .name("hookline-checkpoint".into())
            .spawn(move || run(&conn, &s, &metrics))
            .map_err(|e| Error::unavailable("journal checkpointer could not start", e))?;
        Ok(Checkpointer {
            state,
            thread: Some(thread),
        })
    }

    /// Called by the writer after each commit, on the thread that committed.
    pub(super) fn committed(&self) {
        let pages = WAL_PAGES.with(|p| p.replace(0));
        if pages > 0 {
            self.state.frames.store(pages, Ordering::Release);
        }
        let copied = self.state.copied.load(Ordering::Acquire);
        // A WAL shorter than what was copied was started over since: all of it is new.
        let appended = if pages >= copied {
            pages - copied
        } else {
            pages
        };
        if appended >= CHECKPOINT_PAGES
            && !self.state.nudged.swap(true, Ordering::AcqRel)
            && let Some(t) = &self.thread
        {
            t.thread().unpark();
        }
    }

    /// Whether this thread asks the writer to hold still (see the module docs).
    pub(super) fn wants_quiet(&self) -> bool {
        self.state.quiet.load(Ordering::Acquire) == QUIET_WANTED
    }

    /// Holds still (commits nothing) until this thread has copied what is left of the WAL and
    /// started it over, or [`QUIET_MAX`] passed before the restart began. The writer calls it
    /// between two batches; only its task waits.
    pub(super) async fn hold_still(&self) {
        let resumed = self.state.resumed.notified();
        tokio::pin!(resumed);
        let q = &self.state.quiet;
        if q.compare_exchange(
            QUIET_WANTED,
            QUIET_GRANTED,
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_err()
        {
            return; // withdrawn meanwhile
        }
        if let Some(t) = &self.thread {
            t.thread().unpark();
        }
        if tokio::time::timeout(QUIET_MAX, resumed.as_mut())
            .await
            .is_ok()
        {
            return;
        }
        if q.compare_exchange(
            QUIET_GRANTED,
            QUIET_NONE,
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_ok()
        {
            // The catch-up outlasted the pause: no restart this round (copying beside the
            // writer is safe, PASSIVE).
            tracing::debug!("journal writer resumed before the WAL could start over");
            return;
        }
        // The restart has begun and holds SQLite's write lock: a commit now would wait for it
        // on this worker. It is bounded by `RESTART_WAIT` (the second bound is only against a
        // checkpoint thread that died in it).
        if tokio::time::timeout(Duration::from_secs(5), resumed)
            .await
            .is_err()
        {
            tracing::error!("the journal's WAL restart did not end; the writer goes on");
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

fn run(conn: &Connection, state: &State, metrics: &Metrics) {
    let mut last_checkpoint = Instant::now();
    loop {
        std::thread::park_timeout(IDLE_CHECKPOINT);
        let stopping = state.stop.load(Ordering::Acquire);
        if state.nudged.load(Ordering::Acquire)
            || stopping
            || last_checkpoint.elapsed() >= IDLE_CHECKPOINT
        {
            let started = Instant::now();
            let done = checkpoint(conn, state, "checkpoint");
            let took = started.elapsed();
            // Cleared after the checkpoint: the commits made while it ran nudge it again if
            // they appended enough.
            state.nudged.store(false, Ordering::Release);
            if let Some((_, copied)) = done
                && state.frames.load(Ordering::Acquire) >= RESTART_FRAMES
                && !stopping
                && start_over(conn, state, copied, took)
            {
                metrics.wal_restarted();
            }
            last_checkpoint = Instant::now();
        }
        if stopping {
            return;
        }
    }
}

/// One `PASSIVE` checkpoint: the WAL's frames and how many of them are copied, `None` if it
/// failed.
fn checkpoint(conn: &Connection, state: &State, what: &'static str) -> Option<(i32, i32)> {
    let started = Instant::now();
    let done = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get::<_, i32>(1)?, r.get::<_, i32>(2)?))
    });
    match done {
        Ok((wal_pages, copied)) => {
            crate::crashpoint::hit("checkpoint");
            state.copied.store(copied, Ordering::Release);
            let took = started.elapsed();
            tracing::trace!(
                wal_pages,
                copied,
                took_ms = took.as_secs_f64() * 1e3,
                "{what}"
            );
            if took >= SLOW_CHECKPOINT {
                tracing::debug!(
                    wal_pages,
                    copied,
                    took_ms = took.as_secs_f64() * 1e3,
                    "slow journal {what}"
                );
            }
            Some((wal_pages, copied))
        }
        Err(e) => {
            tracing::warn!(
                error = %e,
                "journal checkpoint failed; the WAL keeps growing until one succeeds"
            );
            None
        }
    }
}

/// Catches up, asks the writer to hold still, copies what is left of the WAL and starts it
/// over, and lets the writer go on (see the module docs). `copied`: frames copied so far.
/// Whether the WAL started over.
fn start_over(conn: &Connection, state: &State, mut copied: i32, mut took: Duration) -> bool {
    let left = |copied: i32| state.frames.load(Ordering::Acquire).saturating_sub(copied);
    for _ in 0..CATCH_UP {
        if left(copied) <= QUIET_FRAMES {
            break;
        }
        let started = Instant::now();
        match checkpoint(conn, state, "catch-up checkpoint") {
            Some((_, c)) => copied = c,
            None => return false,
        }
        took = started.elapsed();
    }
    // The writer outpaces the checkpoints, or the disk is slow right now (the last checkpoint
    // took a good part of the longest pause: the rest would likely outlast it, stalling the
    // writer for nothing; measured: 754 ms for a checkpoint of a 1.2 GiB journal): another
    // round, later.
    if left(copied) > QUIET_FRAMES || took > QUIET_MAX / 4 {
        return false;
    }
    let q = &state.quiet;
    let asked = Instant::now();
    q.store(QUIET_WANTED, Ordering::Release);
    while q.load(Ordering::Acquire) != QUIET_GRANTED {
        if asked.elapsed() >= QUIET_MAX || state.stop.load(Ordering::Acquire) {
            // No batch came (an idle writer appends nothing: the next checkpoint completes
            // without a pause), or it is closing. Withdraw, unless it granted meanwhile.
            if q.compare_exchange(
                QUIET_WANTED,
                QUIET_NONE,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
            {
                return false;
            }
            break;
        }
        std::thread::park_timeout(Duration::from_millis(5));
    }
    let held = Instant::now();
    let rest = checkpoint(conn, state, "checkpoint while the writer holds still");
    let copied_rest = held.elapsed();
    let restarted = rest.is_some_and(|(w, c)| w == c)
        && q.compare_exchange(
            QUIET_GRANTED,
            QUIET_RESTARTING,
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_ok()
        && restart(conn);
    // Whatever happened, the writer goes on (if it still waits).
    if q.swap(QUIET_NONE, Ordering::AcqRel) != QUIET_NONE {
        state.resumed.notify_one();
    }
    tracing::debug!(
        waited_ms = (held - asked).as_secs_f64() * 1e3,
        held_ms = held.elapsed().as_secs_f64() * 1e3,
        rest_ms = copied_rest.as_secs_f64() * 1e3,
        rest_frames = rest.map_or(0, |(w, _)| w - copied),
        restarted,
        "journal writer held still for the WAL to start over"
    );
    restarted
}

/// `RESTART` checkpoint of a WAL already copied in full, with nothing being written: waits at
/// most [`RESTART_WAIT`] for the readers in the WAL, then starts it over. Whether it did.
fn restart(conn: &Connection) -> bool {
    let waited = conn.busy_timeout(RESTART_WAIT).and_then(|()| {
        conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| r.get::<_, i32>(0))
    });
    if let Err(e) = conn.busy_timeout(std::time::Duration::from_secs(5)) {
        tracing::warn!(error = %e, "journal checkpointer's busy timeout not restored");
    }
    match waited {
        // The first column is 1 when it could not finish (a reader stayed in the WAL).
        Ok(busy) => busy == 0,
        Err(e) => {
            tracing::debug!(error = %e, "journal WAL restart failed");
            false
        }
    }
}
