//! Outbound security: Standard Webhooks signatures checked by the reference Python library (as a
//! real receiver would), secret rotation, ed25519 `v1a`, destinations refused by the SSRF guard
//! (a loopback listener must see no connection at all), and receiver-driven disabling.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use hookline::{DeliveryStatus, Error, NewSubscription, SubscriptionState};

use crate::support::receiver::{Recorded, Reply};
use crate::support::{Receiver, TENANT, TestEngine, WITHIN, builder, event, retry};

/// The pinned reference library, installed once into a project-local directory under
/// `target/` (never into the system's site-packages). Many tests, and several test processes
/// under a runner such as nextest, ask at the same moment: a file lock lets one install while
/// the others wait, and the install goes to a scratch directory renamed into place only once
/// complete, so nobody ever imports a half-written package.
const STANDARDWEBHOOKS: &str = "standardwebhooks==1.0.0";

/// The directory to put on `PYTHONPATH` for the reference library.
fn standardwebhooks_path() -> &'static std::path::Path {
    static PATH: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let root = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("pyref");
        std::fs::create_dir_all(&root).expect("create target/tmp/pyref");
        let site = root.join(STANDARDWEBHOOKS.replace("==", "-"));
        let lock = std::fs::File::create(root.join(".lock")).expect("create the install lock");
        lock.lock().expect("take the install lock");
        let imports = |dir: &std::path::Path| {
            Command::new("python3")
                .args(["-c", "import standardwebhooks"])
                .env("PYTHONPATH", dir)
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        };
        if !(site.is_dir() && imports(&site)) {
            let scratch = root.join(format!("install-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&scratch);
            let out = Command::new("python3")
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                ])
                .arg("--target")
                .arg(&scratch)
                .arg(STANDARDWEBHOOKS)
                .output()
                .expect("run python3 -m pip (python3 with pip is needed to verify signatures)");
            assert!(
                out.status.success(),
                "installing {STANDARDWEBHOOKS} from PyPI into {} failed: {}",
                scratch.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            let _ = std::fs::remove_dir_all(&site);
            std::fs::rename(&scratch, &site).expect("move the installed library into place");
            assert!(
                imports(&site),
                "{STANDARDWEBHOOKS} installed but does not import"
            );
        }
        site
    })
}

/// Makes sure the reference library is ready before a test starts its engine.
fn ensure_standardwebhooks() {
    standardwebhooks_path();
}

