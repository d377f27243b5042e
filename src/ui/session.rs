//! Sign-in, sessions, cookies and CSRF: who is looking at a page.
//!
//! Signing in with an API key (the form's field is labelled `API key`) or opening a portal link
//! makes a session: 32 random bytes in an `HttpOnly`, `SameSite=Strict` cookie scoped to `/ui`
//! (`Secure` when the request came over TLS), and in memory the principal, a CSRF token and an
//! expiry. The key itself is not kept: the session is the key's proof, for its lifetime
//! (`UiConfig::session_ttl`, default 8 h), or until sign-out. Sessions live in this process's
//! memory only, so a restart signs everyone out.
//!
//! Invariants:
//! - The store holds SHA-256 digests of the session tokens, never the tokens.
//! - It is bounded (`UiConfig::max_sessions`): expired sessions are dropped first, then the
//!   oldest; the lock is never held across an `.await`.
//! - Every POST carries the session's CSRF token (a hidden `csrf` field), compared in constant
//!   time, and a POST whose `Origin` names another host is refused. The sign-in form, which has
//!   no session yet, uses a short-lived cookie and the same value in the form (double submit),
//!   so another site cannot sign a browser in under its own key.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use askama::Template;
use axum::Router;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::UiState;
use super::error::{UiError, UiResult};
use super::form::Form;
use super::view::{Chrome, render};
use crate::domain::{Principal, TenantId};

/// The session cookie.
pub(super) const SESSION_COOKIE: &str = "hookline_session";
/// The sign-in form's double-submit cookie.
pub(super) const LOGIN_COOKIE: &str = "hookline_login";
/// How long a sign-in form stays usable.
const LOGIN_TTL: Duration = Duration::from_secs(30 * 60);

/// One signed-in browser.
#[derive(Debug, Clone)]
struct Session {
    principal: Principal,
    csrf: String,
    portal: bool,
    expires: Instant,
}

/// The sessions of this process (see the module docs).
#[derive(Debug)]
pub(super) struct Sessions {
    ttl: Duration,
    max: usize,
    by_digest: Mutex<HashMap<[u8; 32], Session>>,
}

/// A fresh random token: 32 bytes, base64url.
pub(super) fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Whether two secrets are equal, in time independent of where they differ.
pub(super) fn same_secret(a: &str, b: &str) -> bool {
    // Comparing digests makes the time independent of the lengths too.
    let (a, b) = (digest(a), digest(b));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

impl Sessions {
    pub(super) fn new(ttl: Duration, max: usize) -> Sessions {
        Sessions {
            ttl,
            max: max.max(1),
            by_digest: Mutex::new(HashMap::new()),
        }
    }

    /// Starts a session for `principal`; returns its token (for the cookie only).
    pub(super) fn start(&self, principal: Principal, portal: bool) -> String {
        self.start_at(principal, portal, Instant::now())
    }

    fn start_at(&self, principal: Principal, portal: bool, now: Instant) -> String {
        let token = random_token();
        let session = Session {
            principal,
            csrf: random_token(),
            portal,
            expires: now + self.ttl,
        };
        let Ok(mut map) = self.by_digest.lock() else {
            return token;
        };
        if map.len() >= self.max {
            map.retain(|_, s| s.expires > now);
        }
        while map.len() >= self.max {
            let oldest = map.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k);
            match oldest {
                Some(k) => map.remove(&k),
                None => break,
            };
        }
        map.insert(digest(&token), session);
        token
    }

    fn get(&self, token: &str) -> Option<Session> {
        self.get_at(token, Instant::now())
    }

    fn get_at(&self, token: &str, now: Instant) -> Option<Session> {
        let key = digest(token);
        let mut map = self.by_digest.lock().ok()?;
        match map.get(&key) {
            Some(s) if s.expires > now => Some(s.clone()),
            Some(_) => {
                map.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Ends a session (sign-out).
    pub(super) fn end(&self, token: &str) {
        if let Ok(mut map) = self.by_digest.lock() {
            map.remove(&digest(token));
        }
    }

    /// Sessions held now, expired ones included until they are next touched.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_digest.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub(super) fn ttl(&self) -> Duration {
        self.ttl
    }
}

/// A cookie's value from the request's `Cookie` headers.
pub(super) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether the request arrived over TLS (directly, or through a proxy that says so).
fn over_tls(headers: &HeaderMap) -> bool {
    let forwarded_proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"));
    let forwarded = headers
        .get(header::FORWARDED)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("proto=https"));
    forwarded_proto || forwarded
}

/// A `Set-Cookie` value: `HttpOnly`, `SameSite=Strict`, `Path=/ui`, `Secure` over TLS;
/// `max_age` zero deletes the cookie.
pub(super) fn set_cookie(
    state: &UiState,
    headers: &HeaderMap,
    name: &str,
    value: &str,
    max_age: Duration,
) -> HeaderValue {
    let secure = if state.cfg.always_secure_cookies || over_tls(headers) {
        "; Secure"
    } else {
        ""
    };
    let text = format!(
        "{name}={value}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        max_age.as_secs()
    );
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("invalid=1"))
}

