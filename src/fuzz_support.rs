//! Crate-private checks exposed for the fuzz targets under `fuzz/` (cargo fuzz): not part of the
//! API, no stability promise.
//!
//! Each function is a thin door onto code the server runs on untrusted input, called the way
//! the server calls it, so that a target can feed it anything and check what comes back: no
//! panic, refusals that are 4xx, values that round-trip. Nothing here is a second copy of a
//! rule; a target that needs an oracle writes its own.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use axum::http::{HeaderMap, HeaderValue, header};
use ipnet::IpNet;
use rand::SeedableRng;
use rand::rngs::StdRng;
use url::Url;

use crate::api::ApiConfig;
use crate::domain::{Event, Principal, TenantId};
use crate::policy;
use crate::security::signing::{self, Ed25519PublicKey, Ed25519Secret, SigningKeys, SigningSecret};
use crate::security::ssrf::{IpPolicy, check_url};
use crate::transform::{TransformError, TransformLimits};

pub use crate::RetryPolicy;

/// An API refusal as a client reads it: the status and the error body's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The HTTP status.
    pub status: u16,
    /// The body's machine `code`.
    pub code: String,
    /// The body's `message`.
    pub message: String,
    /// The body's `field`, when one is at fault.
    pub field: Option<String>,
}

impl From<crate::api::fuzz::Refusal> for Refusal {
    fn from(r: crate::api::fuzz::Refusal) -> Refusal {
        Refusal {
            status: r.status,
            code: r.code,
            message: r.message,
            field: r.field,
        }
    }
}

/// Who sends a request: the admin key, or a tenant key of the named tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The admin key.
    Admin,
    /// A tenant key.
    Tenant(String),
}

impl Caller {
    fn principal(&self) -> Principal {
        match self {
            Caller::Admin => Principal::Admin,
            Caller::Tenant(t) => Principal::Tenant(TenantId::from(t.as_str())),
        }
    }
}

/// The headers of a publish; `None` when a value could not travel in HTTP at all (the server
/// never sees such a request).
fn publish_headers(content_type: &[u8], idempotency_key: Option<&[u8]>) -> Option<HeaderMap> {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_bytes(content_type).ok()?,
    );
    if let Some(key) = idempotency_key {
        headers.insert("idempotency-key", HeaderValue::from_bytes(key).ok()?);
    }
    Some(headers)
}

/// `POST /v1/events` up to the journal: content type, depth, syntax, `Idempotency-Key`,
/// schema, tenant scope, serde, then `EventInput::validate`. `None` when the headers could not
/// be sent over HTTP.
pub fn publish(
    caller: &Caller,
    content_type: &[u8],
    idempotency_key: Option<&[u8]>,
    body: &[u8],
    cfg: &ApiConfig,
) -> Option<Result<Event, Refusal>> {
    let headers = publish_headers(content_type, idempotency_key)?;
    Some(crate::api::fuzz::publish(caller.principal(), &headers, body, cfg).map_err(Refusal::from))
}

/// `POST /v1/events/batch` up to the journal: the batch's refusal, or one result per item in
/// request order. `None` when the content type could not be sent over HTTP.
pub fn publish_batch(
    caller: &Caller,
    content_type: &[u8],
    body: &[u8],
    cfg: &ApiConfig,
) -> Option<Result<Vec<Result<Event, Refusal>>, Refusal>> {
    let headers = publish_headers(content_type, None)?;
    Some(
        crate::api::fuzz::publish_batch(caller.principal(), &headers, body, cfg)
            .map(|items| {
                items
                    .into_iter()
                    .map(|r| r.map_err(Refusal::from))
                    .collect()
            })
            .map_err(Refusal::from),
    )
}

/// The SSRF check every delivery URL passes before a request, under an operator allow-list.
pub fn ssrf_check_url(url: &Url, allow: &[IpNet]) -> Result<(), String> {
    check_url(url, &IpPolicy::new(allow.to_vec())).map_err(|e| e.to_string())
}

/// Whether the SSRF-safe resolver lets a connection to `ip` through, under an allow-list.
pub fn ssrf_allows(ip: IpAddr, allow: &[IpNet]) -> bool {
    IpPolicy::new(allow.to_vec()).allows(ip)
}

