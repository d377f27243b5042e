//! OAuth2 client-credentials tokens for receivers behind a token gateway.
//!
//! Some receivers sit behind a gateway (the lending seed's "OBRH") that wants a bearer token from
//! its token server with every request. A subscription configured with an [`OAuth2Config`] gets
//! one from [`TokenCache::token`], which fetches it with the client-credentials grant
//! (RFC 6749 §4.4) and keeps it until shortly before it expires.
//!
//! ## The token request
//! `POST tokenUrl` with an `application/x-www-form-urlencoded` body of
//! `grant_type=client_credentials` (plus `scope=…` when a non-empty scope is configured), the
//! configured `token_headers`, and the client authenticated with HTTP Basic only (RFC 6749
//! §2.3.1, the method every server must support): the client id and secret are each
//! form-urlencoded, as that section requires, then joined with `:` and base64-encoded. The
//! credentials are not repeated in the body; `Content-Type` and `Authorization` are ours and
//! replace token headers of the same name. The whole exchange is bounded by [`TOKEN_TIMEOUT`]
//! and reads at most [`TOKEN_READ_LIMIT`] bytes. The answer must be a JSON object with a
//! non-empty `access_token` and a `token_type` of `bearer` (any case) or none; `expires_in`
//! (seconds, a number or a numeric string) defaults to [`DEFAULT_LIFETIME`].
//!
//! ## The cache
//! One [`TokenCache`] per engine, keyed by subscription id, entries tied to the exact
//! configuration they were fetched with (an edited subscription never gets the old token).
//! A token is served until less than [`refresh_margin`] of its lifetime remains, measured from
//! when its request was sent. Concurrent callers for one key share a single fetch: a per-key
//! `tokio::sync::Mutex` is held only around the fetch, and callers that waited on it take its
//! result, success or failure, rather than fetching again. The key map and each key's state sit
//! behind short `std::sync::Mutex`es that are never held across an `.await`. If a refresh fails
//! while the current token has not yet expired, the current token is served: refreshing early is
//! what makes a token-server hiccup harmless. After a 401 from the receiver the caller calls
//! [`TokenCache::invalidate`] with the token it used, then asks again, once.
//!
//! ## Invariants
//! - The client secret and tokens never appear in `Debug` output, error messages or logs:
//!   [`OAuth2Config`]'s `Debug` redacts the secret (and token header values), token-server error
//!   bodies are cut to a short snippet with the secret blanked out, JSON errors report only a
//!   position, and request headers carrying credentials are marked sensitive.
//! - Every token URL goes through [`check_url`](crate::security::ssrf::check_url) before it is
//!   requested (IP-literal hosts never reach the resolver); the caller passes the engine's
//!   client, whose resolver checks names, so token servers obey the same address rules as
//!   receivers.
//! - The cache is bounded by the subscriptions in use: [`TokenCache::forget`] drops a deleted
//!   subscription, and entries with no live token and no caller are pruned as the map grows.
//!
//! ## Layout
//! `cache` holds the per-subscription tokens and the single-flight rule; `request` is the
//! token request and the parsing of its answer.

mod cache;
mod request;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use reqwest::header::HeaderValue;
use url::Url;

use crate::policy::{Verdict, classify_status};
use crate::security::ssrf::SsrfError;

pub(crate) use cache::TokenCache;

/// How long one token request may take, body included.
pub(crate) const TOKEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Response bytes read at most; a larger token response is refused.
pub(crate) const TOKEN_READ_LIMIT: usize = 64 * 1024;
/// Lifetime assumed when the token server sends no `expires_in`.
pub(crate) const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);
/// Lifetimes are capped here: a server's typo cannot pin a token for years, and `Instant`
/// arithmetic cannot overflow. A capped token is simply fetched again sooner.
pub(crate) const MAX_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);
/// The least time before expiry at which a token is refreshed.
const MIN_REFRESH_MARGIN: Duration = Duration::from_secs(10);
/// Bytes of a token server's error body kept in [`OAuthError::Status`].
const BODY_SNIPPET_LIMIT: usize = 512;
/// Bytes of an error body read (more than kept, so a secret echoed across the snippet's edge is
/// still found and blanked before the cut).
const ERROR_READ_LIMIT: usize = 4 * 1024;
/// The key map is pruned when it reaches this size, then whenever it doubles.
const MIN_PRUNE_AT: usize = 256;

