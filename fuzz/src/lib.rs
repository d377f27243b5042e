//! What every hookline fuzz target shares: the allocation cap and the input splitting.
//!
//! libFuzzer's `-malloc_limit_mb` works through the sanitizer runtime's malloc hooks, and the
//! targets are built without a sanitizer (`cargo fuzz -s none`: sanitizers need a nightly
//! compiler). [`CappedAlloc`] gives the flag back its meaning: any single allocation larger
//! than the limit is refused, which Rust turns into an abort ("memory allocation of N bytes
//! failed") that libFuzzer reports as a crash and saves the input of. The limit is read from
//! the same flags as libFuzzer's (`-malloc_limit_mb`, else `-rss_limit_mb`, else 2048 MiB; 0
//! means none), by [`init`], which every target calls before its first input. `-rss_limit_mb`
//! itself needs no sanitizer: libFuzzer polls the process's peak RSS.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Largest single allocation allowed, in bytes; `usize::MAX` until [`init`] runs.
static LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);

/// The system allocator, refusing any single allocation above [`LIMIT`].
#[derive(Debug)]
pub struct CappedAlloc;

#[global_allocator]
static ALLOC: CappedAlloc = CappedAlloc;

fn too_large(size: usize) -> bool {
    size > LIMIT.load(Ordering::Relaxed)
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, or returns
// null, which `GlobalAlloc` allows for any allocation that cannot be satisfied.
unsafe impl GlobalAlloc for CappedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if too_large(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if too_large(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded unchanged; the caller upholds `alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged; `ptr` came from `System` through this allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if too_large(new_size) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded unchanged; the caller upholds `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// The value of libFuzzer flag `-name=N` on the command line, if given.
fn flag(name: &str) -> Option<usize> {
    let prefix = format!("-{name}=");
    std::env::args()
        .filter_map(|a| a.strip_prefix(&prefix).and_then(|v| v.parse().ok()))
        .next_back()
}

/// Sets the allocation cap from libFuzzer's flags, as libFuzzer would with a sanitizer.
pub fn init() {
    let mb = flag("malloc_limit_mb")
        .filter(|mb| *mb > 0)
        .or_else(|| flag("rss_limit_mb"))
        .unwrap_or(2048);
    let bytes = if mb == 0 {
        usize::MAX
    } else {
        mb.saturating_mul(1 << 20)
    };
    LIMIT.store(bytes, Ordering::Relaxed);
}

/// Splits `data` into `N` fields at the first `N - 1` newlines; the last field keeps the rest
/// (newlines included), missing fields are empty. Seeds stay readable text files.
pub fn fields<const N: usize>(data: &[u8]) -> [&[u8]; N] {
    let mut out = [&data[..0]; N];
    let mut rest = data;
    for slot in out.iter_mut().take(N - 1) {
        match rest.iter().position(|b| *b == b'\n') {
            Some(i) => {
                *slot = &rest[..i];
                rest = &rest[i + 1..];
            }
            None => {
                *slot = rest;
                rest = &rest[rest.len()..];
            }
        }
    }
    if let Some(last) = out.last_mut() {
        *last = rest;
    }
    out
}

/// The text of a field, with invalid UTF-8 replaced (the targets feed `&str` APIs).
pub fn text(field: &[u8]) -> String {
    String::from_utf8_lossy(field).into_owned()
}
