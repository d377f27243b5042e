//! `to-xml`: sends the event envelope as XML instead of JSON.
//!
//! ```xml
//! <?xml version="1.0" encoding="UTF-8"?>
//! <event><id>evt-1</id><tenantId>acme</tenantId>…<payLoad><node><id>28907</id>
//! <input><item><name>name</name><value>SITI CHURIAH</value></item>…</input>…</node></payLoad>
//! <timestamp>2022-08-12T10:12:16.827Z</timestamp></event>
//! ```
//!
//! * Each JSON key becomes an element, in the envelope's order. A key that is not a safe XML
//!   name (`"1st"`, `"a b"`, `"ns:x"`, `"xmlFoo"`) becomes `<entry key="…">` instead.
//! * Arrays become repeated `<item>` children; `null` becomes an empty element (`<extra/>`);
//!   strings, numbers and booleans become escaped text.
//! * Characters XML 1.0 cannot carry at all (most control characters) become U+FFFD; `\r` is
//!   written as `&#13;` so parsers do not normalise it away.
//! * `content-type` is replaced with `application/xml`; other headers are kept.

use common::{Headers, parse_envelope, set_header};
use serde_json::{Map, Value};

wit_bindgen::generate!({
    path: "../../wit",
    world: "transformer",
});

use exports::hookline::transform::handler::{Action, Delivery, Event, Guest};

struct ToXml;

impl Guest for ToXml {
    fn transform(event: Event) -> Result<Action, String> {
        let envelope = parse_envelope(&event.body)?;
        let mut headers: Headers = event.headers;
        set_header(&mut headers, "content-type", "application/xml");
        Ok(Action::Deliver(Delivery {
            headers,
            body: envelope_to_xml(&envelope).into_bytes(),
        }))
    }
}

export!(ToXml);

/// Renders an envelope as an `<event>` document.
pub fn envelope_to_xml(envelope: &Map<String, Value>) -> String {
    let mut out = String::with_capacity(256);
    out.push_str(r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    out.push_str("<event>");
    for (key, value) in envelope {
        element(&mut out, key, value);
    }
    out.push_str("</event>");
    out
}

/// Writes `<key>value</key>`, or `<entry key="…">value</entry>` when `key` is no safe XML name.
fn element(out: &mut String, key: &str, value: &Value) {
    let tag = if is_safe_name(key) { key } else { "entry" };
    out.push('<');
    out.push_str(tag);
    if tag != key {
        out.push_str(r#" key=""#);
        escape(out, key, true);
        out.push('"');
    }
    if is_empty(value) {
        out.push_str("/>");
        return;
    }
    out.push('>');
    content(out, value);
    out.push_str("</");
    out.push_str(tag);
    out.push('>');
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

fn content(out: &mut String, value: &Value) {
    match value {
        Value::Null => {}
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => escape(out, s, false),
        Value::Array(items) => items.iter().for_each(|i| element(out, "item", i)),
        Value::Object(map) => map.iter().for_each(|(k, v)| element(out, k, v)),
    }
}

/// A conservative XML name: a letter or `_`, then letters, digits, `_`, `-` or `.`; no `:`
/// (namespaces) and no `xml` prefix (reserved).
fn is_safe_name(name: &str) -> bool {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    (first.is_alphabetic() || first == '_')
        && chars.all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !name.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("xml"))
}

/// Escapes text (or an attribute value) for XML 1.0.
fn escape(out: &mut String, s: &str, attribute: bool) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' if attribute => out.push_str("&quot;"),
            '\r' => out.push_str("&#13;"),
            '\n' if attribute => out.push_str("&#10;"),
            '\t' if attribute => out.push_str("&#9;"),
            '\t' | '\n' => out.push(c),
            c if is_xml_char(c) => out.push(c),
            _ => out.push('\u{FFFD}'),
        }
    }
}

/// XML 1.0 `Char`: #x9 | #xA | #xD | [#x20-#xD7FF] | [#xE000-#xFFFD] | [#x10000-#x10FFFF].
fn is_xml_char(c: char) -> bool {
    matches!(c, '\u{9}' | '\u{A}' | '\u{D}' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xml(json: &str) -> String {
        envelope_to_xml(&parse_envelope(json.as_bytes()).unwrap())
    }

    #[test]
    fn renders_envelope_in_order_with_nested_payload_and_items() {
        let got = xml(
            r#"{"id":"evt-1","tenantId":"acme","transactionId":"t1","notificationType":"NODE_EVENT",
                "payLoad":{"node":{"id":28907,"cacheHit":true,"extra":null,
                  "input":[{"name":"name","value":"SITI"},{"name":"idNumber","value":"x"}],"tags":[]}},
                "timestamp":"2022-08-12T10:12:16.827Z"}"#,
        );
        assert_eq!(
            got,
            concat!(
                r#"<?xml version="1.0" encoding="UTF-8"?>"#,
                "<event><id>evt-1</id><tenantId>acme</tenantId><transactionId>t1</transactionId>",
                "<notificationType>NODE_EVENT</notificationType><payLoad><node><id>28907</id>",
                "<cacheHit>true</cacheHit><extra/><input><item><name>name</name><value>SITI</value></item>",
                "<item><name>idNumber</name><value>x</value></item></input><tags/></node></payLoad>",
                "<timestamp>2022-08-12T10:12:16.827Z</timestamp></event>"
            )
        );
    }

    #[test]
    fn escapes_text_and_unsafe_names() {
        let got = xml(
            r#"{"payLoad":{"a":"<b>&\"x\"\r\n\u0001","1st":1,"a b":[[1,2]],"ns:x":"","xmlns":"q","Ümlaut":"ok"}}"#,
        );
        assert_eq!(
            got,
            concat!(
                r#"<?xml version="1.0" encoding="UTF-8"?><event><payLoad>"#,
                "<a>&lt;b&gt;&amp;\"x\"&#13;\n\u{FFFD}</a>",
                r#"<entry key="1st">1</entry>"#,
                r#"<entry key="a b"><item><item>1</item><item>2</item></item></entry>"#,
                r#"<entry key="ns:x"></entry>"#,
                r#"<entry key="xmlns">q</entry>"#,
                "<Ümlaut>ok</Ümlaut>",
                "</payLoad></event>"
            )
        );
    }

    #[test]
    fn attribute_values_are_escaped() {
        let got = xml("{\"<\\\"&\\n\":1}");
        assert!(
            got.contains(r#"<entry key="&lt;&quot;&amp;&#10;">1</entry>"#),
            "{got}"
        );
    }
}
