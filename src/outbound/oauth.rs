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
//! - Every token URL goes through [`ssrf::check_url`] before it is requested (IP-literal hosts
//!   never reach the resolver); the caller passes the engine's client, whose resolver checks
//!   names, so token servers obey the same address rules as receivers.
//! - The cache is bounded by the subscriptions in use: [`TokenCache::forget`] drops a deleted
//!   subscription, and entries with no live token and no caller are pruned as the map grows.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use reqwest::header::{
    ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, USER_AGENT,
};
use serde_json::Value;
use url::{Url, form_urlencoded};

use crate::error::error_chain;
use crate::policy::{Verdict, classify_status};
use crate::security::ssrf::{self, IpPolicy, SsrfError};

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

/// Client-credentials tokens by subscription id. Cheap to clone; clones share the cache.
#[derive(Clone)]
pub(crate) struct TokenCache {
    inner: Arc<Inner>,
}

struct Inner {
    policy: Arc<IpPolicy>,
    slots: Mutex<Slots>,
}

struct Slots {
    map: HashMap<String, Arc<Slot>>,
    /// Map size at which the next insert prunes first.
    prune_at: usize,
}

/// One subscription's token.
#[derive(Default)]
struct Slot {
    /// Held only while fetching: the single-flight gate.
    fetch: tokio::sync::Mutex<()>,
    state: Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    /// Fetches completed (either way); a waiter that sees it move takes that fetch's result.
    fetches: u64,
    token: Option<Cached>,
    /// The last fetch's error, shared with the callers that waited for it.
    failure: Option<Failure>,
}

struct Cached {
    cfg: OAuth2Config,
    token: Arc<str>,
    refresh_at: Instant,
    expires_at: Instant,
}

struct Failure {
    cfg: OAuth2Config,
    error: OAuthError,
}

impl SlotState {
    /// The cached token, if it was fetched with exactly this configuration.
    fn token_for(&self, cfg: &OAuth2Config) -> Option<&Cached> {
        self.token.as_ref().filter(|c| c.cfg == *cfg)
    }

    fn is_live(&self, now: Instant) -> bool {
        self.token.as_ref().is_some_and(|c| now < c.expires_at)
    }
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("subscriptions", &lock(&self.inner.slots).map.len())
            .finish_non_exhaustive()
    }
}

/// Locks a std mutex, ignoring poison: every critical section here leaves the state consistent
/// (plain assignments), so a panic elsewhere while holding it cannot have broken it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A token as the server issued it.
struct Issued {
    token: Arc<str>,
    lifetime: Duration,
}

impl TokenCache {
    /// An empty cache whose token URLs must satisfy `policy` (the engine's SSRF policy).
    pub(crate) fn new(policy: Arc<IpPolicy>) -> TokenCache {
        TokenCache {
            inner: Arc::new(Inner {
                policy,
                slots: Mutex::new(Slots {
                    map: HashMap::new(),
                    prune_at: MIN_PRUNE_AT,
                }),
            }),
        }
    }

