//! Sending one attempt: builds the HTTP request a subscription is owed and reports what happened.
//!
//! Plain code, no actors: a [`Sender`] wraps one shared `reqwest::Client` (rustls, connection pool,
//! redirects never followed) and turns an [`AttemptRequest`] into an [`AttemptResult`]. A
//! subscription with `tls` settings (a client certificate, its own CA) gets a client of its own,
//! built with the same settings plus its TLS ones and cached until they change. The whole
//! attempt, body read included, is bounded by the subscription's timeout, and at most
//! [`SNIPPET_LIMIT`] bytes of the response are kept (reading stops at [`READ_LIMIT`]), so a
//! hostile receiver cannot hold a delivery or our memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use reqwest::header::{
    AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER, USER_AGENT,
};

use super::{AttemptOutcome, AttemptRequest, AttemptResult};
use crate::config::{EngineConfig, ProxyUrl};
use crate::domain::ReceiverAuth;
use crate::domain::SubscriptionId;
use crate::domain::clock::now_ms;
use crate::error::error_chain;
use crate::error::{Error, Result};
use crate::outbound::oauth::{OAuth2Config, OAuthError, TokenCache, bearer_header};
use crate::policy::{ErrorKind, parse_retry_after};
use crate::security::signing::signature_header;
use crate::security::ssrf::{
    IpPolicy, SsrfError, SsrfResolver, check_url, find_in_chain, resolve_checked,
};

/// Response bytes kept in the attempt log.
pub(crate) const SNIPPET_LIMIT: usize = 4 * 1024;
/// Response bytes read at most (the rest is abandoned with the connection).
pub(crate) const READ_LIMIT: usize = 64 * 1024;
pub(crate) use crate::domain::CONTENT_TYPE_JSON;

/// A subscription's own client and the digest of the `tls` settings it was built with.
type TlsClient = ([u8; 32], reqwest::Client);

/// Sends attempts over one shared HTTP client (or a subscription's own, for `tls`).
#[derive(Debug, Clone)]
pub(crate) struct Sender {
    client: reqwest::Client,
    /// Clients of subscriptions with `tls`, with the digest of the settings they were built with.
    tls_clients: Arc<Mutex<HashMap<SubscriptionId, TlsClient>>>,
    connect_timeout: Duration,
    proxy: Option<ProxyUrl>,
    user_agent: HeaderValue,
    policy: Arc<IpPolicy>,
    tokens: TokenCache,
    /// Deliveries go through a proxy, which resolves target names itself.
    proxied: bool,
    dns_timeout: Duration,
}

impl Sender {
    pub(crate) fn new(cfg: &EngineConfig) -> Result<Sender> {
        let policy = Arc::new(IpPolicy::new(cfg.allow_networks.clone()));
        let client = client_builder(&policy, cfg.connect_timeout, cfg.proxy.as_ref())?
            .build()
            .map_err(|e| Error::Internal(format!("HTTP client: {e}")))?;
        let user_agent = HeaderValue::from_static(concat!("hookline/", env!("CARGO_PKG_VERSION")));
        Ok(Sender {
            client,
            tls_clients: Arc::default(),
            connect_timeout: cfg.connect_timeout,
            proxy: cfg.proxy.clone(),
            user_agent,
            tokens: TokenCache::new(policy.clone()),
            policy,
            proxied: cfg.proxy.is_some(),
            dns_timeout: cfg.connect_timeout,
        })
    }

