//! Test and benchmark fixture: the example envelopes as the guests' expected outputs saw them.
//! Included with `#[path]` by the transform tests and `benches/transform.rs`, so it is written once.

/// The JSON text without insignificant whitespace, keys in file order: what
/// `JSON.stringify(JSON.parse(file))` gives for these ASCII example files (serde_json here does
/// not preserve key order, and to-xml's output depends on it).
pub(crate) fn compact_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in text.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !c.is_whitespace() {
            out.push(c);
        }
    }
    out
}