    /// A token for subscription `key`: the cached one while it is fresh, otherwise a new one
    /// fetched with `client` (one fetch per key at a time; see the module docs).
    pub(crate) async fn token(
        &self,
        key: &str,
        cfg: &OAuth2Config,
        client: &reqwest::Client,
    ) -> Result<Arc<str>, OAuthError> {
        let slot = self.slot(key);
        let seen = {
            let st = lock(&slot.state);
            if let Some(c) = st.token_for(cfg)
                && Instant::now() < c.refresh_at
            {
                return Ok(Arc::clone(&c.token));
            }
            st.fetches
        };

        let _fetching = slot.fetch.lock().await;
        {
            let st = lock(&slot.state);
            let now = Instant::now();
            // A fetch that completed while we waited started after we asked: its result is as
            // fresh as one of our own, so take it (even a token already inside its margin).
            let fetched_meanwhile = st.fetches != seen;
            if let Some(c) = st.token_for(cfg)
                && (now < c.refresh_at || (fetched_meanwhile && now < c.expires_at))
            {
                return Ok(Arc::clone(&c.token));
            }
            if fetched_meanwhile
                && let Some(f) = &st.failure
                && f.cfg == *cfg
            {
                return Err(f.error.clone());
            }
        }

        // Lifetimes count from before the request: the server's clock started no earlier.
        let sent_at = Instant::now();
        let result = self.fetch(cfg, client).await;
        let mut st = lock(&slot.state);
        st.fetches += 1;
        match result {
            Ok(issued) => {
                let lifetime = issued.lifetime.min(MAX_LIFETIME);
                let expires_at = sent_at.checked_add(lifetime).unwrap_or(sent_at);
                let refresh_at = sent_at
                    .checked_add(lifetime.saturating_sub(refresh_margin(lifetime)))
                    .unwrap_or(sent_at);
                tracing::debug!(
                    subscription = key,
                    lifetime_s = lifetime.as_secs(),
                    "fetched an OAuth2 token"
                );
                st.token = Some(Cached {
                    cfg: cfg.clone(),
                    token: Arc::clone(&issued.token),
                    refresh_at,
                    expires_at,
                });
                st.failure = None;
                Ok(issued.token)
            }
            Err(error) => {
                st.failure = Some(Failure {
                    cfg: cfg.clone(),
                    error: error.clone(),
                });
                if let Some(c) = st.token_for(cfg)
                    && Instant::now() < c.expires_at
                {
                    tracing::warn!(
                        subscription = key,
                        error = %error,
                        "OAuth2 token refresh failed; using the current token until it expires"
                    );
                    return Ok(Arc::clone(&c.token));
                }
                Err(error)
            }
        }
    }

    /// Drops `key`'s cached token if it is still `token` (the one a receiver just answered 401
    /// to). A token fetched since by someone else is kept.
    pub(crate) fn invalidate(&self, key: &str, token: &str) {
        let slot = lock(&self.inner.slots).map.get(key).cloned();
        if let Some(slot) = slot {
            let mut st = lock(&slot.state);
            if st.token.as_ref().is_some_and(|c| &*c.token == token) {
                st.token = None;
            }
        }
    }

    /// Forgets `key` entirely (the subscription was deleted or stopped using OAuth2).
    pub(crate) fn forget(&self, key: &str) {
        lock(&self.inner.slots).map.remove(key);
    }

    /// Drops every entry with no live token that no caller is using.
    #[cfg_attr(not(test), allow(dead_code))] // forget() covers deletions; prune() is for sweeps
    pub(crate) fn prune(&self) {
        let mut slots = lock(&self.inner.slots);
        prune_slots(&mut slots.map);
    }

    /// The key's slot, created on first use.
    fn slot(&self, key: &str) -> Arc<Slot> {
        let mut slots = lock(&self.inner.slots);
        if let Some(slot) = slots.map.get(key) {
            return Arc::clone(slot);
        }
        if slots.map.len() >= slots.prune_at {
            prune_slots(&mut slots.map);
            // Doubling keeps pruning amortised O(1) per insert.
            slots.prune_at = (slots.map.len() * 2).max(MIN_PRUNE_AT);
        }
        let slot = Arc::new(Slot::default());
        slots.map.insert(key.to_owned(), Arc::clone(&slot));
        slot
    }

    async fn fetch(
        &self,
        cfg: &OAuth2Config,
        client: &reqwest::Client,
    ) -> Result<Issued, OAuthError> {
        let url = Url::parse(&cfg.token_url)
            .map_err(|e| OAuthError::Invalid(format!("the token URL is not a valid URL: {e}")))?;
        ssrf::check_url(&url, &self.inner.policy)?;
        let headers = request_headers(cfg)?;
        let body = form_body(cfg);
        match tokio::time::timeout(TOKEN_TIMEOUT, exchange(client, url, headers, body, cfg)).await {
            Ok(result) => result,
            Err(_) => Err(OAuthError::Request(format!(
                "no complete token response within {} s",
                TOKEN_TIMEOUT.as_secs()
            ))),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.inner.slots).map.len()
    }
}

