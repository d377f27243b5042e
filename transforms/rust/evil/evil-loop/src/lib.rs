//! `evil-loop`: never returns. The host's CPU deadline (epoch interruption, 100 ms) must
//! interrupt it with a trap; the delivery then fails as "transform exceeded its CPU time".

wit_bindgen::generate!({
    path: "../../../wit",
    world: "transformer",
});

use exports::hookline::transform::handler::{Action, Event, Guest};

struct EvilLoop;

impl Guest for EvilLoop {
    fn transform(event: Event) -> Result<Action, String> {
        let mut n: u64 = 0;
        loop {
            // black_box keeps the optimiser from proving anything about the loop.
            n = std::hint::black_box(n.wrapping_add(event.body.len() as u64 + 1));
        }
    }
}

export!(EvilLoop);