    /// The client for a request: the shared one, or the subscription's own when it has `tls`
    /// settings (built on first use, rebuilt when the settings change).
    fn client_for(
        &self,
        req: &AttemptRequest,
    ) -> std::result::Result<reqwest::Client, AttemptOutcome> {
        let Some(tls) = &req.tls else {
            return Ok(self.client.clone());
        };
        let digest = tls.digest();
        let cached = self
            .tls_clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&req.subscription)
            .filter(|(d, _)| *d == digest)
            .map(|(_, c)| c.clone());
        if let Some(client) = cached {
            return Ok(client);
        }
        let client = client_builder(&self.policy, self.connect_timeout, self.proxy.as_ref())
            .and_then(|b| tls.configure(b))
            .and_then(|b| {
                b.build()
                    .map_err(|e| Error::invalid("tls", error_chain(&e)))
            })
            .map_err(|e| AttemptOutcome::Failed {
                kind: ErrorKind::InvalidRequest,
                message: format!("TLS settings unusable: {e}"),
            })?;
        self.tls_clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(req.subscription.clone(), (digest, client.clone()));
        Ok(client)
    }

    /// The address policy deliveries follow (also used to validate subscription URLs).
    pub(crate) fn policy(&self) -> &IpPolicy {
        &self.policy
    }

    fn headers(&self, req: &AttemptRequest, body: &[u8]) -> std::result::Result<HeaderMap, String> {
        let mut h = HeaderMap::with_capacity(7 + req.headers.len());
        match &req.transformed_headers {
            None => {
                for (name, value) in &req.headers {
                    let name =
                        HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
                    let value = HeaderValue::from_str(value).map_err(|e| e.to_string())?;
                    h.insert(name, value);
                }
                h.insert(CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE_JSON));
            }
            // Already checked by the transform's output rules; auth and webhook-* headers set
            // below override anything of the same name.
            Some(list) => {
                for (name, value) in list {
                    let name =
                        HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
                    let value = HeaderValue::from_str(value).map_err(|e| e.to_string())?;
                    h.append(name, value);
                }
                if !h.contains_key(CONTENT_TYPE) {
                    h.insert(CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE_JSON));
                }
            }
        }
        h.insert(USER_AGENT, self.user_agent.clone());
        if let Some(key) = &req.access_key {
            let mut v = HeaderValue::from_str(key)
                .map_err(|_| "access key is not a valid header value".to_string())?;
            v.set_sensitive(true);
            h.insert(HeaderName::from_static("access-key"), v);
        }
        insert_auth(&mut h, req.auth.as_ref())?;
        let id = req.event_id.as_str();
        h.insert(
            HeaderName::from_static("webhook-id"),
            HeaderValue::from_str(id).map_err(|e| e.to_string())?,
        );
        if let Some(seq) = req.sequence {
            h.insert(
                HeaderName::from_static("webhook-sequence"),
                HeaderValue::from(seq),
            );
        }
        let ts = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        h.insert(
            HeaderName::from_static("webhook-timestamp"),
            HeaderValue::from(ts),
        );
        // Signed over the exact bytes sent, with the same timestamp as the header.
        let secrets = req.signing.active(now_ms()).map_err(|e| e.to_string())?;
        let ed = req.signing.ed25519_key().map_err(|e| e.to_string())?;
        if !secrets.is_empty() || ed.is_some() {
            let sig =
                signature_header(&secrets, ed.as_ref(), id, ts, body).map_err(|e| e.to_string())?;
            h.insert(
                HeaderName::from_static("webhook-signature"),
                HeaderValue::from_str(&sig).map_err(|e| e.to_string())?,
            );
        }
        Ok(h)
    }

    /// Makes one attempt. Never fails: every problem is an [`AttemptOutcome::Failed`].
    pub(crate) async fn send(&self, req: &AttemptRequest) -> AttemptResult {
        let started_at = now_ms();
        let start = tokio::time::Instant::now();
        // The timeout bounds everything, the token fetch of OAuth2 receivers included.
        let outcome = match tokio::time::timeout(req.timeout, self.attempt(req)).await {
            Ok(o) => o,
            Err(_) => AttemptOutcome::Failed {
                kind: ErrorKind::Timeout,
                message: format!("no complete response within {} ms", req.timeout.as_millis()),
            },
        };
        AttemptResult {
            started_at,
            duration: start.elapsed(),
            outcome,
            transform_log: None,
        }
    }

    async fn attempt(&self, req: &AttemptRequest) -> AttemptOutcome {
        let mut headers = match self.prepare(req) {
            Err(refused) => return refused,
            Ok(h) => h,
        };
        let client = match self.client_for(req) {
            Err(refused) => return refused,
            Ok(c) => c,
        };
        if self.proxied
            && let Err(refused) = self.check_proxied_target(&req.url).await
        {
            return refused;
        }
        let Some(ReceiverAuth::Oauth2 {
            token_url,
            client_id,
            client_secret,
            scope,
            token_headers,
            ..
        }) = &req.auth
        else {
            return exchange(&client, req, headers).await;
        };
        let cfg = OAuth2Config {
            token_url: token_url.clone(),
            client_id: client_id.clone(),
            client_secret: client_secret.clone(),
            scope: scope.clone(),
            token_headers: token_headers.clone(),
        };
        let key = req.subscription.as_str();
        let mut retried = false;
        loop {
            // The token request goes through the same client: a gateway that wants the client
            // certificate on its API usually wants it on its token endpoint too.
            let token = match self.tokens.token(key, &cfg, &client).await {
                Ok(t) => t,
                Err(e) => return token_failed(&e),
            };
            match bearer_header(&token) {
                Ok(v) => headers.insert(AUTHORIZATION, v),
                Err(e) => return token_failed(&e),
            };
            let out = exchange(&client, req, headers.clone()).await;
            match out {
                // The token may have been revoked early: refresh it once and try again.
                AttemptOutcome::Response { status: 401, .. } if !retried => {
                    self.tokens.invalidate(key, &token);
                    retried = true;
                }
                other => return other,
            }
        }
    }

    /// Forgets what is cached for a subscription (its OAuth2 token, its TLS client).
    pub(crate) fn forget(&self, subscription: &SubscriptionId) {
        self.tokens.forget(subscription.as_str());
        self.tls_clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(subscription);
    }

    /// Through a proxy our resolver never sees the target's name (the proxy resolves it), so the
    /// same address rules are applied by resolving it here first. The proxy resolves it again:
    /// a DNS-rebinding window remains, which the proxy's own egress rules must close.
    async fn check_proxied_target(&self, url: &str) -> std::result::Result<(), AttemptOutcome> {
        let Ok(url) = url::Url::parse(url) else {
            return Ok(()); // prepare() has already refused it
        };
        if let Some(url::Host::Domain(name)) = url.host() {
            resolve_checked(name, &self.policy, self.dns_timeout)
                .await
                .map_err(|e| classify_ssrf(&e, e.to_string()))?;
        }
        Ok(())
    }

    /// Checks the destination and builds the headers; a refusal is the attempt's outcome.
    fn prepare(&self, req: &AttemptRequest) -> std::result::Result<HeaderMap, AttemptOutcome> {
        let url = url::Url::parse(&req.url).map_err(|e| AttemptOutcome::Failed {
            kind: ErrorKind::InvalidRequest,
            message: format!("bad URL: {e}"),
        })?;
        check_url(&url, &self.policy).map_err(|e| classify_ssrf(&e, e.to_string()))?;
        self.headers(req, &req.body)
            .map_err(|message| AttemptOutcome::Failed {
                kind: ErrorKind::InvalidRequest,
                message,
            })
    }
}