/// Removes slots that hold no live token and that nobody else holds. Called with the map locked,
/// so no new holder can appear while a slot's count is read.
fn prune_slots(map: &mut HashMap<String, Arc<Slot>>) {
    let now = Instant::now();
    map.retain(|_, slot| Arc::strong_count(slot) > 1 || lock(&slot.state).is_live(now));
}

/// The token request's headers: the configured token headers, then ours.
fn request_headers(cfg: &OAuth2Config) -> Result<HeaderMap, OAuthError> {
    let mut h = HeaderMap::with_capacity(cfg.token_headers.len() + 4);
    for (name, value) in &cfg.token_headers {
        let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            OAuthError::Invalid(format!("token header {name:?} is not a valid header name"))
        })?;
        // The value is not quoted: it may be a credential.
        let mut v = HeaderValue::from_str(value).map_err(|_| {
            OAuthError::Invalid(format!(
                "the value of token header {name:?} is not a valid header value"
            ))
        })?;
        v.set_sensitive(true);
        h.insert(header, v);
    }
    if !h.contains_key(ACCEPT) {
        h.insert(ACCEPT, HeaderValue::from_static("application/json"));
    }
    if !h.contains_key(USER_AGENT) {
        h.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("hookline/", env!("CARGO_PKG_VERSION"))),
        );
    }
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
    h.insert(AUTHORIZATION, basic_credentials(cfg)?);
    Ok(h)
}

/// `Basic base64(urlencode(client_id) ":" urlencode(client_secret))`, RFC 6749 §2.3.1.
fn basic_credentials(cfg: &OAuth2Config) -> Result<HeaderValue, OAuthError> {
    let id: String = form_urlencoded::byte_serialize(cfg.client_id.as_bytes()).collect();
    let secret: String = form_urlencoded::byte_serialize(cfg.client_secret.as_bytes()).collect();
    let encoded = STANDARD.encode(format!("{id}:{secret}"));
    // Base64 is always a valid header value; the error arm exists only for totality.
    let mut v = HeaderValue::from_str(&format!("Basic {encoded}"))
        .map_err(|_| OAuthError::Invalid("client credentials cannot be encoded".to_owned()))?;
    v.set_sensitive(true);
    Ok(v)
}

fn form_body(cfg: &OAuth2Config) -> String {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("grant_type", "client_credentials");
    if let Some(scope) = cfg.scope.as_deref().filter(|s| !s.is_empty()) {
        form.append_pair("scope", scope);
    }
    form.finish()
}

async fn exchange(
    client: &reqwest::Client,
    url: Url,
    headers: HeaderMap,
    body: String,
    cfg: &OAuth2Config,
) -> Result<Issued, OAuthError> {
    let mut resp = client
        .post(url)
        .headers(headers)
        .body(body)
        .send()
        .await
        .map_err(request_error)?;
    let status = resp.status();
    if !status.is_success() {
        // The status is the answer; a body that breaks off just shortens the snippet.
        let (kept, _) = read_capped(&mut resp, ERROR_READ_LIMIT)
            .await
            .unwrap_or_default();
        return Err(OAuthError::Status {
            status: status.as_u16(),
            body_snippet: error_snippet(&kept, &cfg.client_secret),
        });
    }
    let (body, complete) = read_capped(&mut resp, TOKEN_READ_LIMIT)
        .await
        .map_err(request_error)?;
    if !complete {
        return Err(OAuthError::Invalid(format!(
            "the token response exceeds {} KiB",
            TOKEN_READ_LIMIT / 1024
        )));
    }
    parse_token_response(&body)
}

/// Reads the body up to `limit` bytes; `false` when there was more.
async fn read_capped(
    resp: &mut reqwest::Response,
    limit: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut kept: Vec<u8> = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        let room = limit - kept.len();
        if chunk.len() > room {
            kept.extend_from_slice(&chunk[..room]);
            return Ok((kept, false));
        }
        kept.extend_from_slice(&chunk);
    }
    Ok((kept, true))
}

fn request_error(e: reqwest::Error) -> OAuthError {
    if let Some(refused) = ssrf::find_in_chain(&e) {
        return OAuthError::Destination(refused.clone());
    }
    // The URL stays out of messages: it might carry userinfo.
    let builder = e.is_builder();
    let message = error_chain(&e.without_url());
    if builder {
        OAuthError::Invalid(format!("the token request cannot be built: {message}"))
    } else {
        OAuthError::Request(message)
    }
}

