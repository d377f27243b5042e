//! `evil-trap`: panics. Guests are built with `panic = "abort"`, so after printing the panic
//! message to stderr (the host may capture it) the guest executes `unreachable`: a trap.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "transformer",
});

use exports::hookline::transform::handler::{Action, Event, Guest};

struct EvilTrap;

impl Guest for EvilTrap {
    fn transform(event: Event) -> Result<Action, String> {
        if std::hint::black_box(true) {
            panic!("evil-trap: deliberate panic for event {}", event.id);
        }
        Err("not reached".to_string())
    }
}

export!(EvilTrap);
