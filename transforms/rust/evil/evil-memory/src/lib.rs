//! `evil-memory`: allocates and touches 1 MiB blocks forever. Growing linear memory past the
//! host's limit (64 MiB) fails; the Rust allocator then aborts (an `unreachable` trap), or the
//! host traps the `memory.grow` itself when it is configured to.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "transformer",
});

use exports::hookline::transform::handler::{Action, Event, Guest};

struct EvilMemory;

impl Guest for EvilMemory {
    fn transform(_event: Event) -> Result<Action, String> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            // vec![1; n] writes every byte, so the pages are really committed.
            hoard.push(std::hint::black_box(vec![1u8; 1 << 20]));
        }
    }
}

export!(EvilMemory);