/// Where to go after signing in: a dashboard path, never another site.
pub(super) fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with("/ui/")
                && !n.starts_with("//")
                && !n.contains('\\')
                && !n.chars().any(char::is_control) =>
        {
            n.to_owned()
        }
        _ => "/ui/".to_owned(),
    }
}

/// The signed-in viewer of a request, as a handler's extractor. Without a live session the
/// request is sent to the sign-in page; a POST from another origin is refused.
#[derive(Debug, Clone)]
pub(super) struct Viewer {
    pub principal: Principal,
    pub csrf: String,
    pub portal: bool,
}

impl FromRequestParts<UiState> for Viewer {
    type Rejection = UiError;

    async fn from_request_parts(parts: &mut Parts, state: &UiState) -> Result<Self, UiError> {
        let session = cookie(&parts.headers, SESSION_COOKIE).and_then(|t| state.sessions.get(t));
        let Some(s) = session else {
            let next = if parts.method == Method::GET {
                parts
                    .uri
                    .path_and_query()
                    .map_or("/ui/", |p| p.as_str())
                    .to_owned()
            } else {
                "/ui/".to_owned()
            };
            return Err(UiError::SignIn {
                next,
                htmx: parts.headers.contains_key("hx-request"),
            });
        };
        if parts.method != Method::GET && parts.method != Method::HEAD {
            check_origin(&parts.headers)?;
        }
        Ok(Viewer {
            principal: s.principal,
            csrf: s.csrf,
            portal: s.portal,
        })
    }
}

/// Refuses a state change whose `Origin` names another host than the one it was sent to.
fn check_origin(headers: &HeaderMap) -> UiResult<()> {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_host = origin.split_once("://").map(|(_, h)| h);
    if origin_host.is_some() && origin_host == host {
        Ok(())
    } else {
        Err(UiError::Forbidden(
            "this form was sent from another site".into(),
        ))
    }
}

impl Viewer {
    pub(super) fn is_admin(&self) -> bool {
        matches!(self.principal, Principal::Admin)
    }

    /// The tenant a tenant viewer is scoped to; `None` for the admin.
    pub(super) fn own_tenant(&self) -> Option<&TenantId> {
        match &self.principal {
            Principal::Admin => None,
            Principal::Tenant(t) => Some(t),
        }
    }

    /// `Ok` when the viewer may see `tenant`'s resources; otherwise the 404 a missing resource
    /// gets, so that a tenant cannot probe for another's ids.
    pub(super) fn may_see(&self, tenant: &TenantId, kind: &str, id: &str) -> UiResult<()> {
        if self.principal.can_access(tenant) {
            Ok(())
        } else {
            Err(UiError::NotFound(format!("{kind} {id} not found")))
        }
    }

    /// Refuses a form without this session's CSRF token.
    pub(super) fn check_csrf<const L: usize>(&self, form: &Form<L>) -> UiResult<()> {
        match form.get("csrf") {
            Some(t) if same_secret(t, &self.csrf) => Ok(()),
            _ => Err(UiError::Forbidden(
                "the form's security token is missing or stale; reload the page and try again"
                    .into(),
            )),
        }
    }

    pub(super) fn chrome(&self, nav: &'static str) -> Chrome {
        Chrome::signed_in(&self.principal, &self.csrf, self.portal, nav)
    }
}

pub(super) fn routes() -> Router<UiState> {
    Router::new()
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", post(logout))
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    chrome: Chrome,
    csrf: String,
    next: String,
    error: Option<&'static str>,
}

#[derive(Deserialize)]
struct NextQuery {
    next: Option<String>,
}

/// The sign-in page with a fresh double-submit token (cookie and form field).
fn login_form(
    state: &UiState,
    headers: &HeaderMap,
    next: String,
    error: Option<&'static str>,
) -> UiResult<Response> {
    let csrf = random_token();
    let page = LoginPage {
        chrome: Chrome::anonymous(),
        csrf: csrf.clone(),
        next,
        error,
    };
    let status = if error.is_some() {
        axum::http::StatusCode::UNAUTHORIZED
    } else {
        axum::http::StatusCode::OK
    };
    let cookie = set_cookie(state, headers, LOGIN_COOKIE, &csrf, LOGIN_TTL);
    Ok((status, [(header::SET_COOKIE, cookie)], render(&page)?).into_response())
}

