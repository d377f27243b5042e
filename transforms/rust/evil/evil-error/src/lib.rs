//! `evil-error`: always returns `err`. The delivery must fail (not be retried), with the
//! message recorded.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "transformer",
});

use exports::hookline::transform::handler::{Action, Event, Guest};

/// The exact message, so host tests can assert on it.
pub const MESSAGE: &str = "evil-error: this transform always fails";

struct EvilError;

impl Guest for EvilError {
    fn transform(_event: Event) -> Result<Action, String> {
        Err(MESSAGE.to_string())
    }
}

export!(EvilError);
