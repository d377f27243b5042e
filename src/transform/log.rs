//! A guest's stdout and stderr, captured into one bounded in-memory log.
//!
//! Invariants kept here:
//! - at most `capacity` bytes are kept; everything written beyond is counted and discarded;
//! - writes never fail and never block: a guest that prints too much loses log lines, not its
//!   call. (wasmtime-wasi's `MemoryOutputPipe` traps the guest when it is full, which would turn
//!   chatty logging into a crashed delivery.)

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// What a guest printed during one call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestLog {
    /// stdout and stderr interleaved as written, lossily decoded as UTF-8.
    pub text: String,
    /// Bytes written beyond the log's capacity and discarded.
    pub discarded_bytes: u64,
}

#[derive(Debug, Default)]
struct Buffer {
    kept: Vec<u8>,
    discarded: u64,
}

/// The shared sink given to the guest as both stdout and stderr.
#[derive(Debug, Clone)]
pub(crate) struct LogPipe {
    capacity: usize,
    buffer: Arc<Mutex<Buffer>>,
}

impl LogPipe {
    pub(crate) fn new(capacity: usize) -> Self {
        LogPipe {
            capacity,
            buffer: Arc::default(),
        }
    }

    fn append(&self, bytes: &[u8]) {
        // A poisoned lock only means another writer panicked mid-append; the bytes are still
        // a valid (if partial) log.
        let mut b = self.buffer.lock().unwrap_or_else(PoisonError::into_inner);
        let room = self.capacity.saturating_sub(b.kept.len());
        let keep = room.min(bytes.len());
        b.kept.extend_from_slice(&bytes[..keep]);
        b.discarded += (bytes.len() - keep) as u64;
    }

    /// The log so far.
    pub(crate) fn snapshot(&self) -> GuestLog {
        let b = self.buffer.lock().unwrap_or_else(PoisonError::into_inner);
        GuestLog {
            text: String::from_utf8_lossy(&b.kept).into_owned(),
            discarded_bytes: b.discarded,
        }
    }
}

impl IsTerminal for LogPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogPipe {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for LogPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.append(buf);
        // Report everything as written, even what was discarded, so the guest never sees an
        // error or a short write it might retry forever.
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_first_bytes_and_counts_the_rest() {
        let pipe = LogPipe::new(8);
        pipe.append(b"hello ");
        pipe.append(b"world!");
        let log = pipe.snapshot();
        assert_eq!(log.text, "hello wo");
        assert_eq!(log.discarded_bytes, 4);
    }
}
