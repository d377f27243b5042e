//! Ordering keys: a subscription's `ordering: {key, lanes}` and the key value of one event.
//!
//! The key is a JSON pointer (RFC 6901) into the envelope receivers get. Its value for an event
//! is computed once, at fan-out, and journaled with the delivery (see docs/ordering.md): the
//! value's compact JSON text, or [`NO_KEY`] when the event has no value there. Values longer
//! than [`MAX_KEY_BYTES`] are cut, which can only merge two keys into one sequence (stricter
//! order, never weaker). Plain data and validation, no I/O.

use serde::{Deserialize, Serialize};

use crate::domain::{DeliveryId, Timestamp};
use crate::error::{Error, Result};

/// The key of the shared sequence of events without a value at the pointer. No JSON text is
/// empty, so it never equals a value's key.
pub(crate) const NO_KEY: &str = "";

/// The longest key journaled, in bytes.
pub(crate) const MAX_KEY_BYTES: usize = 256;

/// Strict order per key value, with up to `lanes` attempts in flight (one per key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Ordering {
    /// A JSON pointer into the envelope, e.g. `/payLoad/loanId`.
    pub key: String,
    /// The most attempts in flight at once, 1 to 256 (default 1).
    #[serde(default = "one_lane")]
    pub lanes: u16,
}

fn one_lane() -> u16 {
    1
}

impl Ordering {
    pub const MAX_LANES: u16 = 256;
    pub const MAX_POINTER_CHARS: usize = 256;

    pub(crate) fn validate(&self) -> Result<()> {
        validate_pointer(&self.key)?;
        if !(1..=Self::MAX_LANES).contains(&self.lanes) {
            return Err(Error::invalid(
                "ordering.lanes",
                format!("must be between 1 and {}", Self::MAX_LANES),
            ));
        }
        Ok(())
    }

    /// The key of the event whose envelope is `envelope`.
    pub(crate) fn key_of(&self, envelope: &serde_json::Value) -> String {
        key_at(envelope, &self.key)
    }
}

fn validate_pointer(p: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::invalid("ordering.key", why));
    if !p.starts_with('/') {
        return bad("must be a JSON pointer starting with '/', e.g. /payLoad/loanId");
    }
    if p.chars().count() > Ordering::MAX_POINTER_CHARS {
        return bad("must be at most 256 characters");
    }
    let mut chars = p.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return bad("'~' must be followed by 0 or 1 (RFC 6901 escapes)");
        }
    }
    Ok(())
}

/// The key at `pointer` in `envelope`: its compact JSON text (cut to [`MAX_KEY_BYTES`]), or
/// [`NO_KEY`] when there is no value or it is `null`.
pub(crate) fn key_at(envelope: &serde_json::Value, pointer: &str) -> String {
    match envelope.pointer(pointer) {
        None | Some(serde_json::Value::Null) => NO_KEY.to_string(),
        Some(v) => {
            let mut text = v.to_string();
            if text.len() > MAX_KEY_BYTES {
                let mut cut = MAX_KEY_BYTES;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text.truncate(cut);
            }
            text
        }
    }
}

/// A key held by one of its deliveries, failed under `onFailure: block`: the key's later
/// events wait until that delivery is resubmitted or skipped; other keys go on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlockedKey {
    /// The key's value (the JSON value at the subscription's `ordering.key`); `null` for the
    /// shared sequence of events without one. A value cut at 256 bytes is shown as its text.
    #[schema(value_type = Object)]
    pub key: serde_json::Value,
    /// The failed delivery holding the key: resubmit or skip it to let the key go on.
    pub delivery: DeliveryId,
    /// When it failed, RFC 3339.
    #[schema(value_type = String)]
    pub since: Timestamp,
}

/// The key journaled as `text` (see [`key_at`]) as a JSON value: `null` for [`NO_KEY`], the
/// text itself as a string when it was cut and no longer parses.
pub(crate) fn key_value(text: &str) -> serde_json::Value {
    if text == NO_KEY {
        return serde_json::Value::Null;
    }
    serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ordering(key: &str, lanes: u16) -> Ordering {
        Ordering {
            key: key.into(),
            lanes,
        }
    }

    #[test]
    fn pointers_and_lanes_are_checked() {
        assert!(ordering("/payLoad/loanId", 16).validate().is_ok());
        assert!(ordering("/a~1b/c~0d", 1).validate().is_ok());
        assert!(ordering("/x", 256).validate().is_ok());
        for bad in ["", "payLoad", "/a~2", "/a~"] {
            assert!(
                ordering(bad, 1).validate().is_err(),
                "{bad:?} must be refused"
            );
        }
        assert!(
            ordering(&format!("/{}", "a".repeat(256)), 1)
                .validate()
                .is_err()
        );
        assert!(ordering("/x", 0).validate().is_err());
        assert!(ordering("/x", 257).validate().is_err());
    }

    #[test]
    fn lanes_default_to_one_and_unknown_fields_are_refused() {
        let o: Ordering = serde_json::from_value(json!({"key": "/transactionId"})).expect("ok");
        assert_eq!(o.lanes, 1);
        assert!(serde_json::from_value::<Ordering>(json!({"key": "/a", "lane": 2})).is_err());
    }

    #[test]
    fn keys_are_the_values_json_text_and_missing_or_null_share_one() {
        let env = json!({"transactionId": "T1", "payLoad": {"loanId": 42, "n": null, "s": "42"}});
        assert_eq!(key_at(&env, "/transactionId"), "\"T1\"");
        assert_eq!(key_at(&env, "/payLoad/loanId"), "42");
        assert_eq!(
            key_at(&env, "/payLoad/s"),
            "\"42\"",
            "a string is not its number"
        );
        assert_eq!(key_at(&env, "/payLoad/n"), NO_KEY);
        assert_eq!(key_at(&env, "/referenceId"), NO_KEY);
        assert_eq!(key_at(&env, "/payLoad/loanId/deeper"), NO_KEY);
    }

    #[test]
    fn journaled_keys_read_back_as_values() {
        assert_eq!(key_value("\"T1\""), json!("T1"));
        assert_eq!(key_value("42"), json!(42));
        assert_eq!(key_value(NO_KEY), serde_json::Value::Null);
        assert_eq!(
            key_value("\"cut"),
            json!("\"cut"),
            "a cut key shows its text"
        );
    }

    #[test]
    fn long_keys_are_cut_at_a_char_boundary() {
        let env = json!({"k": "é".repeat(300)});
        let k = key_at(&env, "/k");
        assert!(k.len() <= MAX_KEY_BYTES && k.len() >= MAX_KEY_BYTES - 1);
        assert!(k.starts_with("\"é"));
    }
}
