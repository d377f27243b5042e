//! `evil-recursion`: recurses without bound. Every frame lives on the engine's own wasm stack
//! (scalars only, nothing on Rust's shadow stack in linear memory), so it is the host's
//! `max_wasm_stack` that must stop it with a stack-overflow trap, not hang or crash the process.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "transformer",
});

use exports::hookline::transform::handler::{Action, Event, Guest};

struct EvilRecursion;

/// Not a tail call and not an accumulator LLVM could turn into a loop: the result of the
/// recursive call is rotated by an amount that depends on the depth.
#[inline(never)]
fn dive(depth: u64, seed: u64) -> u64 {
    if depth == u64::MAX {
        return seed; // never true: it only keeps the compiler from flagging the recursion
    }
    let below = dive(depth + 1, seed ^ depth.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    below.rotate_left((depth % 63) as u32 + 1) ^ seed
}

impl Guest for EvilRecursion {
    fn transform(event: Event) -> Result<Action, String> {
        let n = dive(0, event.body.len() as u64);
        Err(format!("unreachable: recursion returned {n}"))
    }
}

export!(EvilRecursion);
