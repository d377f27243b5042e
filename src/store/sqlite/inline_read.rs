//! Read-only SQLite connections used inline, for the reads on the delivery path.
//!
//! sqlx runs each statement on a thread of its own connection and hands rows back through a
//! channel; for a short read that a busy subscription does every few deliveries, those hand-offs
//! cost more than the read. These connections are driven on the calling task instead, like the
//! writer's: the read holds the tokio worker for the time SQLite takes to step a few indexed
//! rows, and never waits for the disk (reads in WAL mode take no lock a writer holds).

use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use crate::error::{Error, Result};

pub(super) struct InlineReaders {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    /// Idle connections kept; a burst beyond it opens more and closes them after.
    keep: usize,
}

impl InlineReaders {
    pub(super) fn new(path: &Path, keep: usize) -> InlineReaders {
        InlineReaders {
            path: path.to_owned(),
            idle: Mutex::new(Vec::new()),
            keep: keep.max(1),
        }
    }

    /// Runs `read` on an idle connection (opening one if none is idle).
    pub(super) fn with<R>(
        &self,
        read: impl FnOnce(&Connection) -> rusqlite::Result<R>,
    ) -> Result<R> {
        let fail = |e: rusqlite::Error| Error::unavailable("journal read failed", e);
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let conn = match idle {
            Some(c) => c,
            None => super::open::rusqlite(&self.path, true).map_err(fail)?,
        };
        let out = read(&conn).map_err(fail)?;
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < self.keep {
            idle.push(conn);
        }
        Ok(out)
    }
}
