//! Opening the journal's connections with the settings they all share, and checking them.
//!
//! Three kinds of connection reach the file: sqlx's (migrations, then the pool of read-only
//! readers the API uses), the writer's rusqlite connection (driven inline, see `writer`), and
//! rusqlite read-only connections (the checkpoint thread's, and the inline queue readers). All
//! have a 5 s busy timeout and `mmap_size=0`; the migrating one runs WAL with the durability's
//! `synchronous`, which [`check_pragmas`] verifies, and [`writer`] checks WAL again, because a
//! file on a filesystem without WAL support would silently lose the durability promise. The
//! writer's own connection runs `synchronous=NORMAL`: its fsyncs are the sync thread's.

use std::path::Path;
use std::time::Duration;

use rusqlite::config::DbConfig;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};

use super::checkpoint;
use crate::error::{Error, Result};
use crate::store::Durability;

/// The WAL's size limit (bytes): a WAL that started over is cut back to it. Twice the size at
/// which the checkpoint thread makes it start over (`checkpoint::RESTART_FRAMES`, 64 MiB), so
/// under a steady load the WAL cycles inside the file it already has: cutting it back to 64 MiB
/// at every restart made that commit wait for the file system (`ftruncate` of a WAL of a few
/// hundred MiB: 100–245 ms on the test VM) and the next cycle extend the file again.
const WAL_SIZE_LIMIT: &str = "134217728";

/// How a failed sqlx call is reported.
pub(super) fn sql_err(context: &'static str) -> impl Fn(sqlx::Error) -> Error {
    move |e| Error::unavailable(format!("journal {context} failed"), e)
}

/// sqlx's options: the base for readers, and the migrating connection's (`migrating`).
pub(super) fn sqlx_options(
    path: &Path,
    durability: Durability,
    migrating: bool,
) -> SqliteConnectOptions {
    let base = SqliteConnectOptions::new()
        .filename(path)
        .busy_timeout(Duration::from_secs(5))
        .foreign_keys(true)
        // Keep I/O errors as errors (no SIGBUS on a full disk with mmap).
        .pragma("mmap_size", "0");
    if !migrating {
        return base.read_only(true);
    }
    let sync = match durability {
        Durability::Fsync => SqliteSynchronous::Full,
        Durability::Os => SqliteSynchronous::Normal,
    };
    base.create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(sync)
        .pragma("journal_size_limit", WAL_SIZE_LIMIT)
}

/// Refuses a connection that did not get WAL or the durability's `synchronous`.
pub(super) async fn check_pragmas(
    conn: &mut SqliteConnection,
    durability: Durability,
) -> Result<()> {
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut *conn)
        .await
        .map_err(sql_err("pragma"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::Unavailable {
            message: format!(
                "journal_mode is {mode}, expected wal (is the file on a network filesystem?)"
            ),
            source: None,
        });
    }
    let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(&mut *conn)
        .await
        .map_err(sql_err("pragma"))?;
    let want = match durability {
        Durability::Fsync => 2,
        Durability::Os => 1,
    };
    if sync != want {
        return Err(Error::Unavailable {
            message: format!("synchronous is {sync}, expected {want}"),
            source: None,
        });
    }
    Ok(())
}

/// A rusqlite connection to the journal with the settings every connection shares (the sqlx
/// ones get the same from [`sqlx_options`]).
pub(super) fn rusqlite(path: &Path, read_only: bool) -> rusqlite::Result<rusqlite::Connection> {
    use rusqlite::OpenFlags;
    let mode = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
    };
    let conn = rusqlite::Connection::open_with_flags(path, mode | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    // Keep I/O errors as errors (no SIGBUS on a full disk with mmap).
    conn.pragma_update(None, "mmap_size", 0)?;
    // Plans that never depend on bound values. Without this SQLite marks a statement to be
    // re-planned whenever a parameter it looked at while planning (a `LIMIT ?`, a value
    // checked against a partial index's WHERE) is bound to another value: the cached queue
    // read was parsed and planned again on nearly every call, 17 % of the CPU of 100 busy
    // subscriptions. Our statements name their partial indexes' conditions literally.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    Ok(conn)
}

/// The writer's connection: the settings the journal was opened and checked with, except
/// `synchronous` (see the module docs).
pub(super) fn writer(path: &Path) -> Result<rusqlite::Connection> {
    let sql = |e: rusqlite::Error| Error::unavailable("journal open failed", e);
    let conn = rusqlite(path, false).map_err(sql)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(sql)?;
    conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)
        .map_err(sql)?;
    // Its commits never wait for the disk, whatever the durability: under `Fsync` the sync
    // thread fsyncs the WAL before a promise is answered (see `durable`).
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(sql)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .map_err(sql)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::Unavailable {
            message: format!("journal_mode is {mode}, expected wal"),
            source: None,
        });
    }
    // Room for every statement the writer runs, so none is prepared twice.
    conn.set_prepared_statement_cache_capacity(64);
    checkpoint::prepare_writer(&conn).map_err(sql)?;
    Ok(conn)
}
