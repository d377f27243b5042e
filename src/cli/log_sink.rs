//! The server's log sink: stderr, written so that a log that cannot be written never stops
//! the engine.
//!
//! tracing-subscriber reports a failed write with `eprintln!`, and `eprintln!` panics when
//! stderr itself cannot be written, which is exactly the case it reports: with the log on a
//! full disk (or a closed pipe) every log line became a panic in whatever task logged it, the
//! journal writer's included, which left a server answering `shutting_down` until restarted.
//! This sink never returns an error: a line that cannot be written is dropped and counted, and
//! the next line that can be written is preceded by a note saying how many were lost.

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing_subscriber::fmt::MakeWriter;

/// Makes the writers of the server's log (see the module docs).
#[derive(Debug, Clone, Default)]
pub(crate) struct StderrSink {
    dropped: Arc<AtomicU64>,
}

impl StderrSink {
    /// Lines dropped since the last one that was written.
    #[cfg(test)]
    fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl<'a> MakeWriter<'a> for StderrSink {
    type Writer = SinkWriter<io::Stderr>;

    fn make_writer(&'a self) -> Self::Writer {
        SinkWriter {
            out: io::stderr(),
            dropped: self.dropped.clone(),
        }
    }
}

/// One log line's writer. tracing-subscriber formats a whole event and hands it over in one
/// `write_all`, so a line is written or dropped as a whole.
#[derive(Debug)]
pub(crate) struct SinkWriter<W> {
    out: W,
    dropped: Arc<AtomicU64>,
}

impl<W: Write> Write for SinkWriter<W> {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let lost = self.dropped.load(Ordering::Relaxed);
        if lost > 0 {
            let note =
                format!("hookline: {lost} log lines were lost: the log could not be written\n");
            if self.out.write_all(note.as_bytes()).is_ok() {
                self.dropped.fetch_sub(lost, Ordering::Relaxed);
            }
        }
        if self.out.write_all(line).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        // Always "written": an error here would be reported by tracing-subscriber with
        // `eprintln!`, the very panic this sink exists to avoid.
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = self.out.flush();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A destination that fails while `full` is set, like a full disk.
    struct Disk {
        full: bool,
        written: Vec<u8>,
    }

    impl Write for &mut Disk {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self.full {
                return Err(io::Error::from_raw_os_error(28)); // ENOSPC
            }
            self.written.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_that_cannot_be_written_are_counted_then_reported() {
        let sink = StderrSink::default();
        let mut disk = Disk {
            full: true,
            written: Vec::new(),
        };
        for _ in 0..3 {
            let mut w = SinkWriter {
                out: &mut disk,
                dropped: sink.dropped.clone(),
            };
            assert_eq!(w.write(b"a line\n").ok(), Some(7), "never an error");
        }
        assert_eq!(sink.dropped(), 3);
        disk.full = false;
        let mut w = SinkWriter {
            out: &mut disk,
            dropped: sink.dropped.clone(),
        };
        w.write_all(b"back\n").expect("written");
        assert_eq!(sink.dropped(), 0);
        assert_eq!(
            String::from_utf8_lossy(&disk.written),
            "hookline: 3 log lines were lost: the log could not be written\nback\n"
        );
    }
}
