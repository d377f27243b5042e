//! The API's input side: content type, JSON nesting depth, syntax, JSON Schema, in that order.
//!
//! Bodies are checked against the schemas in `schemas/` (compiled into the binary and compiled
//! as validators once) before serde turns them into the engine's input types, so a producer
//! learns which field is wrong as a JSON pointer. Serde and the engine's own validation still
//! run afterwards and catch whatever a schema does not say.

use std::sync::LazyLock;

use axum::http::{HeaderMap, StatusCode, header};
use jsonschema::Validator;
use jsonschema::error::ValidationErrorKind;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::ApiError;

/// The compiled request schemas.
pub(super) struct Schemas {
    pub event: Validator,
    pub tenant: Validator,
    pub subscription: Validator,
    pub subscription_patch: Validator,
}

/// Compiled on first use; [`super::router`] forces it so that the first request does not pay.
pub(super) static SCHEMAS: LazyLock<Schemas> = LazyLock::new(|| Schemas {
    event: compile(include_str!("../../schemas/event.schema.json")),
    tenant: compile(include_str!("../../schemas/tenant.schema.json")),
    subscription: compile(include_str!("../../schemas/subscription.schema.json")),
    subscription_patch: compile(include_str!("../../schemas/subscription-patch.schema.json")),
});

/// The schemas are part of the binary, not input: one that does not compile is a bug, caught by
/// the `schemas_compile` test before it could ship.
#[allow(clippy::expect_used)]
fn compile(text: &str) -> Validator {
    let schema: Value = serde_json::from_str(text).expect("bundled schema is JSON");
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("bundled schema compiles")
}

/// A refusal of one field: the JSON pointer to it and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FieldError {
    pub pointer: String,
    pub message: String,
}

impl FieldError {
    pub(super) fn into_api(self) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "schema_violation",
            format!("{}: {}", display_pointer(&self.pointer), self.message),
        )
        .with_field(self.pointer)
    }
}

fn display_pointer(p: &str) -> &str {
    if p.is_empty() { "body" } else { p }
}

/// Checks `value` against `schema`; the first violation names its field. A missing or an
/// unexpected property points at the property itself, not at the object holding it.
pub(super) fn check(schema: &Validator, value: &Value) -> Result<(), FieldError> {
    let Some(e) = schema.iter_errors(value).next() else {
        return Ok(());
    };
    let mut pointer = e.instance_path().as_str().to_owned();
    let message = match e.kind() {
        ValidationErrorKind::Required { property } => {
            let name = property.as_str().unwrap_or_default();
            push_token(&mut pointer, name);
            "is required".to_owned()
        }
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            if let Some(name) = unexpected.first() {
                push_token(&mut pointer, name);
            }
            "is not an allowed property".to_owned()
        }
        // The masked form leaves the offending value out: it may be large, or a secret.
        _ => e.masked().to_string(),
    };
    Err(FieldError { pointer, message })
}

fn push_token(pointer: &mut String, token: &str) {
    pointer.push('/');
    pointer.push_str(&token.replace('~', "~0").replace('/', "~1"));
}

/// Checks, then deserializes into the engine's input type. Serde's refusals (a type the
/// schema allows but the engine does not) are 400 `invalid`.
pub(super) fn typed<T: DeserializeOwned>(schema: &Validator, value: Value) -> Result<T, ApiError> {
    check(schema, &value).map_err(FieldError::into_api)?;
    serde_json::from_value(value)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid", e.to_string()))
}

/// Refuses a body whose content type is not JSON (`application/json` or `application/*+json`).
pub(super) fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            let essence = v.split(';').next().unwrap_or_default().trim();
            let essence = essence.to_ascii_lowercase();
            essence == "application/json"
                || (essence.starts_with("application/") && essence.ends_with("+json"))
        })
        .unwrap_or(false);
    if is_json {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected content-type: application/json",
        ))
    }
}

/// Parses a JSON body: nesting depth first (cheap, and before any allocation by the parser),
/// then syntax.
pub(super) fn parse(bytes: &[u8], max_depth: usize) -> Result<Value, ApiError> {
    if let Some(depth) = exceeds_depth(bytes, max_depth) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "nesting_too_deep",
            format!("JSON nesting deeper than {max_depth} levels (found {depth})"),
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("malformed JSON: {e}"),
        )
    })
}

/// The depth reached when it first exceeds `max`, counting arrays and objects outside strings;
/// `None` when the text never nests deeper than `max`. Not a validator: malformed text is left
/// to the parser.
pub(super) fn exceeds_depth(bytes: &[u8], max: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Some(depth);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn schemas_compile() {
        let s = &*SCHEMAS;
        let ok = json!({"tenantId": "acme", "transactionId": "t1",
            "notificationType": "NODE_EVENT", "payLoad": {}, "timestamp": "2026-11-23T10:12:16.827Z"});
        assert!(check(&s.event, &ok).is_ok());
        assert!(check(&s.tenant, &json!({"id": "acme", "name": "Acme"})).is_ok());
        assert!(
            check(
                &s.subscription,
                &json!({"tenantId": "acme", "url": "https://a.example/"})
            )
            .is_ok()
        );
        assert!(check(&s.subscription_patch, &json!({"accessKey": null})).is_ok());
    }

    #[test]
    fn violations_point_at_the_field() {
        let s = &*SCHEMAS;
        let base = json!({"tenantId": "acme", "transactionId": "t1",
            "notificationType": "NODE_EVENT", "payLoad": {}, "timestamp": "2026-11-23T10:12:16.827Z"});
        let mut v = base.clone();
        v["timestamp"] = json!("yesterday");
        assert_eq!(check(&s.event, &v).unwrap_err().pointer, "/timestamp");
        let mut v = base.clone();
        v["notificationType"] = json!("NOPE");
        assert_eq!(
            check(&s.event, &v).unwrap_err().pointer,
            "/notificationType"
        );
        let mut v = base.clone();
        v["payLoad"] = json!([1]);
        assert_eq!(check(&s.event, &v).unwrap_err().pointer, "/payLoad");
        let mut v = base.clone();
        v.as_object_mut().unwrap().remove("transactionId");
        let e = check(&s.event, &v).unwrap_err();
        assert_eq!(e.pointer, "/transactionId");
        assert_eq!(e.message, "is required");
        let mut v = base;
        v["extra/field"] = json!(1);
        assert_eq!(check(&s.event, &v).unwrap_err().pointer, "/extra~1field");
    }

    #[test]
    fn depth_counts_outside_strings_only() {
        assert_eq!(exceeds_depth(br#"{"a":[1,{"b":2}]}"#, 3), None);
        assert_eq!(exceeds_depth(br#"{"a":[1,{"b":2}]}"#, 2), Some(3));
        assert_eq!(exceeds_depth(br#"{"a":"[[[[[[\"[[[["}"#, 1), None);
        let deep = "[".repeat(65) + &"]".repeat(65);
        assert_eq!(exceeds_depth(deep.as_bytes(), 64), Some(65));
        assert_eq!(exceeds_depth(deep.as_bytes(), 65), None);
    }
}