/// The receiver's own authentication headers (OAuth2's token is added per attempt).
fn insert_auth(h: &mut HeaderMap, auth: Option<&ReceiverAuth>) -> std::result::Result<(), String> {
    match auth {
        Some(ReceiverAuth::AccessKey { key }) => {
            let mut v = HeaderValue::from_str(key).map_err(|_| "bad access key".to_string())?;
            v.set_sensitive(true);
            h.insert(HeaderName::from_static("access-key"), v);
        }
        Some(ReceiverAuth::Basic { username, password }) => {
            let creds =
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
            let mut v = HeaderValue::from_str(&format!("Basic {creds}"))
                .map_err(|_| "bad basic credentials".to_string())?;
            v.set_sensitive(true);
            h.insert(AUTHORIZATION, v);
        }
        Some(ReceiverAuth::Bearer { token }) => {
            let mut v = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| "bad bearer token".to_string())?;
            v.set_sensitive(true);
            h.insert(AUTHORIZATION, v);
        }
        Some(ReceiverAuth::Oauth2 { headers, .. }) => {
            for (name, value) in headers {
                let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
                let value = HeaderValue::from_str(value).map_err(|e| e.to_string())?;
                h.insert(name, value);
            }
        }
        None => {}
    }
    Ok(())
}

/// The client settings every delivery uses, whether through the shared client or a
/// subscription's own.
fn client_builder(
    policy: &Arc<IpPolicy>,
    connect_timeout: Duration,
    proxy: Option<&ProxyUrl>,
) -> Result<reqwest::ClientBuilder> {
    let builder = reqwest::Client::builder()
        // Every name is resolved once, checked, and only the checked addresses are dialled.
        .dns_resolver(Arc::new(
            SsrfResolver::new(policy.clone()).with_timeout(connect_timeout),
        ))
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(connect_timeout)
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true);
    // Proxies come from our configuration only, never from the environment.
    Ok(match proxy {
        None => builder.no_proxy(),
        Some(p) => builder.proxy(
            reqwest::Proxy::all(p.as_url().clone()).map_err(|e| Error::invalid("proxy", e))?,
        ),
    })
}

