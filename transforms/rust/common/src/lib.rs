//! Helpers shared by the example guests. Plain Rust with no WIT bindings, so the same code is unit
//! tested natively (`cargo test` in `transforms/rust`) and compiled into each component.
//!
//! Headers in the WIT contract are `list<tuple<string, string>>`; names compare ASCII
//! case-insensitively, as in HTTP.

use serde_json::{Map, Value};

/// A header list as the WIT contract passes it.
pub type Headers = Vec<(String, String)>;

/// The first value of header `name`, compared case-insensitively.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Removes every header called `name` (case-insensitively) and appends `name: value`.
pub fn set_header(headers: &mut Headers, name: &str, value: &str) {
    headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    headers.push((name.to_string(), value.to_string()));
}

/// Parses the body hookline passes in: the event envelope as UTF-8 JSON, an object.
/// Key order is kept (serde_json's `preserve_order`), so re-serialising changes only what a
/// transform edits.
pub fn parse_envelope(body: &[u8]) -> Result<Map<String, Value>, String> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("body is not a JSON object".to_string()),
        Err(e) => Err(format!("body is not valid JSON: {e}")),
    }
}

/// Serialises an envelope back to compact JSON bytes.
pub fn to_json(envelope: &Map<String, Value>) -> Vec<u8> {
    // Serialising a `Map` of `Value`s cannot fail: keys are strings and there is no I/O.
    serde_json::to_vec(envelope).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_header_replaces_case_insensitively() {
        let mut h: Headers = vec![
            ("Content-Type".into(), "application/json".into()),
            ("x-a".into(), "1".into()),
            ("content-type".into(), "text/plain".into()),
        ];
        set_header(&mut h, "content-type", "application/xml");
        assert_eq!(
            h,
            vec![
                ("x-a".to_string(), "1".to_string()),
                ("content-type".to_string(), "application/xml".to_string())
            ]
        );
        assert_eq!(header(&h, "CONTENT-TYPE"), Some("application/xml"));
        assert_eq!(header(&h, "missing"), None);
    }

    #[test]
    fn parse_envelope_keeps_key_order_and_rejects_non_objects() {
        let m = parse_envelope(br#"{"z":1,"a":2,"m":3}"#).unwrap();
        assert_eq!(
            String::from_utf8(to_json(&m)).unwrap(),
            r#"{"z":1,"a":2,"m":3}"#
        );
        assert!(
            parse_envelope(b"[1]")
                .unwrap_err()
                .contains("not a JSON object")
        );
        assert!(parse_envelope(b"{").unwrap_err().contains("not valid JSON"));
    }
}