/// A `Retry-After` value as the sender reads it, relative to `now`.
pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    policy::parse_retry_after(value, now)
}

/// The retry delay the subscriber actor would set for a response with `status` and the parsed
/// `Retry-After`, after `counted` attempts; `None` when the delivery is not retried.
pub fn retry_delay(
    status: u16,
    retry_after: Option<Duration>,
    counted: u32,
    retry: &RetryPolicy,
    max_retry_after: Duration,
    seed: u64,
) -> Option<Duration> {
    let mut rng = StdRng::seed_from_u64(seed);
    match policy::decide(
        policy::classify_status(status),
        retry_after,
        counted,
        retry,
        max_retry_after,
        &mut rng,
    ) {
        policy::Decision::RetryIn(d) => Some(d),
        _ => None,
    }
}

/// Whether `retry` is a policy the API accepts.
pub fn retry_policy_is_valid(retry: &RetryPolicy) -> bool {
    retry.validate().is_ok()
}

/// A `whsec_` secret's canonical text form, or why it was refused.
pub fn parse_secret(text: &str) -> Result<String, String> {
    SigningSecret::parse(text)
        .map(|s| s.to_text())
        .map_err(|e| e.to_string())
}

/// A `whsk_` key's canonical text form and its `whpk_` public key, or why it was refused.
pub fn parse_ed25519(text: &str) -> Result<(String, String), String> {
    Ed25519Secret::parse(text)
        .map(|k| (k.to_text(), k.public_key().to_text()))
        .map_err(|e| e.to_string())
}

/// A `whpk_` public key's canonical text form, or why it was refused.
pub fn parse_public_key(text: &str) -> Result<String, String> {
    Ed25519PublicKey::parse(text)
        .map(Ed25519PublicKey::to_text)
        .map_err(|e| e.to_string())
}

/// The `webhook-signature` header the sender sets, from secrets in their text forms.
pub fn sign(
    secrets: &[&str],
    ed25519: Option<&str>,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, String> {
    let secrets = secrets
        .iter()
        .map(|s| SigningSecret::parse(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let key = ed25519
        .map(Ed25519Secret::parse)
        .transpose()
        .map_err(|e| e.to_string())?;
    signing::signature_header(&secrets, key.as_ref(), msg_id, timestamp, body)
        .map_err(|e| e.to_string())
}

/// Whether a `v1` signature in `header` verifies under one of `secrets` (text forms).
pub fn verify(
    header: &str,
    secrets: &[&str],
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<bool, String> {
    let secrets = secrets
        .iter()
        .map(|s| SigningSecret::parse(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    Ok(signing::verify(header, &secrets, msg_id, timestamp, body))
}

/// Whether a `v1a` signature in `header` verifies under the `whpk_` key `public`.
pub fn verify_v1a(
    header: &str,
    public: &str,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<bool, String> {
    let key = Ed25519PublicKey::parse(public).map_err(|e| e.to_string())?;
    Ok(signing::verify_v1a(header, &key, msg_id, timestamp, body))
}

/// A rotation as the subscriber actor applies it to journaled keys (`keys` as their JSON):
/// the secrets active at `now_ms` after rotating to `new` (a generated one when `None`) with
/// `grace`, in their text forms.
pub fn rotate(
    keys_json: &str,
    new: Option<&str>,
    grace: Duration,
    now_ms: i64,
) -> Result<Vec<String>, String> {
    let keys: SigningKeys = serde_json::from_str(keys_json).map_err(|e| e.to_string())?;
    let rotated = keys.rotate(new, grace, now_ms).map_err(|e| e.to_string())?;
    rotated
        .active(now_ms)
        .map(|secrets| secrets.iter().map(SigningSecret::to_text).collect())
        .map_err(|e| e.to_string())
}

/// A transform's `deliver` output as the runtime checks it: the headers to send, or why the
/// output was refused.
pub fn transform_output(
    headers: Vec<(String, String)>,
    body: &[u8],
    limits: &TransformLimits,
) -> Result<Vec<(String, String)>, TransformError> {
    crate::transform::output::check_delivery(headers, body, limits)
}

/// A guest's message (drop reason, error) cut to `max` bytes as the runtime keeps it.
pub fn transform_message(message: &str, max: usize) -> String {
    crate::transform::output::truncate(message, max)
}
