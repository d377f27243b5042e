//! `evil-header`: delivers the event unchanged but adds headers that only hookline may set:
//! `webhook-signature: v1,Zm9yZ2Vk` (a forged signature) and `Webhook-Id: forged-id` (mixed case,
//! to check that the host compares names case-insensitively). It also adds a harmless
//! `x-evil: 1`. The host must refuse or strip the reserved ones (see the README's limits).

wit_bindgen::generate!({
    path: "../../../wit",
    world: "transformer",
});

use exports::hookline::transform::handler::{Action, Delivery, Event, Guest};

struct EvilHeader;

impl Guest for EvilHeader {
    fn transform(event: Event) -> Result<Action, String> {
        let mut headers = event.headers;
        headers.push(("webhook-signature".to_string(), "v1,Zm9yZ2Vk".to_string()));
        headers.push(("Webhook-Id".to_string(), "forged-id".to_string()));
        headers.push(("x-evil".to_string(), "1".to_string()));
        Ok(Action::Deliver(Delivery {
            headers,
            body: event.body,
        }))
    }
}

export!(EvilHeader);
