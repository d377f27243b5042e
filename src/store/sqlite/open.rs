//! Opening the journal's connections with the settings they all share, and checking them.
//!
//! Three kinds of connection reach the file: sqlx's (migrations, then the pool of read-only
//! readers the API uses), the writer's rusqlite connection (driven inline, see `writer`), and
//! rusqlite read-only connections (the checkpoint thread's, and the inline queue readers). All
//! have a 5 s busy timeout and `mmap_size=0`; the writer's and the migrating one run WAL with
//! the durability's `synchronous`, which [`check_pragmas`] and [`writer`] verify, because a
//! file on a filesystem without WAL support would silently lose the durability promise.

use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};

use super::checkpoint;
use crate::error::{Error, Result};
use crate::store::Durability;

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
        .pragma("journal_size_limit", "67108864")
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
    Ok(conn)
}

/// The writer's connection: the same settings the journal was opened and checked with.
pub(super) fn writer(path: &Path, durability: Durability) -> Result<rusqlite::Connection> {
    let sql = |e: rusqlite::Error| Error::unavailable("journal open failed", e);
    let conn = rusqlite(path, false).map_err(sql)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(sql)?;
    conn.pragma_update(None, "journal_size_limit", 67_108_864)
        .map_err(sql)?;
    let sync = match durability {
        Durability::Fsync => "FULL",
        Durability::Os => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", sync).map_err(sql)?;
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
