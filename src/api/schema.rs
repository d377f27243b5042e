//! The request JSON Schemas, checked before serde.
//!
//! Every JSON request body is checked against its schema in `schemas/` (compiled into the
//! binary and compiled as validators once) before serde turns it into the engine's input type,
//! so a producer learns which field is wrong as a JSON pointer (400 `schema_violation`). The
//! same files are the request schemas of the OpenAPI document ([`REQUEST_SCHEMAS`]): one
//! source, so the document can be no looser and no stricter than the server. What a schema
//! cannot say (an address the SSRF rules refuse, a PEM that does not parse) is the engine's to
//! refuse afterwards, with 422 `invalid`.

use std::sync::LazyLock;

use axum::http::StatusCode;
use jsonschema::Validator;
use jsonschema::error::ValidationErrorKind;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::ApiError;

const EVENT: &str = include_str!("../../schemas/event.schema.json");
const TENANT: &str = include_str!("../../schemas/tenant.schema.json");
const TENANT_PATCH: &str = include_str!("../../schemas/tenant-patch.schema.json");
const SUBSCRIPTION: &str = include_str!("../../schemas/subscription.schema.json");
const SUBSCRIPTION_PATCH: &str = include_str!("../../schemas/subscription-patch.schema.json");
const SECRET_ROTATION: &str = include_str!("../../schemas/secret-rotation.schema.json");
const REPLAY: &str = include_str!("../../schemas/replay.schema.json");
const NOTIFICATION_ENDPOINT: &str = include_str!("../../schemas/notification-endpoint.schema.json");
const PORTAL_LINK: &str = include_str!("../../schemas/portal-link.schema.json");

/// Every request schema with its name in the OpenAPI document's components, and its file.
pub(super) const REQUEST_SCHEMAS: [(&str, &str, &str); 9] = [
    ("Event", "event.schema.json", EVENT),
    ("NewTenant", "tenant.schema.json", TENANT),
    ("TenantPatch", "tenant-patch.schema.json", TENANT_PATCH),
    ("NewSubscription", "subscription.schema.json", SUBSCRIPTION),
    (
        "SubscriptionPatch",
        "subscription-patch.schema.json",
        SUBSCRIPTION_PATCH,
    ),
    (
        "SecretRotation",
        "secret-rotation.schema.json",
        SECRET_ROTATION,
    ),
    ("ReplayWindow", "replay.schema.json", REPLAY),
    ("PortalLinkRequest", "portal-link.schema.json", PORTAL_LINK),
    (
        "NotificationEndpoint",
        "notification-endpoint.schema.json",
        NOTIFICATION_ENDPOINT,
    ),
];

/// The compiled request schemas.
pub(super) struct Schemas {
    pub event: Validator,
    pub tenant: Validator,
    pub tenant_patch: Validator,
    pub subscription: Validator,
    pub subscription_patch: Validator,
    pub secret_rotation: Validator,
    pub replay: Validator,
    pub notification_endpoint: Validator,
}

/// Compiled on first use; the router forces it so that the first request does not pay.
pub(super) static SCHEMAS: LazyLock<Schemas> = LazyLock::new(|| Schemas {
    event: compile(EVENT),
    tenant: compile(TENANT),
    tenant_patch: compile(TENANT_PATCH),
    subscription: compile(SUBSCRIPTION),
    subscription_patch: compile(SUBSCRIPTION_PATCH),
    secret_rotation: compile(SECRET_ROTATION),
    replay: compile(REPLAY),
    notification_endpoint: compile(NOTIFICATION_ENDPOINT),
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

/// Serde's half of a body, after its schema: a refusal here means the schema is looser than
/// the type (400 `invalid`; the OpenAPI conformance run looks for these).
pub(super) fn deserialize<T: DeserializeOwned>(mut value: Value) -> Result<T, ApiError> {
    integral_floats_to_integers(&mut value);
    serde_json::from_value(value).map_err(|e| ApiError::invalid(e.to_string()))
}

/// JSON Schema counts `5.0` as an integer; serde's integer types do not take it. Turns every
/// number with no fractional part that fits an `i64` or `u64` into that integer, so that what
/// the schema accepts as an integer deserializes as one.
fn integral_floats_to_integers(value: &mut Value) {
    match value {
        Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64().filter(|f| f.fract() == 0.0) {
                // The casts are exact: `f` is integral and inside the target's range.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let int = if (i64::MIN as f64..i64::MAX as f64).contains(&f) {
                    Some(Value::from(f as i64))
                } else if (0.0..u64::MAX as f64).contains(&f) {
                    Some(Value::from(f as u64))
                } else {
                    None
                };
                if let Some(int) = int {
                    *value = int;
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_floats_to_integers),
        Value::Object(fields) => fields.values_mut().for_each(integral_floats_to_integers),
        _ => {}
    }
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
        assert!(check(&s.tenant_patch, &json!({"rateLimit": null})).is_ok());
        assert!(check(&s.secret_rotation, &json!({"graceSeconds": 60})).is_ok());
        assert!(check(&s.replay, &json!({"since": "2026-11-23T10:12:16.827Z"})).is_ok());
        // Checked by the dashboard's portal-link handler, which compiles it itself.
        let portal_link = compile(PORTAL_LINK);
        assert!(check(&portal_link, &json!({"ttlSeconds": 60})).is_ok());
        assert!(check(&portal_link, &json!({"ttlSeconds": null})).is_err());
    }

    #[test]
    fn what_a_schema_calls_an_integer_deserializes_as_one() {
        let limit: crate::RateLimit =
            deserialize(json!({"perSecond": 2.0, "burst": 10.0})).expect("integral float");
        assert_eq!(limit.burst, 10);
        assert!(deserialize::<crate::RateLimit>(json!({"perSecond": 2, "burst": 1.5})).is_err());
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