async fn login_page(
    State(state): State<UiState>,
    headers: HeaderMap,
    Query(q): Query<NextQuery>,
) -> UiResult<Response> {
    let next = safe_next(q.next.as_deref());
    if cookie(&headers, SESSION_COOKIE).is_some_and(|t| state.sessions.get(t).is_some()) {
        return Ok(Redirect::to(&next).into_response());
    }
    login_form(&state, &headers, next, None)
}

async fn login(
    State(state): State<UiState>,
    headers: HeaderMap,
    form: Form<8192>,
) -> UiResult<Response> {
    check_origin(&headers)?;
    let next = safe_next(form.get("next"));
    let double_submit = match (cookie(&headers, LOGIN_COOKIE), form.get("csrf")) {
        (Some(c), Some(f)) => same_secret(c, f),
        _ => false,
    };
    if !double_submit {
        return Err(UiError::Forbidden(
            "the sign-in form expired or came from another site; reload it and try again".into(),
        ));
    }
    let principal = match form.get("key") {
        Some(key) => state.engine.authenticate(key).await?,
        None => None,
    };
    let Some(principal) = principal else {
        return login_form(&state, &headers, next, Some("That API key is not valid."));
    };
    let token = state.sessions.start(principal, false);
    Ok(signed_in(&state, &headers, &token, &next))
}

/// The answer that completes a sign-in: the session cookie, the sign-in cookie cleared, and a
/// redirect to `next`.
pub(super) fn signed_in(state: &UiState, headers: &HeaderMap, token: &str, next: &str) -> Response {
    let session = set_cookie(state, headers, SESSION_COOKIE, token, state.sessions.ttl());
    let clear = set_cookie(state, headers, LOGIN_COOKIE, "", Duration::ZERO);
    let mut r = Redirect::to(next).into_response();
    r.headers_mut().append(header::SET_COOKIE, session);
    r.headers_mut().append(header::SET_COOKIE, clear);
    r
}

async fn logout(
    State(state): State<UiState>,
    headers: HeaderMap,
    viewer: Viewer,
    form: Form<4096>,
) -> UiResult<Response> {
    viewer.check_csrf(&form)?;
    if let Some(t) = cookie(&headers, SESSION_COOKIE) {
        state.sessions.end(t);
    }
    let clear = set_cookie(&state, &headers, SESSION_COOKIE, "", Duration::ZERO);
    let mut r = Redirect::to("/ui/login").into_response();
    r.headers_mut().append(header::SET_COOKIE, clear);
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_and_end() {
        let s = Sessions::new(Duration::from_secs(60), 10);
        let now = Instant::now();
        let t = s.start_at(Principal::Admin, false, now);
        assert!(s.get_at(&t, now + Duration::from_secs(59)).is_some());
        assert!(s.get("not-a-token").is_none());
        assert!(
            s.get_at(&t, now + Duration::from_secs(61)).is_none(),
            "expired"
        );
        assert_eq!(s.len(), 0, "an expired session is dropped when touched");
        let t2 = s.start(Principal::Tenant("acme".into()), true);
        s.end(&t2);
        assert!(s.get(&t2).is_none(), "signed out");
    }

    #[test]
    fn the_store_is_bounded_and_drops_the_oldest() {
        let s = Sessions::new(Duration::from_secs(60), 3);
        let now = Instant::now();
        let first = s.start_at(Principal::Admin, false, now);
        let later = now + Duration::from_secs(1);
        let rest: Vec<String> = (0..3)
            .map(|_| s.start_at(Principal::Admin, false, later))
            .collect();
        assert_eq!(s.len(), 3);
        assert!(s.get(&first).is_none(), "the oldest went first");
        assert!(rest.iter().all(|t| s.get(t).is_some()));
    }

    #[test]
    fn next_stays_on_the_dashboard() {
        assert_eq!(
            safe_next(Some("/ui/subscriptions?state=blocked")),
            "/ui/subscriptions?state=blocked"
        );
        for bad in [
            "https://evil.example/",
            "//evil.example/ui/",
            "/v1/tenants",
            "/ui\\x",
            "/ui/\nx",
        ] {
            assert_eq!(safe_next(Some(bad)), "/ui/", "{bad:?}");
        }
        assert_eq!(safe_next(None), "/ui/");
    }

    #[test]
    fn cookies_are_found_among_others_and_secrets_compare_whole() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; hookline_session=tok; b=2"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("tok"));
        assert_eq!(cookie(&h, LOGIN_COOKIE), None);
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
    }

    #[test]
    fn a_cross_origin_post_is_refused() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(
            check_origin(&h).is_ok(),
            "no Origin: same-site form or a tool"
        );
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(check_origin(&h).is_ok());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(check_origin(&h).is_err());
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(check_origin(&h).is_err());
    }
}
