//! Whether the engine can still keep its promises: can the journal write, and did a task the
//! engine cannot run without die.
//!
//! One [`Health`] per engine, owned by its `Metrics` (it exposes the
//! `hookline_journal_writable` gauge and the `hookline_journal_failed_commits_total{reason}`
//! counter). The store reports every commit's fate here; `GET /readyz` and the metrics read it.
//!
//! - **Unwritable journal** (disk full, I/O error, read-only file): publishes keep failing with
//!   `Unavailable` (503 and `Retry-After`), reads go on, `/readyz` answers 503 with the reason.
//!   The first successful commit (a caller's, or the writer's probe, see the SQLite writer)
//!   clears it: nothing needs a restart. Log lines about it are rate-limited, so a full disk is
//!   not filled further by its own complaints.
//! - **Fatal**: a critical task (the journal writer) stopped without being asked to. The engine
//!   cannot recover from that by itself; [`Health::fatal`] records why and wakes whoever waits in
//!   [`Health::wait_fatal`] (the `serve` binary, which then exits non-zero so that its
//!   supervisor restarts it, instead of answering `503 shutting_down` forever).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

/// Why a journal commit failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteFailure {
    /// No space left on the device (SQLite's `SQLITE_FULL`, `ENOSPC`).
    DiskFull,
    /// The file system failed a read or a write (`SQLITE_IOERR`).
    Io,
    /// The file or its directory cannot be written (`SQLITE_READONLY`, `SQLITE_CANTOPEN`).
    ReadOnly,
    /// Any other failure of the database itself (corruption, a locking problem).
    Other,
}

impl WriteFailure {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            WriteFailure::DiskFull => "disk_full",
            WriteFailure::Io => "io_error",
            WriteFailure::ReadOnly => "read_only",
            WriteFailure::Other => "other",
        }
    }

    fn code(self) -> u8 {
        match self {
            WriteFailure::DiskFull => 1,
            WriteFailure::Io => 2,
            WriteFailure::ReadOnly => 3,
            WriteFailure::Other => 4,
        }
    }

    fn from_code(c: u8) -> Option<WriteFailure> {
        match c {
            1 => Some(WriteFailure::DiskFull),
            2 => Some(WriteFailure::Io),
            3 => Some(WriteFailure::ReadOnly),
            4 => Some(WriteFailure::Other),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// At most one log line about a failing journal per this long.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// See the module docs.
#[derive(Debug)]
pub(crate) struct Health {
    /// 0 while the journal writes, else the [`WriteFailure`] code of the last failed commit.
    unwritable: AtomicU8,
    writable_gauge: Gauge,
    failed_commits: Family<ReasonLabel, Counter>,
    /// When the last line about a failing journal was logged, and failures since.
    log: Mutex<(Option<Instant>, u64)>,
    fatal: watch::Sender<Option<String>>,
}

impl Health {
    pub(crate) fn new(registry: &mut Registry) -> Health {
        let h = Health {
            unwritable: AtomicU8::new(0),
            writable_gauge: Gauge::default(),
            failed_commits: Family::default(),
            log: Mutex::new((None, 0)),
            fatal: watch::Sender::new(None),
        };
        h.writable_gauge.set(1);
        registry.register(
            "journal_writable",
            "1 while the journal's last commit succeeded, 0 while it cannot write",
            h.writable_gauge.clone(),
        );
        registry.register(
            "journal_failed_commits",
            "Journal commits that failed, by reason: disk_full, io_error, read_only, other",
            h.failed_commits.clone(),
        );
        h
    }

    /// `None` while the journal writes; else why its last commit failed.
    pub(crate) fn unwritable(&self) -> Option<WriteFailure> {
        WriteFailure::from_code(self.unwritable.load(Ordering::Acquire))
    }

    /// A commit failed for `why`; `error` is logged (rate-limited).
    pub(crate) fn write_failed(&self, why: WriteFailure, error: &dyn std::fmt::Display) {
        self.failed_commits
            .get_or_create(&ReasonLabel {
                reason: why.as_str(),
            })
            .inc();
        if why == WriteFailure::Other {
            // Not the disk's fault (the writer logs it): readiness is about the disk.
            return;
        }
        self.unwritable.store(why.code(), Ordering::Release);
        self.writable_gauge.set(0);
        let Ok(mut log) = self.log.lock() else { return };
        log.1 += 1;
        if log.0.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
            tracing::error!(
                reason = why.as_str(),
                failed_commits = log.1,
                error = %error,
                "the journal cannot write: publishes answer 503 until it can; it is retried on its own"
            );
            *log = (Some(Instant::now()), 0);
        }
    }

    /// A commit succeeded.
    pub(crate) fn write_ok(&self) {
        if self.unwritable.swap(0, Ordering::AcqRel) != 0 {
            self.writable_gauge.set(1);
            if let Ok(mut log) = self.log.lock() {
                *log = (None, 0);
            }
            tracing::warn!("the journal writes again");
        }
    }

    /// A critical task stopped: the engine cannot go on (see the module docs).
    pub(crate) fn fatal(&self, why: impl Into<String>) {
        let why = why.into();
        tracing::error!(reason = %why, "hookline cannot continue");
        self.fatal.send_if_modified(|f| {
            if f.is_none() {
                *f = Some(why);
                true
            } else {
                false
            }
        });
    }

    /// Waits until [`fatal`](Health::fatal) is called, and says why.
    pub(crate) async fn wait_fatal(&self) -> String {
        let mut rx = self.fatal.subscribe();
        // The sender lives as long as `self`, which is borrowed here, so this cannot fail.
        let why = rx
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|v| v.clone());
        why.unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_clears_on_the_next_success_and_counts_by_reason() {
        let mut reg = Registry::default();
        let h = Health::new(&mut reg);
        assert_eq!(h.unwritable(), None);
        h.write_failed(WriteFailure::DiskFull, &"database or disk is full");
        h.write_failed(WriteFailure::DiskFull, &"database or disk is full");
        assert_eq!(h.unwritable(), Some(WriteFailure::DiskFull));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &reg).expect("encode");
        assert!(text.contains("journal_writable 0"), "{text}");
        assert!(
            text.contains("journal_failed_commits_total{reason=\"disk_full\"} 2"),
            "{text}"
        );
        h.write_ok();
        assert_eq!(h.unwritable(), None);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &reg).expect("encode");
        assert!(text.contains("journal_writable 1"), "{text}");
    }

    #[tokio::test]
    async fn fatal_wakes_the_waiter_once_with_the_first_reason() {
        let h = std::sync::Arc::new(Health::new(&mut Registry::default()));
        let waiter = tokio::spawn({
            let h = h.clone();
            async move { h.wait_fatal().await }
        });
        h.fatal("the journal writer stopped");
        h.fatal("something later");
        assert_eq!(waiter.await.expect("join"), "the journal writer stopped");
    }
}
