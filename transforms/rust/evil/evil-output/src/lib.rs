//! `evil-output`: returns a 2 MiB body (twice the 1 MiB output limit). The host must reject
//! the result and fail the delivery instead of sending it.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "transformer",
});

use exports::hookline::transform::handler::{Action, Delivery, Event, Guest};

/// 2 MiB.
const BODY_BYTES: usize = 2 * 1024 * 1024;

struct EvilOutput;

impl Guest for EvilOutput {
    fn transform(event: Event) -> Result<Action, String> {
        Ok(Action::Deliver(Delivery {
            headers: event.headers,
            body: vec![b'A'; BODY_BYTES],
        }))
    }
}

export!(EvilOutput);
