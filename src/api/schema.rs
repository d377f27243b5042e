//! The request JSON Schemas, checked before serde.
//!
//! Bodies are checked against the schemas in `schemas/` (compiled into the binary and compiled
//! as validators once) before serde turns them into the engine's input types, so a producer
//! learns which field is wrong as a JSON pointer. Serde and the engine's own validation still
//! run afterwards and catch whatever a schema does not say.

use std::sync::LazyLock;

use axum::http::StatusCode;
use jsonschema::Validator;
use jsonschema::error::ValidationErrorKind;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::ApiError;

/// The compiled request schemas.
pub(super) struct Schemas {
    pub event: Validator,
    pub tenant: Validator,
    pub subscription: Validator,
    pub subscription_patch: Validator,
}

/// Compiled on first use; the router forces it so that the first request does not pay.
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

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "schema_violation",
            format!("{}: {}", display_pointer(&e.pointer), e.message),
        )
        .with_field(e.pointer)
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

/// Serde's half of a body: its refusals (a type the schema allows but the engine does not)
/// are 400 `invalid`.
pub(super) fn deserialize<T: DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    serde_json::from_value(value).map_err(|e| ApiError::invalid(e.to_string()))
}

/// Checks, then deserializes into the engine's input type.
pub(super) fn typed<T: DeserializeOwned>(schema: &Validator, value: Value) -> Result<T, ApiError> {
    check(schema, &value)?;
    deserialize(value)
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
}