/// Verifies a received request with `standardwebhooks.Webhook(secret).verify(body, headers)`:
/// true if it verifies, false if the library refuses it (`WebhookVerificationError`). Anything
/// else (python3 or the library failing) fails the test, so that an assertion of a refusal
/// cannot pass on a broken interpreter.
fn reference_verifies(secret: &str, r: &Recorded) -> bool {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("req.json");
    let headers: serde_json::Map<String, serde_json::Value> =
        ["webhook-id", "webhook-timestamp", "webhook-signature"]
            .iter()
            .map(|h| ((*h).to_string(), r.header(h).unwrap_or_default().into()))
            .collect();
    let doc = serde_json::json!({
        "secret": secret,
        "body": String::from_utf8_lossy(&r.body),
        "headers": headers,
    });
    std::fs::write(&input, serde_json::to_vec(&doc).expect("json")).expect("write input");
    let script = "import json, sys\n\
        from standardwebhooks.webhooks import Webhook, WebhookVerificationError\n\
        d = json.load(open(sys.argv[1]))\n\
        try:\n\
        \x20   Webhook(d['secret']).verify(d['body'], d['headers'])\n\
        except WebhookVerificationError:\n\
        \x20   sys.exit(3)\n";
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(&input)
        .env("PYTHONPATH", standardwebhooks_path())
        .output()
        .expect("run python3");
    match out.status.code() {
        Some(0) => true,
        Some(3) => false,
        other => panic!(
            "the reference library failed (exit {other:?}): {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_verify_with_the_reference_library_across_rotation() {
    ensure_standardwebhooks();
    let rx = Receiver::start().await;
    let h = TestEngine::start().await;
    let s = h
        .subscribe(NewSubscription::new(TENANT, rx.url("/sig")))
        .await;
    let first = s.secret.clone().expect("the secret is shown at creation");
    assert!(first.starts_with("whsec_"));
    let shown = h.get_subscription(&s.id).await.expect("get");
    assert_eq!(shown.secret, None, "the secret is shown only once");
    assert!(!format!("{shown:?}").contains(&first[8..]));

    h.publish_all([event("sig-1")]).await;
    rx.wait_delivered_at("/sig", &["sig-1".into()], WITHIN)
        .await;
    let r = &rx.requests_at("/sig")[0];
    let sig = r.header("webhook-signature").expect("signed");
    assert!(sig.starts_with("v1,") && !sig.contains(' '), "{sig}");
    assert!(
        reference_verifies(&first, r),
        "the reference library rejects our signature"
    );
    let other = hookline_secret_of_32_bytes(7);
    assert!(
        !reference_verifies(&other, r),
        "a wrong secret must not verify"
    );

    // Rotation: both the old and the new secret sign during the grace period.
    let rotated = h
        .rotate_secret(&s.id, None, Some(Duration::from_secs(600)))
        .await
        .expect("rotate");
    let second = rotated.secret.clone().expect("the new secret is shown");
    assert_ne!(second, first);
    assert!(rotated.previous_secret_expires_at.is_some());
    h.publish_all([event("sig-2")]).await;
    rx.wait_delivered_at("/sig", &["sig-1".into(), "sig-2".into()], WITHIN)
        .await;
    let r = rx.requests_for("sig-2").remove(0);
    assert_eq!(
        r.header("webhook-signature")
            .expect("signed")
            .split(' ')
            .count(),
        2
    );
    assert!(reference_verifies(&first, &r), "old secret during grace");
    assert!(reference_verifies(&second, &r), "new secret");

    // A rotation to a given secret with zero grace revokes every old secret at once.
    let third = hookline_secret_of_32_bytes(9);
    let rotated = h
        .rotate_secret(&s.id, Some(third.clone()), Some(Duration::ZERO))
        .await
        .expect("rotate");
    assert_eq!(rotated.secret.as_deref(), Some(third.as_str()));
    h.publish_all([event("sig-3")]).await;
    rx.wait_delivered_at(
        "/sig",
        &["sig-1".into(), "sig-2".into(), "sig-3".into()],
        WITHIN,
    )
    .await;
    let r = rx.requests_for("sig-3").remove(0);
    assert!(reference_verifies(&third, &r));
    assert_eq!(
        r.header("webhook-signature")
            .expect("signed")
            .split(' ')
            .count(),
        1
    );
    assert!(!reference_verifies(&second, &r), "revoked");
    assert!(!reference_verifies(&first, &r), "revoked");

    // Bad secrets are refused with the field named.
    let err = h
        .rotate_secret(&s.id, Some("whsec_tooshort".into()), None)
        .await
        .expect_err("short secret");
    assert!(
        matches!(err, Error::Invalid { ref field, .. } if field == "secret"),
        "{err}"
    );
}

fn hookline_secret_of_32_bytes(seed: u8) -> String {
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode([seed; 32])
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ed25519_signatures_verify_with_the_public_key() {
    let rx = Receiver::start().await;
    let h = TestEngine::start().await;
    let mut n = NewSubscription::new(TENANT, rx.url("/ed"));
    n.ed25519 = true;
    let s = h.subscribe(n).await;
    let pk = s.public_key.clone().expect("public key shown");
    let pk = pk.strip_prefix("whpk_").expect("whpk_ prefix");
    let pk: [u8; 32] = base64::engine::general_purpose::STANDARD
        .decode(pk)
        .expect("base64")
        .try_into()
        .expect("32 bytes");
    let key = VerifyingKey::from_bytes(&pk).expect("a valid key");

    h.publish_all([event("ed-1")]).await;
    rx.wait_delivered_at("/ed", &["ed-1".into()], WITHIN).await;
    let r = &rx.requests_at("/ed")[0];
    let header = r.header("webhook-signature").expect("signed");
    let v1a = header
        .split(' ')
        .find_map(|p| p.strip_prefix("v1a,"))
        .expect("a v1a signature");
    assert!(
        header.split(' ').any(|p| p.starts_with("v1,")),
        "v1 as well: {header}"
    );
    let sig: [u8; 64] = base64::engine::general_purpose::STANDARD
        .decode(v1a)
        .expect("base64")
        .try_into()
        .expect("64 bytes");
    let msg = format!(
        "{}.{}.{}",
        r.header("webhook-id").expect("id"),
        r.header("webhook-timestamp").expect("ts"),
        String::from_utf8_lossy(&r.body)
    );
    key.verify(msg.as_bytes(), &Signature::from_bytes(&sig))
        .expect("the v1a signature verifies with the published key");
}

/// A TCP listener that counts the connections it accepts.
async fn counting_listener(ip: &str) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        while let Ok((_sock, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
        }
    });
    (addr, count)
}

/// A host name other than `localhost` that resolves to a loopback address here (`/etc/hosts`).
fn loopback_alias() -> Option<String> {
    let hosts = std::fs::read_to_string("/etc/hosts").ok()?;
    hosts.lines().find_map(|l| {
        let mut parts = l.split_whitespace();
        let ip: std::net::IpAddr = parts.next()?.parse().ok()?;
        if !ip.is_loopback() {
            return None;
        }
        parts
            .find(|n| !n.starts_with('#') && !n.contains("localhost") && !n.contains('.'))
            .map(str::to_owned)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_destinations_never_see_a_connection() {
    let (addr, connections) = counting_listener("127.0.0.1").await;
    let port = addr.port();
    // Loopback is not allowed in this engine.
    let h = TestEngine::start_with(|b| b.allow_networks(Vec::new())).await;

    for host in [
        "localhost",
        "127.0.0.1",
        "127.1",
        "0.0.0.0",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "2130706433",
        "0x7f000001",
        "0177.0.0.1",
        "169.254.169.254",
        "10.0.0.1",
        "[fd00:ec2::254]",
    ] {
        let url = format!("http://{host}:{port}/hook");
        let err = h
            .create_subscription(NewSubscription::new(TENANT, url.clone()))
            .await
            .expect_err(&url);
        assert!(
            matches!(err, Error::Invalid { ref field, .. } if field == "url"),
            "{url}: {err}"
        );
    }

    // A name that resolves to loopback passes creation but every attempt is refused, once.
    let alias = loopback_alias()
        .expect("this test needs a host name other than localhost mapped to 127.x in /etc/hosts");
    let mut n = NewSubscription::new(TENANT, format!("http://{alias}:{port}/hook"));
    n.retry = Some(retry(5));
    let s = h.subscribe(n).await;
    h.publish_all([event("ssrf-1")]).await;
    let d = h.wait_status(&s.id, "ssrf-1", DeliveryStatus::Failed).await;
    assert_eq!(d.delivery.attempts, 1, "a blocked address is not retried");
    let detail = h.detail_of(&s.id, "ssrf-1").await;
    assert_eq!(
        detail.attempt_log[0].error_kind.as_deref(),
        Some("blocked_address"),
        "{detail:?}"
    );

    // A redirect to loopback from an allowed receiver is never followed.
    let target = format!("http://127.0.0.1:{port}/hook");
    let rx = Receiver::with(move |_| Reply::redirect(307, target.clone())).await;
    let allowed = TestEngine::start_with(|b| {
        b.allow_networks(vec![
            format!("{}/32", rx.addr().ip()).parse().expect("cidr"),
        ])
    })
    .await;
    let s = allowed
        .subscribe(NewSubscription::new(TENANT, rx.url("/r")))
        .await;
    allowed.publish_all([event("redir-1")]).await;
    let d = allowed
        .wait_status(&s.id, "redir-1", DeliveryStatus::Failed)
        .await;
    assert_eq!(d.delivery.last_status_code, Some(307));

    // Allowed when created, refused when the operator no longer allows it: checked per attempt.
    let mut h2 = TestEngine::start().await;
    let s = h2
        .subscribe(NewSubscription::new(
            TENANT,
            format!("http://127.0.0.1:{port}/hook"),
        ))
        .await;
    h2.pause_subscription(&s.id).await.expect("pause");
    h2.publish_all([event("later-1")]).await;
    h2.engine.shutdown().await;
    h2.engine = builder(&h2.db)
        .allow_networks(Vec::new())
        .build()
        .await
        .expect("restart without loopback");
    h2.resume_subscription(&s.id).await.expect("resume");
    let d = h2
        .wait_status(&s.id, "later-1", DeliveryStatus::Failed)
        .await;
    assert_eq!(d.delivery.attempts, 1);

    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "the loopback listener was connected to"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_can_ask_to_be_disabled() {
    let rx = Receiver::with(|r| {
        if r.webhook_id() == "dis-1" {
            Reply::ok().header("webhook-delivery", "disable")
        } else {
            Reply::ok()
        }
    })
    .await;
    let h = TestEngine::start().await;
    let s = h
        .subscribe(NewSubscription::new(TENANT, rx.url("/d")))
        .await;
    h.publish_all([event("dis-1"), event("dis-2")]).await;
    h.wait_status(&s.id, "dis-1", DeliveryStatus::Delivered)
        .await;
    let sub = h.wait_state(&s.id, SubscriptionState::Disabled).await;
    assert!(
        sub.state_reason
            .is_some_and(|r| r.contains("webhook-delivery"))
    );
    assert_eq!(
        h.delivery_of(&s.id, "dis-2").await.status,
        DeliveryStatus::Pending,
        "events accumulate while disabled"
    );
    h.resume_subscription(&s.id).await.expect("resume");
    h.wait_status(&s.id, "dis-2", DeliveryStatus::Delivered)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_receiver_auth_headers_are_sent_and_never_shown() {
    let rx = Receiver::start().await;
    let h = TestEngine::start().await;
    let cases = [
        (
            "/basic",
            serde_json::json!({"type": "basic", "username": "osp", "password": "pa55:word"}),
            (
                "authorization",
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode("osp:pa55:word")
                ),
            ),
            "pa55:word",
        ),
        (
            "/bearer",
            serde_json::json!({"type": "bearer", "token": "tok-static-123"}),
            ("authorization", "Bearer tok-static-123".to_string()),
            "tok-static-123",
        ),
        (
            "/key",
            serde_json::json!({"type": "accessKey", "key": "the-access-key"}),
            ("access-key", "the-access-key".to_string()),
            "the-access-key",
        ),
    ];
    for (path, auth, (header, expected), secret) in cases {
        let mut n = NewSubscription::new(TENANT, rx.url(path));
        n.auth = Some(serde_json::from_value(auth).expect("auth parses"));
        let s = h.subscribe(n).await;
        let shown =
            serde_json::to_string(&h.get_subscription(&s.id).await.expect("get")).expect("json");
        assert!(!shown.contains(secret), "{path}: secret shown: {shown}");
        let id = format!("auth{}", path.replace('/', "-"));
        h.publish_all([event(&id)]).await;
        rx.wait_delivered_at(path, std::slice::from_ref(&id), WITHIN)
            .await;
        let r = &rx.requests_at(path)[0];
        assert_eq!(r.header(header), Some(expected.as_str()), "{path}");
    }
    // accessKey and auth together are ambiguous.
    let mut n = NewSubscription::new(TENANT, rx.url("/both"));
    n.access_key = Some("k".into());
    n.auth = Some(hookline::ReceiverAuth::Bearer { token: "t".into() });
    let err = h.create_subscription(n).await.expect_err("both");
    assert!(
        matches!(err, Error::Invalid { ref field, .. } if field == "auth"),
        "{err}"
    );
}

/// A real OAuth2 token endpoint: checks client credentials and the token headers, counts
/// requests, issues `tok-1`, `tok-2`, …
async fn token_endpoint(accept: bool) -> (String, Arc<AtomicUsize>) {
    use axum::http::{HeaderMap, StatusCode};
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let app = axum::Router::new().route(
        "/token",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let c = c.clone();
            async move {
                let n = c.fetch_add(1, Ordering::SeqCst) + 1;
                let basic = format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode("hookline-client:s3cret")
                );
                let authed = headers.get("authorization").and_then(|v| v.to_str().ok())
                    == Some(basic.as_str());
                let attrs = headers.get("x-gateway").and_then(|v| v.to_str().ok()) == Some("OBRH");
                if !accept || !authed || !attrs || !body.contains("grant_type=client_credentials") {
                    return (StatusCode::UNAUTHORIZED, "{\"error\":\"invalid_client\"}".to_string());
                }
                (
                    StatusCode::OK,
                    format!("{{\"access_token\":\"tok-{n}\",\"token_type\":\"Bearer\",\"expires_in\":3600}}"),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("token endpoint") });
    (format!("http://{addr}/token"), count)
}

fn oauth2(token_url: &str) -> hookline::ReceiverAuth {
    serde_json::from_value(serde_json::json!({
        "type": "oauth2",
        "tokenUrl": token_url,
        "clientId": "hookline-client",
        "clientSecret": "s3cret",
        "tokenHeaders": {"x-gateway": "OBRH"},
        "headers": {"entityId": "E01", "appId": "LOANS", "SERVICE-CONSUMER": "OFSLL"}
    }))
    .expect("oauth2 config parses")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth2_tokens_are_cached_and_refreshed_once_on_401() {
    let (token_url, token_requests) = token_endpoint(true).await;
    // The receiver accepts tok-1 until it "revokes" it after two deliveries.
    let rx = Receiver::with(|r| {
        let auth = r.header("authorization").unwrap_or_default();
        let revoked = auth == "Bearer tok-1" && r.webhook_id() == "oa-3";
        if auth.starts_with("Bearer tok-") && !revoked {
            Reply::ok()
        } else {
            Reply::status(401)
        }
    })
    .await;
    let h = TestEngine::start().await;
    let mut n = NewSubscription::new(TENANT, rx.url("/oa"));
    n.auth = Some(oauth2(&token_url));
    let s = h.subscribe(n).await;
    let shown =
        serde_json::to_string(&h.get_subscription(&s.id).await.expect("get")).expect("json");
    assert!(!shown.contains("s3cret"), "client secret shown: {shown}");
    assert!(
        shown.contains("hookline-client"),
        "client id is shown: {shown}"
    );

    let ids = h
        .publish_all([event("oa-1"), event("oa-2"), event("oa-3"), event("oa-4")])
        .await;
    rx.wait_delivered_at("/oa", &ids, WITHIN).await;
    let reqs = rx.requests_at("/oa");
    assert_eq!(reqs[0].header("entityid"), Some("E01"));
    assert_eq!(reqs[0].header("service-consumer"), Some("OFSLL"));
    assert_eq!(reqs[0].header("authorization"), Some("Bearer tok-1"));
    assert_eq!(
        token_requests.load(Ordering::SeqCst),
        2,
        "one token for the first deliveries, one refresh after the 401"
    );
    let d = h.detail_of(&s.id, "oa-3").await;
    assert_eq!(
        d.delivery.attempts, 1,
        "the 401 refresh is part of one attempt"
    );
    assert_eq!(
        rx.requests_for("oa-4")[0].header("authorization"),
        Some("Bearer tok-2")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_client_credentials_fail_the_delivery_without_retry() {
    let (token_url, token_requests) = token_endpoint(false).await;
    let rx = Receiver::start().await;
    let h = TestEngine::start().await;
    let mut n = NewSubscription::new(TENANT, rx.url("/refused"));
    n.auth = Some(oauth2(&token_url));
    n.retry = Some(retry(5));
    let s = h.subscribe(n).await;
    h.publish_all([event("ref-1")]).await;
    let d = h.wait_status(&s.id, "ref-1", DeliveryStatus::Failed).await;
    assert_eq!(d.delivery.attempts, 1);
    assert_eq!(
        d.attempt_log[0].error_kind.as_deref(),
        Some("token_refused")
    );
    assert!(
        !d.attempt_log[0]
            .error
            .clone()
            .unwrap_or_default()
            .contains("s3cret")
    );
    assert_eq!(token_requests.load(Ordering::SeqCst), 1);
    assert!(rx.requests().is_empty(), "nothing is sent without a token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_test_sends_a_signed_event_outside_the_queue() {
    ensure_standardwebhooks();
    let rx = Receiver::with(|r| {
        if r.path == "/down" {
            Reply::status(503)
        } else {
            Reply::ok()
        }
    })
    .await;
    let h = TestEngine::start().await;
    let s = h
        .subscribe(NewSubscription::new(TENANT, rx.url("/up")))
        .await;
    let secret = s.secret.clone().expect("secret");
    let t = h.test_endpoint(&s.id).await.expect("test");
    assert!(t.verified, "{t:?}");
    assert_eq!(t.status_code, Some(200));
    let r = &rx.requests_at("/up")[0];
    assert!(reference_verifies(&secret, r), "the test event is signed");
    assert_eq!(r.json()["payLoad"]["test"], true);
    assert!(h.deliveries(&s.id).await.is_empty(), "nothing is journaled");

    let down = h
        .subscribe(NewSubscription::new(TENANT, rx.url("/down")))
        .await;
    let t = h.test_endpoint(&down.id).await.expect("test");
    assert!(!t.verified);
    assert_eq!(t.status_code, Some(503));
    assert!(t.error.is_some());

    let closed = h
        .subscribe(NewSubscription::new(
            TENANT,
            crate::support::closed_port_url("/x"),
        ))
        .await;
    let t = h.test_endpoint(&closed.id).await.expect("test");
    assert_eq!((t.verified, t.status_code), (false, None));
    assert!(t.error.is_some_and(|e| e.starts_with("connect")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_secrets_are_sealed_in_the_journal() {
    let mut h = TestEngine::start().await;
    let mut n = NewSubscription::new(TENANT, "https://receiver.example/a");
    n.access_key = Some("plain-access-key-7f3a9".into());
    let given = hookline_secret_of_32_bytes(42);
    n.secret = Some(given.clone());
    h.subscribe(n).await;
    let mut n = NewSubscription::new(TENANT, "https://receiver.example/b");
    n.auth = Some(hookline::ReceiverAuth::Bearer {
        token: "bearer-token-c41d2".into(),
    });
    let b = h.subscribe(n).await;
    h.restart().await;
    let shown = h
        .get_subscription(&b.id)
        .await
        .expect("readable after restart")
        .auth
        .map(|a| serde_json::to_value(a).expect("view serialises"));
    assert_eq!(shown, Some(serde_json::json!({"type": "bearer"})));
    h.engine.shutdown().await;

    let mut raw = std::fs::read(&h.db).expect("journal");
    if let Ok(wal) = std::fs::read(h.db.with_extension("db-wal")) {
        raw.extend(wal);
    }
    for secret in ["plain-access-key-7f3a9", "bearer-token-c41d2", &given[6..]] {
        assert!(
            !raw.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{secret} is stored in clear"
        );
    }
    let key_file = format!("{}.key", h.db.display());
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&key_file)
            .expect("key file")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the key file is private");

    // With another key the journal cannot be routed: the engine refuses to start.
    let err = builder(&h.db)
        .secret_key(format!(
            "base64:{}",
            base64::engine::general_purpose::STANDARD.encode([1u8; 32])
        ))
        .build()
        .await
        .expect_err("a wrong key must not start");
    assert!(err.to_string().contains("secrets"), "{err}");
    h.engine = builder(&h.db)
        .build()
        .await
        .expect("the right key opens it");
}

/// The measured rate of the 2xx receipts at `path`, after the first (which the burst allows at
/// once), with the order they arrived in.
fn measured_rate(rx: &Receiver, path: &str) -> (f64, Vec<String>) {
    let reqs = rx.requests_at(path);
    let first = reqs.first().expect("requests").at;
    let last = reqs.last().expect("requests").at;
    let rate = (reqs.len() - 1) as f64 / last.duration_since(first).as_secs_f64();
    (
        rate,
        reqs.iter().map(|r| r.webhook_id().to_owned()).collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_pace_the_queue_without_reordering() {
    let rx = Receiver::start().await;
    let h = TestEngine::start().await;
    let mut n = NewSubscription::new(TENANT, rx.url("/paced"));
    n.rate_limit = Some(hookline::RateLimit {
        per_second: 25.0,
        burst: 1,
    });
    let s = h.subscribe(n).await;
    h.pause_subscription(&s.id).await.expect("pause");
    let ids = h.publish_all(crate::support::events("rl", 51)).await;
    h.resume_subscription(&s.id).await.expect("resume");
    rx.wait_delivered_at("/paced", &ids, Duration::from_secs(20))
        .await;
    let (rate, order) = measured_rate(&rx, "/paced");
    assert_eq!(order, ids, "pacing never reorders");
    assert!(
        (0.9 * 25.0..=1.05 * 25.0).contains(&rate),
        "measured {rate:.2}/s for a 25/s limit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_limit_caps_its_subscriptions_together() {
    let rx = Receiver::start().await;
    let h = TestEngine::start_with(|b| {
        b.tenant_rate_limit(hookline::RateLimit {
            per_second: 30.0,
            burst: 1,
        })
    })
    .await;
    let a = h
        .subscribe(NewSubscription::new(TENANT, rx.url("/ta")))
        .await;
    let b = h
        .subscribe(NewSubscription::new(TENANT, rx.url("/tb")))
        .await;
    for s in [&a.id, &b.id] {
        h.pause_subscription(s).await.expect("pause");
    }
    let ids = h.publish_all(crate::support::events("tl", 30)).await;
    for s in [&a.id, &b.id] {
        h.resume_subscription(s).await.expect("resume");
    }
    rx.wait_delivered_at("/ta", &ids, Duration::from_secs(20))
        .await;
    rx.wait_delivered_at("/tb", &ids, Duration::from_secs(20))
        .await;
    let reqs = rx.requests();
    let span = reqs
        .last()
        .expect("reqs")
        .at
        .duration_since(reqs[0].at)
        .as_secs_f64();
    let rate = (reqs.len() - 1) as f64 / span;
    assert!(
        (0.9 * 30.0..=1.05 * 30.0).contains(&rate),
        "two subscriptions together went {rate:.2}/s under a 30/s tenant limit"
    );
}

/// A forward proxy stand-in: records the absolute-form request line it is sent and answers 200.
async fn recording_proxy() -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    let seen: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let s = seen.clone();
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let s = s.clone();
        async move {
            s.lock().expect("lock").push(uri.to_string());
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("proxy") });
    (format!("http://{addr}"), seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_go_through_the_configured_proxy_under_the_same_rules() {
    let (proxy, seen) = recording_proxy().await;
    // Loopback is not allowed as a target here; the proxy is configured by its address.
    let h = TestEngine::start_with(|b| {
        b.allow_networks(Vec::new())
            .proxy(proxy.parse().expect("a proxy URL"))
    })
    .await;
    // A public literal target: the proxy receives the absolute-form request for it.
    let s = h
        .subscribe(NewSubscription::new(
            TENANT,
            "http://93.184.216.34/hooks/osp",
        ))
        .await;
    h.publish_all([event("px-1")]).await;
    h.wait_status(&s.id, "px-1", DeliveryStatus::Delivered)
        .await;
    assert_eq!(
        seen.lock().expect("lock").clone(),
        vec!["http://93.184.216.34/hooks/osp".to_string()]
    );

    // A name resolving to loopback is refused before anything reaches the proxy.
    let alias = loopback_alias().expect("a loopback alias in /etc/hosts");
    let s = h
        .subscribe(NewSubscription::new(TENANT, format!("http://{alias}/x")))
        .await;
    h.publish_all([event("px-2")]).await;
    let d = h.wait_status(&s.id, "px-2", DeliveryStatus::Failed).await;
    assert_eq!(
        d.attempt_log[0].error_kind.as_deref(),
        Some("blocked_address")
    );
    // (px-2 also fans out to the first subscription, which the proxy rightly carries.)
    let seen = seen.lock().expect("lock").clone();
    assert!(
        seen.iter().all(|u| !u.contains(&alias)),
        "the refused target reached the proxy: {seen:?}"
    );
}

/// A raw HTTP server answering 200 with a chunked body it streams slowly forever (`slow`) or a
/// fast 10 MiB body; returns its base URL.
async fn hostile_receiver(slow: bool) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let _ = sock.read(&mut buf).await;
                let head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
                if sock.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = if slow {
                    "1\r\nx\r\n".to_string()
                } else {
                    format!("10000\r\n{}\r\n", "y".repeat(0x10000))
                };
                for _ in 0..if slow { usize::MAX } else { 160 } {
                    if sock.write_all(chunk.as_bytes()).await.is_err() {
                        return;
                    }
                    if slow {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                let _ = sock.write_all(b"0\r\n\r\n").await;
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_receivers_cannot_hold_a_delivery_past_its_timeout() {
    let h = TestEngine::start().await;
    let slow = hostile_receiver(true).await;
    let mut n = NewSubscription::new(TENANT, format!("{slow}/drip"));
    n.timeout_ms = Some(300);
    n.retry = Some(retry(2));
    let s = h.subscribe(n).await;
    h.publish_all([event("drip-1")]).await;
    let d = h.wait_status(&s.id, "drip-1", DeliveryStatus::Failed).await;
    assert_eq!(d.attempt_log.len(), 2, "a timeout is retried");
    for a in &d.attempt_log {
        assert_eq!(a.error_kind.as_deref(), Some("timeout"));
        assert_eq!(a.status_code, Some(500), "logged as the seeds do");
        assert!(a.duration_ms < 1_000, "held for {} ms", a.duration_ms);
    }

    let huge = hostile_receiver(false).await;
    let s = h
        .subscribe(NewSubscription::new(TENANT, format!("{huge}/flood")))
        .await;
    h.publish_all([event("flood-1")]).await;
    let d = h
        .wait_status(&s.id, "flood-1", DeliveryStatus::Delivered)
        .await;
    let snippet = d.attempt_log[0]
        .response_snippet
        .clone()
        .unwrap_or_default();
    assert!(
        snippet.len() <= 4096 && snippet.starts_with('y'),
        "{}",
        snippet.len()
    );
}
