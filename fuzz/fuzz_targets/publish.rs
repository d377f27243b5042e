//! `POST /v1/events` up to the journal: content type, nesting depth, JSON syntax,
//! `Idempotency-Key`, the event JSON Schema, tenant scope, serde and `EventInput::validate`.
//!
//! Input: one mode byte, then (when the mode asks for one) an `Idempotency-Key` line, then the
//! body. Mode bits: 0-1 the caller (admin, tenant `acme`, tenant `beta`, admin), 2 an
//! `Idempotency-Key` header, 3 `application/cloudevents+json; charset=utf-8` instead of
//! `application/json`, 4 `text/plain`.
//!
//! Properties: no panic; every refusal is a 4xx with a code; a body the schema accepts never
//! gets a 400 (the API's promise: after the document, only the engine's rules refuse, 422);
//! an accepted event belongs to the caller's tenant, carries the key as its id, and its JSON
//! (what receivers get) is accepted again as the same event.
#![no_main]

use hookline::api::ApiConfig;
use hookline::fuzz_support::{Caller, publish};
use libfuzzer_sys::fuzz_target;

fuzz_target!(init: hookline_fuzz::init(), |data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let caller = match mode & 3 {
        1 => Caller::Tenant("acme".into()),
        2 => Caller::Tenant("beta".into()),
        _ => Caller::Admin,
    };
    let (key, body) = if mode & 4 != 0 {
        let [key, body] = hookline_fuzz::fields::<2>(rest);
        (Some(key), body)
    } else {
        (None, rest)
    };
    let content_type: &[u8] = if mode & 16 != 0 {
        b"text/plain"
    } else if mode & 8 != 0 {
        b"application/cloudevents+json; charset=utf-8"
    } else {
        b"application/json"
    };
    let cfg = ApiConfig::default();
    let Some(outcome) = publish(&caller, content_type, key, body, &cfg) else {
        return;
    };
    match outcome {
        Err(refusal) => {
            assert!(
                (400..500).contains(&refusal.status) && !refusal.code.is_empty(),
                "a refusal must be a 4xx with a code: {refusal:?}"
            );
            if refusal.status == 400 && refusal.code == "invalid" {
                // After the schema, only the engine's rules refuse, with 422: a 400 `invalid`
                // is serde refusing what the published schema allows.
                assert_eq!(
                    refusal.field.as_deref(),
                    Some("Idempotency-Key"),
                    "the schema accepted what serde refuses: {refusal:?}"
                );
            }
        }
        Ok(event) => {
            if let Caller::Tenant(own) = &caller {
                assert_eq!(event.tenant_id.as_str(), own, "a tenant key published for another tenant");
            }
            if let Some(key) = key {
                assert_eq!(event.id.as_str().as_bytes(), key, "the Idempotency-Key is the id");
            }
            let json = serde_json::to_vec(&event).expect("an event serialises");
            let again = publish(&Caller::Admin, b"application/json", None, &json, &cfg)
                .expect("plain headers");
            assert_eq!(again.as_ref(), Ok(&event), "a delivered body is not accepted again as itself");
        }
    }
});
