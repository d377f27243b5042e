//! The sandbox's limits ([`TransformLimits`]) and the per-call resource limiter that enforces the
//! memory limit and remembers that it did.
//!
//! Invariants kept here:
//! - a store's linear memories never grow past [`TransformLimits::memory_bytes`] in total per
//!   memory, and its tables never past [`TABLE_ELEMENTS`]; a refused growth is recorded in
//!   [`CallLimiter::memory_refused`], so that the trap which usually follows (the guest's
//!   allocator aborts) is reported as [`TransformError::MemoryLimit`](super::TransformError),
//!   not as an anonymous crash;
//! - growth is refused (`memory.grow` returns -1), never trapped on by the host: a guest that
//!   copes with a refused allocation may go on.

use std::time::Duration;

use wasmtime::ResourceLimiter;

/// Elements per table. Python (componentize-py) has a ~5,700-entry function table; 100k leaves
/// headroom for larger interpreters and is what the pool reserves per table slot.
pub(crate) const TABLE_ELEMENTS: usize = 100_000;

/// The per-call and per-module limits of the transform sandbox.
///
/// The defaults let Python (componentize-py) and JavaScript (StarlingMonkey, QuickJS) guests run:
/// both need about 16 MiB of linear memory and 18 MB modules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransformLimits {
    /// Largest module accepted by `compile`, in bytes.
    pub module_bytes: usize,
    /// Largest linear memory of one instance, in bytes (also the pool's slot size).
    pub memory_bytes: usize,
    /// Wall-clock budget of one call (instantiation included), enforced by epoch interruption
    /// and by a `tokio` timeout as a backstop for time spent in host calls.
    pub cpu: Duration,
    /// Largest output of one call: body plus every header name and value, in bytes.
    pub output_bytes: usize,
    /// Most headers a call may return.
    pub headers: usize,
    /// Largest WebAssembly stack of one call, in bytes.
    pub wasm_stack_bytes: usize,
    /// Bytes of guest stdout and stderr kept for the attempt log; the rest is discarded.
    pub log_bytes: usize,
    /// Longest drop reason or error message kept from a guest, in bytes (truncated beyond).
    pub message_bytes: usize,
    /// Calls that may run at once. Sizes the instance pool; further calls wait for a slot (the
    /// wait does not count against [`cpu`](Self::cpu)).
    pub max_concurrent_calls: u32,
}

impl Default for TransformLimits {
    fn default() -> Self {
        TransformLimits {
            module_bytes: 32 << 20,
            memory_bytes: 64 << 20,
            cpu: Duration::from_millis(100),
            output_bytes: 1 << 20,
            headers: 64,
            wasm_stack_bytes: 512 << 10,
            log_bytes: 16 << 10,
            message_bytes: 1 << 10,
            max_concurrent_calls: 32,
        }
    }
}

/// The `ResourceLimiter` of one call's store.
#[derive(Debug)]
pub(crate) struct CallLimiter {
    memory_bytes: usize,
    /// Set when a memory growth was refused because of the limit.
    pub(crate) memory_refused: bool,
}

impl CallLimiter {
    pub(crate) fn new(memory_bytes: usize) -> Self {
        CallLimiter {
            memory_bytes,
            memory_refused: false,
        }
    }
}

impl ResourceLimiter for CallLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // `maximum` is the memory's own declared maximum or the pool's slot size; either refusal
        // is the memory limit from the tenant's point of view.
        if desired > self.memory_bytes || maximum.is_some_and(|m| desired > m) {
            self.memory_refused = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        // The pool refused the growth (slot size) or the OS had no memory: still a refusal.
        self.memory_refused = true;
        Ok(())
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= TABLE_ELEMENTS && maximum.is_none_or(|m| desired <= m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_growth_past_the_limit_and_remembers() {
        let mut l = CallLimiter::new(64 << 20);
        assert!(l.memory_growing(0, 64 << 20, None).expect("no error"));
        assert!(!l.memory_refused);
        assert!(
            !l.memory_growing(64 << 20, (64 << 20) + 65536, None)
                .expect("no error")
        );
        assert!(l.memory_refused);
    }

    #[test]
    fn tables_are_capped() {
        let mut l = CallLimiter::new(1 << 20);
        assert!(l.table_growing(0, TABLE_ELEMENTS, None).expect("no error"));
        assert!(
            !l.table_growing(0, TABLE_ELEMENTS + 1, None)
                .expect("no error")
        );
        assert!(!l.table_growing(0, 10, Some(5)).expect("no error"));
    }
}
