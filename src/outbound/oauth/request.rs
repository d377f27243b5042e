//! The token request (RFC 6749 §4.4 client credentials) and the parsing of its answer. Every
//! error names fields and positions only, never a credential or a token.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use reqwest::header::{
    ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, USER_AGENT,
};
use serde_json::Value;
use url::{Url, form_urlencoded};

use super::{
    BODY_SNIPPET_LIMIT, DEFAULT_LIFETIME, ERROR_READ_LIMIT, MAX_LIFETIME, OAuth2Config, OAuthError,
    TOKEN_READ_LIMIT, TOKEN_TIMEOUT,
};
use crate::error::error_chain;
use crate::security::ssrf::{self, IpPolicy};

/// A token as the server issued it.
pub(super) struct Issued {
    pub token: Arc<str>,
    pub lifetime: Duration,
}

/// Fetches a token for `cfg` with `client`, once its URL passed `policy`; bounded by
/// [`TOKEN_TIMEOUT`].
pub(super) async fn fetch(
    cfg: &OAuth2Config,
    client: &reqwest::Client,
    policy: &IpPolicy,
) -> Result<Issued, OAuthError> {
    let url = Url::parse(&cfg.token_url)
        .map_err(|e| OAuthError::Invalid(format!("the token URL is not a valid URL: {e}")))?;
    ssrf::check_url(&url, policy)?;
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