/// A token server's error body as a short snippet, with the client secret blanked in case the
/// server echoes the request.
fn error_snippet(body: &[u8], secret: &str) -> String {
    let mut s = String::from_utf8_lossy(body).into_owned();
    if !secret.is_empty() {
        s = s.replace(secret, "[redacted]");
        let encoded: String = form_urlencoded::byte_serialize(secret.as_bytes()).collect();
        if encoded != secret {
            s = s.replace(&encoded, "[redacted]");
        }
    }
    truncate(&mut s, BODY_SNIPPET_LIMIT);
    s
}

/// Cuts `s` to at most `max` bytes on a character boundary.
fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

/// Parses `{access_token, token_type?, expires_in?}`. Error messages name fields and positions
/// only, never values: the body holds a token.
fn parse_token_response(body: &[u8]) -> Result<Issued, OAuthError> {
    let invalid = |m: &str| OAuthError::Invalid(m.to_owned());
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        OAuthError::Invalid(format!(
            "the token response is not JSON (error at line {} column {})",
            e.line(),
            e.column()
        ))
    })?;
    let Value::Object(obj) = value else {
        return Err(invalid("the token response is not a JSON object"));
    };
    let token = match obj.get("access_token") {
        Some(Value::String(t)) if !t.is_empty() => t,
        Some(_) => return Err(invalid("access_token is not a non-empty string")),
        None => return Err(invalid("the token response has no access_token")),
    };
    // The token goes into `Authorization: Bearer …` verbatim: visible ASCII only (RFC 6750's
    // b64token is a subset), so a header can always be built from it.
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(
            "access_token has characters that cannot go in an Authorization header",
        ));
    }
    match obj.get("token_type") {
        None | Some(Value::Null) => {}
        Some(Value::String(t)) if t.eq_ignore_ascii_case("bearer") => {}
        Some(Value::String(t)) => {
            let mut shown = t.clone();
            truncate(&mut shown, 32);
            return Err(OAuthError::Invalid(format!(
                "token type {shown:?} is not supported; only bearer is"
            )));
        }
        Some(_) => return Err(invalid("token_type is not a string")),
    }
    let lifetime = match obj.get("expires_in") {
        None | Some(Value::Null) => DEFAULT_LIFETIME,
        Some(Value::Number(n)) => seconds(n.as_f64())?,
        // Some servers (Azure AD v1 among them) send it as a string.
        Some(Value::String(s)) => seconds(s.trim().parse::<f64>().ok())?,
        Some(_) => return Err(invalid("expires_in is not a number")),
    };
    Ok(Issued {
        token: Arc::from(token.as_str()),
        lifetime,
    })
}