/// A subscription's token-server settings (`{type: "oauth2", tokenUrl, clientId, clientSecret,
/// scope?, tokenHeaders?}`). Plain data; validation happens when a token is fetched.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct OAuth2Config {
    pub token_url: String,
    pub client_id: String,
    pub client_secret: String,
    /// Sent as `scope` when set and non-empty.
    pub scope: Option<String>,
    /// Extra headers on the token request (the gateway's attribute headers).
    pub token_headers: BTreeMap<String, String>,
}

impl fmt::Debug for OAuth2Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Token header values can be API keys too: show only their names.
        let header_names: Vec<&str> = self.token_headers.keys().map(String::as_str).collect();
        f.debug_struct("OAuth2Config")
            .field("token_url", &redacted_url(&self.token_url))
            .field("client_id", &self.client_id)
            .field("client_secret", &"[redacted]")
            .field("scope", &self.scope)
            .field("token_headers", &header_names)
            .finish()
    }
}

/// The token URL with any userinfo password blanked (it would be a credential).
fn redacted_url(raw: &str) -> String {
    match Url::parse(raw) {
        Ok(mut url) if url.password().is_some() => {
            // Cannot fail: a URL that has a password can have it replaced.
            let _ = url.set_password(Some("redacted"));
            url.to_string()
        }
        Ok(_) => raw.to_owned(),
        Err(_) => "[unparsable URL]".to_owned(),
    }
}

/// Why no token could be had. Never carries the client secret or a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum OAuthError {
    /// The token server could not be reached, or did not answer in time.
    #[error("token request failed: {0}")]
    Request(String),
    /// The token server answered with a non-2xx status.
    #[error("token server answered {status}: {body_snippet}")]
    Status { status: u16, body_snippet: String },
    /// The configuration or the token server's answer is unusable (bad URL or header, not JSON,
    /// no `access_token`, a token type other than bearer, an oversized body).
    #[error("unusable token configuration or response: {0}")]
    Invalid(String),
    /// The token URL's destination was refused by the SSRF policy, or its name did not resolve.
    #[error("token server destination: {0}")]
    Destination(#[from] SsrfError),
}

impl OAuthError {
    /// Whether asking again later may succeed: network trouble, timeouts and the statuses the
    /// delivery status table retries (408, 425, 429, 5xx); an unresolvable name, but not a
    /// refused address.
    pub(crate) fn is_retriable(&self) -> bool {
        match self {
            OAuthError::Request(_) => true,
            OAuthError::Status { status, .. } => classify_status(*status) == Verdict::Retriable,
            OAuthError::Invalid(_) => false,
            OAuthError::Destination(e) => !e.is_blocked(),
        }
    }
}

/// How long before expiry a token with this lifetime is refreshed: 10 % of the lifetime, at least
/// 10 s. A token living 10 s or less is therefore never reused by a later request (it is handed
/// only to the callers that waited for its fetch).
pub(crate) fn refresh_margin(lifetime: Duration) -> Duration {
    (lifetime / 10).max(MIN_REFRESH_MARGIN)
}

/// The `Authorization` value for a token from [`TokenCache::token`], marked sensitive so it never
/// shows in `Debug` output.
pub(crate) fn bearer_header(token: &str) -> Result<HeaderValue, OAuthError> {
    let mut v = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
        OAuthError::Invalid("the token cannot go in an Authorization header".to_owned())
    })?;
    v.set_sensitive(true);
    Ok(v)
}

/// Locks a std mutex, ignoring poison: every critical section here leaves the state consistent
/// (plain assignments), so a panic elsewhere while holding it cannot have broken it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