async fn exchange(
    client: &reqwest::Client,
    req: &AttemptRequest,
    headers: HeaderMap,
) -> AttemptOutcome {
    let sent = client
        .post(&req.url)
        .headers(headers)
        .body(req.body.to_vec())
        .send()
        .await;
    let mut resp = match sent {
        Ok(r) => r,
        Err(e) => return failed(&e),
    };
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()));
    let disable = resp
        .headers()
        .get("webhook-delivery")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("disable"));
    let mut kept: Vec<u8> = Vec::new();
    let mut read = 0usize;
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                read += chunk.len();
                if kept.len() < SNIPPET_LIMIT {
                    let take = (SNIPPET_LIMIT - kept.len()).min(chunk.len());
                    kept.extend_from_slice(&chunk[..take]);
                }
                if read >= READ_LIMIT {
                    break;
                }
            }
            Ok(None) => break,
            // A 2xx whose body broke off was not fully received: count it as a reset.
            Err(e) => return failed(&e),
        }
    }
    let snippet = (!kept.is_empty()).then(|| snippet_text(&kept));
    AttemptOutcome::Response {
        status,
        retry_after,
        snippet,
        disable,
    }
}

/// The kept bytes as text of at most [`SNIPPET_LIMIT`] bytes: a character cut by the limit is
/// dropped rather than replaced (a replacement character would push it past the limit).
fn snippet_text(kept: &[u8]) -> String {
    let kept = match std::str::from_utf8(kept) {
        Err(e) if e.error_len().is_none() => &kept[..e.valid_up_to()],
        _ => kept,
    };
    let mut s = String::from_utf8_lossy(kept).into_owned();
    while s.len() > SNIPPET_LIMIT {
        s.pop();
    }
    s
}

/// A token endpoint failure: retried when the token server may recover, failed otherwise (bad
/// credentials or configuration need an operator).
fn token_failed(e: &OAuthError) -> AttemptOutcome {
    if let OAuthError::Destination(ssrf) = e {
        return classify_ssrf(ssrf, e.to_string());
    }
    let kind = if e.is_retriable() {
        ErrorKind::TokenUnavailable
    } else {
        ErrorKind::TokenRefused
    };
    AttemptOutcome::Failed {
        kind,
        message: e.to_string(),
    }
}

fn classify_ssrf(e: &SsrfError, message: String) -> AttemptOutcome {
    let kind = if e.is_blocked() {
        ErrorKind::BlockedAddress
    } else {
        ErrorKind::Dns
    };
    AttemptOutcome::Failed { kind, message }
}

fn failed(e: &reqwest::Error) -> AttemptOutcome {
    if let Some(ssrf) = find_in_chain(e) {
        return classify_ssrf(ssrf, error_chain(e));
    }
    let kind = if e.is_timeout() {
        ErrorKind::Timeout
    } else if e.is_builder() {
        ErrorKind::InvalidRequest
    } else if e.is_connect() {
        ErrorKind::Connect
    } else {
        ErrorKind::Reset
    };
    AttemptOutcome::Failed {
        kind,
        message: error_chain(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippets_never_exceed_the_limit() {
        let mut body = b"x".to_vec();
        body.extend("é".repeat(5000).as_bytes());
        let s = snippet_text(&body[..SNIPPET_LIMIT]);
        assert!(s.len() <= SNIPPET_LIMIT);
        assert!(s.ends_with('é'));
        let s = snippet_text(&[0xff; SNIPPET_LIMIT]);
        assert!(
            s.len() <= SNIPPET_LIMIT,
            "invalid bytes replaced within the limit"
        );
        assert_eq!(snippet_text(b"ok"), "ok");
    }
}
