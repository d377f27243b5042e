//! `POST /v1/events/batch` up to the journal: content type, the array (depth, syntax, 1 to
//! `batch_max_items` items), then each item through the single publish's steps.
//!
//! Input: one mode byte, then the body. Mode bits: 0-1 the caller (admin, tenant `acme`,
//! tenant `beta`, admin), 3 `application/cloudevents+json` instead of `application/json`.
//!
//! Properties: no panic; a refused batch gets a 4xx with a code; in an accepted batch (every
//! item matched the event schema) an item is refused only with 404 or 422; there is one result
//! per item, in order, and each item is judged exactly as the same envelope sent alone to
//! `POST /v1/events` would be (ids generated for envelopes without one are left out of the
//! comparison).
#![no_main]

use hookline::api::ApiConfig;
use hookline::fuzz_support::{Caller, publish, publish_batch};
use libfuzzer_sys::fuzz_target;

fuzz_target!(init: hookline_fuzz::init(), |data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let caller = match mode & 3 {
        1 => Caller::Tenant("acme".into()),
        2 => Caller::Tenant("beta".into()),
        _ => Caller::Admin,
    };
    let content_type: &[u8] = if mode & 8 != 0 {
        b"application/cloudevents+json"
    } else {
        b"application/json"
    };
    let cfg = ApiConfig::default();
    let Some(outcome) = publish_batch(&caller, content_type, body, &cfg) else {
        return;
    };
    let results = match outcome {
        Err(refusal) => {
            assert!(
                (400..500).contains(&refusal.status) && !refusal.code.is_empty(),
                "a batch refusal must be a 4xx with a code: {refusal:?}"
            );
            return;
        }
        Ok(results) => results,
    };
    let Ok(serde_json::Value::Array(items)) = serde_json::from_slice::<serde_json::Value>(body)
    else {
        panic!("an accepted batch body is a JSON array");
    };
    assert!(!items.is_empty() && items.len() <= cfg.batch_max_items, "{} items", items.len());
    assert_eq!(items.len(), results.len(), "one result per item");
    for (item, result) in items.iter().zip(&results) {
        let alone = serde_json::to_vec(item).expect("a JSON value serialises");
        let single = publish(&caller, content_type, None, &alone, &cfg).expect("plain headers");
        match (result, &single) {
            (Err(refusal), _) => {
                // The batch passed the document as a whole: an item is refused only by its
                // tenant (404) or the engine's rules (422).
                assert!(matches!(refusal.status, 404 | 422), "{refusal:?}");
                assert_eq!(Err(refusal), single.as_ref(), "batch and single publish disagree");
            }
            (Ok(event), Ok(alone)) => {
                let mut alone = alone.clone();
                if item.get("id").is_none_or(serde_json::Value::is_null) {
                    alone.id = event.id.clone();
                }
                assert_eq!(event, &alone, "batch and single publish disagree");
            }
            (Ok(event), Err(refusal)) => {
                panic!("the batch accepted {event:?}, alone it is refused: {refusal:?}")
            }
        }
    }
});
