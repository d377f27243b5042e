//! The token cache against a local token server: caching, refresh, single flight, failures,
//! and what never shows in errors or `Debug` output.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use reqwest::header::{AUTHORIZATION, HeaderMap};
use serde_json::Value;
use url::form_urlencoded;

use super::{
    OAuth2Config, OAuthError, TOKEN_READ_LIMIT, TokenCache, bearer_header, lock, refresh_margin,
};
use crate::security::ssrf::IpPolicy;

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
