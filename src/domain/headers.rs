//! Custom request headers a subscription (or its OAuth2 settings) may add, and the ones it may
//! not: hookline owns the headers it sets itself (content type and length, `host`, `user-agent`,
//! `access-key`, `authorization`, every `webhook-*` header) and the hop-by-hop ones, so a
//! receiver can trust them.

use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// Checks custom header names and values: valid HTTP, and none that hookline sets itself.
pub(crate) fn validate_headers(field: &str, headers: &BTreeMap<String, String>) -> Result<()> {
    if headers.len() > 32 {
        return Err(Error::invalid(field, "at most 32 headers"));
    }
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(Error::invalid(
                format!("{field}.{name}"),
                "is not a valid header name",
            ));
        }
        if RESERVED_HEADERS.contains(&lower.as_str())
            || lower.starts_with("webhook-")
            || lower == "authorization"
        {
            return Err(Error::invalid(
                format!("{field}.{name}"),
                "is set by hookline and cannot be overridden",
            ));
        }
        if value.len() > 4096 || reqwest::header::HeaderValue::from_str(value).is_err() {
            return Err(Error::invalid(
                format!("{field}.{name}"),
                "value must be at most 4096 visible characters",
            ));
        }
    }
    Ok(())
}

/// Header names a subscription may not set: hookline owns them.
const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "host",
    "user-agent",
    "access-key",
    "transfer-encoding",
    "connection",
];
