//! `mask-pii`: masks personal data inside the envelope's `payLoad`, keeping the headers.
//!
//! A value is personal when it sits
//! * under an object key named like one of [`PII_FIELDS`] (`{"phone": "0812…"}`), or
//! * in the `value` of a `{"name": <field>, "value": …}` pair whose `name` is one of them, the
//!   shape of a workflow node's `input` list (`{"name": "idNumber", "value": "3174…"}`).
//!
//! Names compare ASCII case-insensitively. Strings and numbers are masked with [`mask`]; when the
//! personal value is an object or array, every string and number inside it is masked. Nothing
//! outside `payLoad` changes, and the key order of the JSON is kept.
//!
//! Note that `name` is personal by this rule wherever it appears as a key, so a workflow node's
//! own `"name": "8:Blacklist Check"` is masked too. Masking too much is the safe direction for a
//! PII filter; edit [`PII_FIELDS`] for your own data.

use common::{Headers, parse_envelope, to_json};
use serde_json::Value;

wit_bindgen::generate!({
    path: "../../wit",
    world: "transformer",
});

use exports::hookline::transform::handler::{Action, Delivery, Event, Guest};

/// Field names whose values are personal data.
pub const PII_FIELDS: &[&str] = &["idNumber", "name", "phone", "email", "mobile"];

/// Values this short (in characters) are masked entirely: keeping two of four would reveal half.
const FULLY_MASKED_UP_TO: usize = 4;

struct MaskPii;

impl Guest for MaskPii {
    fn transform(event: Event) -> Result<Action, String> {
        let (body, masked) = mask_body(&event.body)?;
        let mut headers: Headers = event.headers;
        // Not required, but it lets the receiver (and `hookline transform test`) see what happened.
        common::set_header(&mut headers, "x-pii-masked", &masked.to_string());
        Ok(Action::Deliver(Delivery { headers, body }))
    }
}

export!(MaskPii);

/// Masks the envelope's `payLoad`; returns the new body and how many values were masked.
pub fn mask_body(body: &[u8]) -> Result<(Vec<u8>, usize), String> {
    let mut envelope = parse_envelope(body)?;
    let mut count = 0;
    if let Some(payload) = envelope.get_mut("payLoad") {
        mask_tree(payload, &mut count);
    }
    Ok((to_json(&envelope), count))
}

fn is_pii(field: &str) -> bool {
    PII_FIELDS.iter().any(|f| f.eq_ignore_ascii_case(field))
}

/// Walks `v`, masking personal values found under personal keys or in personal `{name, value}` pairs.
fn mask_tree(v: &mut Value, count: &mut usize) {
    match v {
        Value::Array(items) => items.iter_mut().for_each(|i| mask_tree(i, count)),
        Value::Object(map) => {
            // A `{"name": "<field>", "value": …}` pair: its `name` is a label, not personal data.
            let pair_field = match (map.get("name"), map.contains_key("value")) {
                (Some(Value::String(n)), true) => Some(is_pii(n)),
                _ => None,
            };
            for (key, child) in map.iter_mut() {
                match pair_field {
                    Some(_) if key == "name" => {} // the label stays readable
                    Some(true) if key == "value" => mask_all(child, count),
                    _ if is_pii(key) => mask_all(child, count),
                    _ => mask_tree(child, count),
                }
            }
        }
        _ => {}
    }
}

/// Masks every string and number in `v` (booleans and nulls carry no personal data).
fn mask_all(v: &mut Value, count: &mut usize) {
    match v {
        Value::String(s) => {
            *s = mask(s);
            *count += 1;
        }
        Value::Number(n) => {
            *v = Value::String(mask(&n.to_string()));
            *count += 1;
        }
        Value::Array(items) => items.iter_mut().for_each(|i| mask_all(i, count)),
        Value::Object(map) => map.values_mut().for_each(|c| mask_all(c, count)),
        Value::Bool(_) | Value::Null => {}
    }
}

/// Keeps the last two characters and replaces the others with `*`, one per character
/// (`"SITI CHURIAH"` → `"**********AH"`). Values of up to four characters become all `*`.
pub fn mask(s: &str) -> String {
    let n = s.chars().count();
    let keep = if n <= FULLY_MASKED_UP_TO { 0 } else { 2 };
    s.chars()
        .enumerate()
        .map(|(i, c)| if i < n - keep { '*' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn mask_keeps_last_two_characters() {
        assert_eq!(mask("SITI CHURIAH"), "**********AH");
        assert_eq!(mask("xxxxxxxx"), "******xx");
        assert_eq!(mask("Zoë Ångström"), "**********öm");
        assert_eq!(mask("1234"), "****");
        assert_eq!(mask("12345"), "***45");
        assert_eq!(mask(""), "");
    }

    #[test]
    fn masks_pairs_keys_and_nested_values_only_inside_payload() {
        let body = json!({
            "id": "evt-1", "tenantId": "acme", "transactionId": "t1",
            "notificationType": "NODE_EVENT", "name": "outside payLoad stays",
            "payLoad": {
                "node": {
                    "id": 28907,
                    "cacheHit": true,
                    "input": [
                        {"name": "name", "value": "SITI CHURIAH"},
                        {"name": "idNumber", "value": "3174012345678901"},
                        {"name": "city", "value": "Jakarta"},
                        {"name": "Mobile", "value": 6281234567890u64}
                    ],
                    "output": {"data": {"email": "siti@example.com", "phone": {"cc": "62", "no": "81234567"}}}
                }
            },
            "timestamp": "2022-08-12T10:12:16.827Z"
        });
        let (out, count) = mask_body(&serde_json::to_vec(&body).unwrap()).unwrap();
        let out: Value = serde_json::from_slice(&out).unwrap();
        let input = &out["payLoad"]["node"]["input"];
        assert_eq!(input[0], json!({"name": "name", "value": "**********AH"}));
        assert_eq!(
            input[1],
            json!({"name": "idNumber", "value": "**************01"})
        );
        assert_eq!(input[2], json!({"name": "city", "value": "Jakarta"}));
        assert_eq!(
            input[3],
            json!({"name": "Mobile", "value": "***********90"})
        );
        let data = &out["payLoad"]["node"]["output"]["data"];
        assert_eq!(data["email"], "**************om");
        assert_eq!(data["phone"], json!({"cc": "**", "no": "******67"}));
        assert_eq!(out["payLoad"]["node"]["id"], 28907);
        assert_eq!(out["payLoad"]["node"]["cacheHit"], true);
        assert_eq!(out["name"], "outside payLoad stays");
        assert_eq!(count, 6);
    }

    #[test]
    fn keeps_key_order_and_rejects_bad_bodies() {
        let (out, n) =
            mask_body(br#"{"id":"e","payLoad":{"b":1,"email":"ab@cd.ef","a":2},"timestamp":"t"}"#)
                .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"id":"e","payLoad":{"b":1,"email":"******ef","a":2},"timestamp":"t"}"#
        );
        assert_eq!(n, 1);
        assert!(mask_body(b"not json").is_err());
    }
}