fn seconds(secs: Option<f64>) -> Result<Duration, OAuthError> {
    match secs {
        Some(s) if s.is_finite() && s >= 0.0 => {
            Ok(Duration::from_secs_f64(s.min(MAX_LIFETIME.as_secs_f64())))
        }
        _ => Err(OAuthError::Invalid(
            "expires_in is not a non-negative number of seconds".to_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::Router;
    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::response::{IntoResponse, Response};
    use axum::routing::post;

    const ID: &str = "hookline client";
    // Characters that RFC 6749 §2.3.1's form-encoding changes, to prove we do it.
    const SECRET: &str = "s3cr+t/=:%é";

    /// What the test token server answers.
    #[derive(Clone)]
    struct Behaviour {
        /// `expires_in` to issue (any JSON; `Null` leaves it out).
        expires_in: Value,
        token_type: Option<&'static str>,
        /// Answer this status with this body instead of a token.
        fail: Option<(u16, String)>,
        /// A raw 200 body instead of a token.
        raw: Option<String>,
        delay: Duration,
    }

    impl Default for Behaviour {
        fn default() -> Behaviour {
            Behaviour {
                expires_in: Value::from(3600),
                token_type: Some("Bearer"),
                fail: None,
                raw: None,
                delay: Duration::ZERO,
            }
        }
    }

    #[derive(Clone, Default)]
    struct Server {
        requests: Arc<AtomicUsize>,
        behaviour: Arc<Mutex<Behaviour>>,
        last_body: Arc<Mutex<String>>,
    }

    impl Server {
        fn set(&self, f: impl FnOnce(&mut Behaviour)) {
            f(&mut lock(&self.behaviour));
        }

        fn requests(&self) -> usize {
            self.requests.load(Ordering::SeqCst)
        }
    }

    /// Undoes RFC 6749 §2.3.1's form-encoding of one credential.
    fn form_decode(part: &str) -> String {
        form_urlencoded::parse(format!("v={part}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    }

    async fn issue(State(server): State<Server>, headers: HeaderMap, body: String) -> Response {
        let n = server.requests.fetch_add(1, Ordering::SeqCst) + 1;
        *lock(&server.last_body) = body;
        let behaviour = lock(&server.behaviour).clone();
        tokio::time::sleep(behaviour.delay).await;

        let credentials = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| STANDARD.decode(b).ok())
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| {
                let (id, secret) = s.split_once(':')?;
                Some((form_decode(id), form_decode(secret)))
            });
        if credentials != Some((ID.to_owned(), SECRET.to_owned())) {
            return (StatusCode::UNAUTHORIZED, r#"{"error":"invalid_client"}"#).into_response();
        }
        let attribute = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        if attribute("entityId") != Some("DEFAULTENTITY") || attribute("appId") != Some("CMNCORE") {
            return (StatusCode::BAD_REQUEST, "missing attribute headers").into_response();
        }
        if attribute("content-type") != Some("application/x-www-form-urlencoded") {
            return (StatusCode::UNSUPPORTED_MEDIA_TYPE, "form expected").into_response();
        }
        if let Some((status, body)) = behaviour.fail {
            let status = StatusCode::from_u16(status).expect("test status");
            return (status, body).into_response();
        }
        if let Some(raw) = behaviour.raw {
            return raw.into_response();
        }
        let mut token = serde_json::json!({ "access_token": format!("tok-{n}") });
        if let Some(t) = behaviour.token_type {
            token["token_type"] = Value::from(t);
        }
        if !behaviour.expires_in.is_null() {
            token["expires_in"] = behaviour.expires_in;
        }
        axum::Json(token).into_response()
    }

    async fn token_server() -> (Server, String) {
        let server = Server::default();
        let app = Router::new()
            .route("/token", post(issue))
            .with_state(server.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        (server, format!("http://{addr}/token"))
    }

    fn config(token_url: &str) -> OAuth2Config {
        OAuth2Config {
            token_url: token_url.to_owned(),
            client_id: ID.to_owned(),
            client_secret: SECRET.to_owned(),
            scope: Some("webhooks:deliver".to_owned()),
            token_headers: BTreeMap::from([
                ("entityId".to_owned(), "DEFAULTENTITY".to_owned()),
                ("appId".to_owned(), "CMNCORE".to_owned()),
            ]),
        }
    }

    fn cache() -> TokenCache {
        let loopback = "127.0.0.0/8".parse().expect("net");
        TokenCache::new(Arc::new(IpPolicy::new(vec![loopback])))
    }

    #[tokio::test]
    async fn the_first_call_fetches_and_the_second_is_served_from_the_cache() {
        let (server, url) = token_server().await;
        let (cache, client, cfg) = (cache(), reqwest::Client::new(), config(&url));

        let first = cache.token("sub-1", &cfg, &client).await.expect("token");
        assert_eq!(&*first, "tok-1");
        assert_eq!(server.requests(), 1);
        assert_eq!(
            *lock(&server.last_body),
            "grant_type=client_credentials&scope=webhooks%3Adeliver",
            "credentials go in the Basic header only"
        );
        let second = cache.token("sub-1", &cfg, &client).await.expect("token");
        assert_eq!(&*second, "tok-1");
        assert_eq!(server.requests(), 1, "served from the cache");

        // Another subscription has its own token; without a scope the body has none.
        let mut other = cfg.clone();
        other.scope = None;
        let third = cache.token("sub-2", &other, &client).await.expect("token");
        assert_eq!(&*third, "tok-2");
        assert_eq!(*lock(&server.last_body), "grant_type=client_credentials");
    }

    #[tokio::test]
    async fn an_edited_configuration_never_gets_the_old_token() {
        let (server, url) = token_server().await;
        let (cache, client, cfg) = (cache(), reqwest::Client::new(), config(&url));
        cache.token("sub-1", &cfg, &client).await.expect("token");
        let mut edited = cfg.clone();
        edited.scope = Some("other".to_owned());
        let t = cache.token("sub-1", &edited, &client).await.expect("token");
        assert_eq!(&*t, "tok-2");
        assert_eq!(server.requests(), 2);
    }

    #[test]
    fn the_refresh_margin_is_a_tenth_of_the_lifetime_but_at_least_ten_seconds() {
        let s = Duration::from_secs;
        assert_eq!(refresh_margin(s(1)), s(10));
        assert_eq!(refresh_margin(s(100)), s(10));
        assert_eq!(refresh_margin(s(300)), s(30));
        assert_eq!(refresh_margin(s(3600)), s(360));
    }

    #[tokio::test]
    async fn a_token_inside_its_refresh_margin_is_fetched_again() {
        let (server, url) = token_server().await;
        let (cache, client, cfg) = (cache(), reqwest::Client::new(), config(&url));
        // A 1 s lifetime is inside the 10 s margin from the start: the next call refreshes.
        server.set(|b| b.expires_in = Value::from(1));
        assert_eq!(&*cache.token("s", &cfg, &client).await.expect("t"), "tok-1");
        assert_eq!(&*cache.token("s", &cfg, &client).await.expect("t"), "tok-2");
        assert_eq!(server.requests(), 2);
        // A long-lived token (string expires_in, as some servers send) is kept.
        server.set(|b| b.expires_in = Value::from("3600"));
        assert_eq!(&*cache.token("s", &cfg, &client).await.expect("t"), "tok-3");
        assert_eq!(&*cache.token("s", &cfg, &client).await.expect("t"), "tok-3");
        assert_eq!(server.requests(), 3);
        // No expires_in: kept for the default lifetime.
        server.set(|b| b.expires_in = Value::Null);
        cache.invalidate("s", "tok-3");
        assert_eq!(&*cache.token("s", &cfg, &client).await.expect("t"), "tok-4");
        assert_eq!(&*cache.token("s", &cfg, &client).await.expect("t"), "tok-4");
        assert_eq!(server.requests(), 4);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_callers_share_one_fetch() {
        let (server, url) = token_server().await;
        let (cache, client, cfg) = (cache(), reqwest::Client::new(), config(&url));
        // Slow enough that all callers arrive while the fetch is in flight; short-lived, so
        // only the single-flight rule (not freshness) lets the waiters take it.
        server.set(|b| {
            b.delay = Duration::from_millis(200);
            b.expires_in = Value::from(1);
        });
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (cache, client, cfg) = (cache.clone(), client.clone(), cfg.clone());
                tokio::spawn(async move { cache.token("sub", &cfg, &client).await })
            })
            .collect();
        for task in tasks {
            let token = task.await.expect("task").expect("token");
            assert_eq!(&*token, "tok-1");
        }
        assert_eq!(server.requests(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_callers_share_one_failure() {
        let (server, url) = token_server().await;
        let (cache, client, cfg) = (cache(), reqwest::Client::new(), config(&url));
        server.set(|b| {
            b.delay = Duration::from_millis(200);
            b.fail = Some((503, "down".to_owned()));
        });
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (cache, client, cfg) = (cache.clone(), client.clone(), cfg.clone());
                tokio::spawn(async move { cache.token("sub", &cfg, &client).await })
            })
            .collect();
        for task in tasks {
            let err = task.await.expect("task").expect_err("503");
            assert!(
                matches!(err, OAuthError::Status { status: 503, .. }),
                "{err:?}"
            );
        }
        assert_eq!(server.requests(), 1);
    }

    #[tokio::test]
    async fn invalidate_drops_only_the_token_it_names() {
        let (server, url) = token_server().await;
        let (cache, client, cfg) = (cache(), reqwest::Client::new(), config(&url));
        let t1 = cache.token("s", &cfg, &client).await.expect("t");
        cache.invalidate("s", &t1);
        let t2 = cache.token("s", &cfg, &client).await.expect("t");
        assert_eq!((&*t1, &*t2), ("tok-1", "tok-2"));
        // A late 401 for the old token does not throw away the new one.
        cache.invalidate("s", &t1);
        assert_eq!(&*cache.token("s", &cfg, &client).await.expect("t"), "tok-2");
        assert_eq!(server.requests(), 2);
        cache.invalidate("unknown", "tok-2");
    }

    #[tokio::test]
    async fn wrong_credentials_are_a_401_that_is_not_retried() {
        let (server, url) = token_server().await;
        let (cache, client) = (cache(), reqwest::Client::new());
        let mut cfg = config(&url);
        cfg.client_secret = "wrong-secret".to_owned();
        let err = cache.token("s", &cfg, &client).await.expect_err("401");
        match &err {
            OAuthError::Status {
                status,
                body_snippet,
            } => {
                assert_eq!(*status, 401);
                assert!(body_snippet.contains("invalid_client"), "{body_snippet}");
            }
            other => panic!("expected Status, got {other:?}"),
        }
        assert!(!err.is_retriable());
        assert!(!err.to_string().contains("wrong-secret"));
        assert_eq!(server.requests(), 1);
    }

    #[tokio::test]
    async fn server_errors_are_retriable_and_echoed_secrets_are_blanked() {
        let (server, url) = token_server().await;
        let (cache, client, cfg) = (cache(), reqwest::Client::new(), config(&url));
        server.set(|b| b.fail = Some((500, format!("boom; you sent {SECRET}"))));
        let err = cache.token("s", &cfg, &client).await.expect_err("500");
        assert!(
            matches!(err, OAuthError::Status { status: 500, .. }),
            "{err:?}"
        );
        assert!(err.is_retriable());
        let shown = err.to_string();
        assert!(!shown.contains(SECRET), "{shown}");
        assert!(shown.contains("[redacted]"), "{shown}");

        server.set(|b| b.fail = Some((429, String::new())));
        let err = cache.token("s", &cfg, &client).await.expect_err("429");
        assert!(err.is_retriable(), "{err:?}");

        // Recovery needs no reset: the next call fetches.
        server.set(|b| b.fail = None);
        assert_eq!(&*cache.token("s", &cfg, &client).await.expect("t"), "tok-3");
    }

    #[tokio::test]
    async fn a_failed_refresh_keeps_serving_the_unexpired_token() {
        let (server, url) = token_server().await;
        let (cache, client, cfg) = (cache(), reqwest::Client::new(), config(&url));
        // A 10 s lifetime is due for refresh at once (10 s margin) but valid for 10 s.
        server.set(|b| b.expires_in = Value::from(10));
        assert_eq!(&*cache.token("s", &cfg, &client).await.expect("t"), "tok-1");
        server.set(|b| b.fail = Some((503, String::new())));
        assert_eq!(&*cache.token("s", &cfg, &client).await.expect("t"), "tok-1");
        assert_eq!(server.requests(), 2, "the refresh was attempted");
        // Once the receiver rejects it, there is nothing to fall back on.
        cache.invalidate("s", "tok-1");
        let err = cache.token("s", &cfg, &client).await.expect_err("503");
        assert!(err.is_retriable());
    }

    #[tokio::test]
    async fn unusable_token_responses_are_invalid() {
        let (server, url) = token_server().await;
        let (cache, client, cfg) = (cache(), reqwest::Client::new(), config(&url));
        // Non-capturing closures, so plain function pointers.
        type Setup = fn(&mut Behaviour);
        let cases: [(&str, Setup); 6] = [
            ("not JSON", |b| b.raw = Some("<html>".to_owned())),
            ("mac", |b| {
                b.raw = None;
                b.token_type = Some("mac");
            }),
            ("no access_token", |b| {
                b.token_type = None;
                b.raw = Some(r#"{"token_type":"bearer"}"#.to_owned());
            }),
            ("numeric token", |b| {
                b.raw = Some(r#"{"access_token":1234567}"#.to_owned())
            }),
            ("negative lifetime", |b| {
                b.raw = Some(r#"{"access_token":"x","expires_in":-5}"#.to_owned())
            }),
            ("oversized", |b| {
                let pad = "x".repeat(TOKEN_READ_LIMIT);
                b.raw = Some(format!(
                    r#"{{"access_token":"secret-token","pad":"{pad}"}}"#
                ));
            }),
        ];
        for (name, setup) in cases {
            server.set(setup);
            let err = cache.token("s", &cfg, &client).await.expect_err(name);
            assert!(matches!(err, OAuthError::Invalid(_)), "{name}: {err:?}");
            assert!(!err.is_retriable(), "{name}");
            let shown = err.to_string();
            assert!(
                !shown.contains("1234567") && !shown.contains("secret-token"),
                "{shown}"
            );
        }
        // A token type is accepted in any case, or when absent.
        server.set(|b| {
            b.raw = None;
            b.token_type = None;
        });
        assert!(cache.token("s", &cfg, &client).await.is_ok());
        server.set(|b| b.token_type = Some("BEARER"));
        cache.invalidate("s", "tok-7");
        assert_eq!(&*cache.token("s", &cfg, &client).await.expect("t"), "tok-8");
    }

    #[tokio::test]
    async fn refused_destinations_are_not_requested() {
        let (server, url) = token_server().await;
        let client = reqwest::Client::new();
        let deny_all = TokenCache::new(Arc::new(IpPolicy::default()));
        let err = deny_all
            .token("s", &config(&url), &client)
            .await
            .expect_err("loopback is refused");
        assert!(matches!(err, OAuthError::Destination(_)), "{err:?}");
        assert!(!err.is_retriable());
        assert_eq!(server.requests(), 0);

        let err = cache()
            .token("s", &config("not a url"), &client)
            .await
            .expect_err("bad URL");
        assert!(matches!(err, OAuthError::Invalid(_)), "{err:?}");
    }

    #[tokio::test]
    async fn an_unreachable_server_is_a_retriable_request_error() {
        // Bind and drop: nothing listens on the port any more.
        let port = {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            l.local_addr().expect("addr").port()
        };
        let cfg = config(&format!("http://127.0.0.1:{port}/token"));
        let err = cache()
            .token("s", &cfg, &reqwest::Client::new())
            .await
            .expect_err("refused");
        assert!(matches!(err, OAuthError::Request(_)), "{err:?}");
        assert!(err.is_retriable());
    }

    #[tokio::test]
    async fn forget_and_prune_bound_the_cache() {
        let (server, url) = token_server().await;
        let (cache, client, cfg) = (cache(), reqwest::Client::new(), config(&url));
        cache.token("a", &cfg, &client).await.expect("t");
        cache.token("b", &cfg, &client).await.expect("t");
        assert_eq!(cache.len(), 2);
        cache.forget("a");
        assert_eq!(cache.len(), 1);
        // A failed fetch leaves an entry with no token: prunable; a live token is kept.
        server.set(|b| b.fail = Some((500, String::new())));
        cache.token("c", &cfg, &client).await.expect_err("500");
        assert_eq!(cache.len(), 2);
        cache.prune();
        assert_eq!(cache.len(), 1);
        assert_eq!(&*cache.token("b", &cfg, &client).await.expect("t"), "tok-2");
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let mut cfg = config("https://user:pw-in-url@auth.example/token");
        cfg.token_headers
            .insert("x-api-key".to_owned(), "header-secret".to_owned());
        let shown = format!("{cfg:?}");
        for secret in [SECRET, "pw-in-url", "header-secret"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains(ID) && shown.contains("x-api-key"), "{shown}");
        assert!(format!("{:?}", cache()).contains("TokenCache"));
        let header = bearer_header("tok-1").expect("header");
        assert!(header.is_sensitive());
        assert_eq!(header.to_str().expect("ascii"), "Bearer tok-1");
    }
}
